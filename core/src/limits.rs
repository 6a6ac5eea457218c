//! Limits of a plan, and an app's overrides of them: shared by the control plane (which owns
//! them) and the data plane (which enforces them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Limits of a plan (or an app's overrides). A missing or `null` limit means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Distinct users active in a calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_active_users: Option<u64>,
    /// Messages sent in a calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_month: Option<u64>,
    /// WebSocket connections open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_connections: Option<u64>,
    /// Server API requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_requests_per_second: Option<u64>,
    /// Members of one group conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group_members: Option<u64>,
    /// Bytes of one message (body and metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
}

impl Limits {
    /// The names and values of the limits, in a fixed order.
    pub fn fields(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("monthly_active_users", self.monthly_active_users),
            ("messages_per_month", self.messages_per_month),
            ("concurrent_connections", self.concurrent_connections),
            ("api_requests_per_second", self.api_requests_per_second),
            ("max_group_members", self.max_group_members),
            ("max_message_bytes", self.max_message_bytes),
        ]
    }

    /// These limits with `overrides` applied on top.
    pub fn with_overrides(&self, o: &Limits) -> Limits {
        Limits {
            monthly_active_users: o.monthly_active_users.or(self.monthly_active_users),
            messages_per_month: o.messages_per_month.or(self.messages_per_month),
            concurrent_connections: o.concurrent_connections.or(self.concurrent_connections),
            api_requests_per_second: o.api_requests_per_second.or(self.api_requests_per_second),
            max_group_members: o.max_group_members.or(self.max_group_members),
            max_message_bytes: o.max_message_bytes.or(self.max_message_bytes),
        }
    }

    /// Reads limits stored as JSON (unknown or broken content reads as no limits).
    pub fn from_json(v: &serde_json::Value) -> Limits {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    /// The JSON form for storage.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("limits serialize")
    }
}

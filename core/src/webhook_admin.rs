//! Managing an app's webhook endpoints: the shapes both APIs use (admin REST in the control
//! plane, server REST in a node), and [`WebhookAdmin`], the control plane's endpoint functions
//! as a node sees them. The control plane owns the endpoints (and republishes the app's
//! configuration on every change); a node in the same process (standalone) calls it directly.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::id::{AppId, TenantId, WebhookEndpointId};

/// A new webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointIn {
    /// Where events are POSTed (`https://…`; `http://` is accepted too).
    #[schema(example = "https://example.com/starling/webhooks")]
    pub url: String,
    /// A note for humans, at most 256 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Event types to receive; omitted or empty: every type that is not opt-in.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Whether it receives events (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Most deliveries per second, 1..=10000; unlimited when omitted.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// Deliver one event at a time, in the order they happened (default `false`): a failing
    /// event then holds back the later ones until it succeeds or is dead-lettered.
    #[serde(default)]
    pub ordered: Option<bool>,
}

/// Changes to a webhook endpoint; omitted fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New event types (empty: every type that is not opt-in).
    pub event_types: Option<Vec<String>>,
    /// Enable (also lifts an automatic disabling) or disable.
    pub enabled: Option<bool>,
    /// New rate limit; `null` removes it.
    #[serde(
        default,
        deserialize_with = "crate::http::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u32>)]
    pub rate_limit_per_second: Option<Option<u32>>,
    /// Ordered delivery on or off.
    pub ordered: Option<bool>,
}

/// A webhook endpoint (without its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointOut {
    /// Endpoint id.
    pub id: WebhookEndpointId,
    /// Its app.
    pub app_id: AppId,
    /// Where events go.
    pub url: String,
    /// A note for humans.
    pub description: String,
    /// Subscribed event types (empty: every type that is not opt-in).
    pub event_types: Vec<String>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Most deliveries per second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// One event at a time, in order.
    pub ordered: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new endpoint, with its signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointCreatedOut {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpointOut,
    /// The signing secret (`whsec_…`); also readable later with `GET …/secret`.
    pub secret: String,
}

/// An endpoint's signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecretOut {
    /// The current secret (`whsec_…`).
    pub secret: String,
    /// Until when the previous secret also signs (after a rotation).
    pub previous_expires_at: Option<DateTime<Utc>>,
}

/// How to rotate an endpoint's secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhookSecretIn {
    /// How long the current secret keeps signing too, 0..=2592000 seconds (default 86400).
    /// During the overlap each request carries both signatures.
    pub overlap_seconds: Option<u64>,
}

/// The control plane's endpoint functions, every one within `tenant`'s `app`: an endpoint of
/// another app is not found.
#[async_trait]
pub trait WebhookAdmin: Send + Sync + 'static {
    /// Adds an endpoint; its secret is in the answer.
    async fn create_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: WebhookEndpointIn,
    ) -> Result<WebhookEndpointCreatedOut, ApiError>;
    /// One endpoint.
    async fn get_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookEndpointOut, ApiError>;
    /// Changes an endpoint.
    async fn update_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        patch: WebhookEndpointPatch,
    ) -> Result<WebhookEndpointOut, ApiError>;
    /// Removes an endpoint.
    async fn delete_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<(), ApiError>;
    /// An endpoint's signing secret.
    async fn get_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookSecretOut, ApiError>;
    /// A new secret; the current one keeps signing beside it for the overlap.
    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        input: RotateWebhookSecretIn,
    ) -> Result<WebhookSecretOut, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node forwards a patch to the control plane as JSON: "unchanged" and "removed" must
    /// stay apart on the way.
    #[test]
    fn a_patch_keeps_absent_and_null_apart_through_json() {
        for (patch, want) in [
            (WebhookEndpointPatch::default(), None),
            (
                WebhookEndpointPatch {
                    rate_limit_per_second: Some(None),
                    ..Default::default()
                },
                Some(None),
            ),
            (
                WebhookEndpointPatch {
                    rate_limit_per_second: Some(Some(7)),
                    ..Default::default()
                },
                Some(Some(7)),
            ),
        ] {
            let json = serde_json::to_string(&patch).unwrap();
            let back: WebhookEndpointPatch = serde_json::from_str(&json).unwrap();
            assert_eq!(back.rate_limit_per_second, want, "{json}");
        }
    }
}

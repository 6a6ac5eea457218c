//! The messaging domain: users, conversations and members, messages, reactions, read state.
//! Both the WebSocket gateway and the server REST API call these; every change that others
//! should see is fanned out as an [`Event`](crate::protocol::Event) after it is committed.

pub mod access;
pub(crate) mod commit;
pub mod conversation;
pub mod message;
pub mod user;

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use starling_core::error::{ApiError, ErrorCode};

use crate::bus::{Bus, Delivery};
use crate::directory::Directory;
use crate::protocol::Event;
use crate::registry::Registry;

/// Result of a messaging operation.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The messaging services of a node. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    /// The data-plane database.
    pub db: DatabaseConnection,
    /// Where users are connected.
    pub registry: Arc<dyn Registry>,
    /// The bus to the nodes.
    pub bus: Arc<dyn Bus>,
    /// Apps, keys, token secrets, limits.
    pub directory: Arc<Directory>,
    /// Webhook delivery and the pre-send hook.
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Outbox rows of published messages, cleared in batches off the send path.
    pub(crate) outbox_cleared: tokio::sync::mpsc::Sender<(String, String)>,
    /// The node's group committer: writes sends' messages, several per transaction.
    pub(crate) committer: commit::Committer,
    /// Usage counting and monthly quotas.
    pub metering: Arc<crate::metering::Metering>,
}

pub(crate) fn invalid(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::field(field, msg)
}

/// A user id chosen by the customer: 1..=128 of `A-Z a-z 0-9 _ - . @ : |`... but not `|`,
/// which separates the pair in a direct conversation's key.
pub(crate) fn check_user_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{id:?} is not a valid user id: 1..=128 of A-Z a-z 0-9 _ - . @ :"),
        ))
    }
}

/// A JSON object of at most `max` bytes.
pub(crate) fn check_object(field: &str, v: &serde_json::Value, max: usize) -> Result<()> {
    if !v.is_object() {
        return Err(invalid(field, "must be a JSON object"));
    }
    let n = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if n > max {
        return Err(invalid(field, format!("is {n} bytes; at most {max}")));
    }
    Ok(())
}

pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

pub(crate) fn not_member(conversation: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("not a member of conversation {conversation}"),
    )
}

impl Messaging {
    /// Pushes `event` to every connection of `users`, wherever they are connected.
    pub async fn deliver(&self, app: &str, users: &[String], event: &Event) {
        self.try_deliver(app, users, event).await;
    }

    /// Like [`Messaging::deliver`]; tells whether every node's delivery was published.
    pub async fn try_deliver(&self, app: &str, users: &[String], event: &Event) -> bool {
        if users.is_empty() {
            return true;
        }
        let frame: Arc<str> = match serde_json::to_string(event) {
            Ok(s) => Arc::from(s),
            Err(e) => {
                tracing::error!(error = %e, "serializing an event failed");
                return false;
            }
        };
        let nodes = match self.registry.locate(app, users).await {
            Ok(n) => n,
            Err(e) => {
                // Clients catch up by seq when they reconnect or notice a gap.
                tracing::warn!(error = %e, "registry lookup failed; event not pushed");
                return false;
            }
        };
        let trace = starling_core::telemetry::inject();
        let order = match event {
            Event::MessageNew { message } => Some(crate::bus::Order {
                conversation_id: message.conversation_id.clone(),
                seq: message.seq,
            }),
            _ => None,
        };
        let mut all = true;
        for (node, users) in nodes {
            let d = Delivery {
                app_id: app.to_owned(),
                users,
                frame: frame.clone(),
                trace: trace.clone(),
                order: order.clone(),
                end: None,
            };
            if let Err(e) = self.bus.publish(&node, d).await {
                tracing::warn!(error = %e, node, "publishing a delivery failed");
                all = false;
            }
        }
        all
    }
}

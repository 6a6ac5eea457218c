//! sea-orm entities of the data plane. Every table is keyed by `app_id` first; queries go
//! through [`crate::store::scoped`].

pub mod conversation;
pub mod member;
pub mod message;
pub mod outbox;
pub mod reaction;
pub mod token_revocation;
pub mod user;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_endpoint_state;
pub mod webhook_event;
pub mod webhook_notification;

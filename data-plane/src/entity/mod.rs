//! sea-orm entities of the data plane. Every table is keyed by `app_id` first; queries go
//! through [`crate::store::scoped`].

pub mod conversation;
pub mod member;
pub mod message;
pub mod outbox;
pub mod reaction;
pub mod user;

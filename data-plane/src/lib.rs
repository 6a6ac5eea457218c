//! Starling data plane: the messaging core of a cell.
//!
//! - [`protocol`]: the wire types (resources, events, WebSocket frames), shared by both doors.
//! - [`service`]: users, conversations, members, messages, reactions, read state, typing.
//! - [`gateway`]: the WebSocket gateway at `/v1/connect` (user JWT).
//! - [`api`]: the server REST API under `/v1` (app API keys), with per-key rate limits.
//! - [`directory`]: app configuration from the control plane; local key and token checks.
//! - [`bus`], [`registry`], [`hub`]: moving events to the nodes and connections of their users.
//! - [`entity`], [`migration`], [`store`]: storage (PostgreSQL or SQLite), scoped by app.
//! - [`webhook`]: signed, retried, replayable webhooks to customers' endpoints; the pre-send hook.
//! - [`node`]: wiring a node together.
#![forbid(unsafe_code)]

pub mod api;
pub mod asyncapi;
pub mod bus;
pub mod directory;
pub mod entity;
pub mod gateway;
pub mod hub;
pub mod metering;
pub mod migration;
pub mod node;
pub mod protocol;
pub mod pulsar_bus;
pub mod quota;
pub mod ratelimit;
pub mod redis_registry;
pub mod registry;
pub mod scope;
pub mod sequencer;
pub mod service;
pub mod store;
pub mod webhook;

//! Starling console API — not built yet.
//!
//! This crate will hold the GraphQL API (async-graphql) that tenant admins use: console accounts
//! and roles, their apps, API keys, quotas and usage, moderation views, an audit log — all over
//! the control plane's services in `starling-control-plane`.
//!
//! It is empty on purpose: nothing here pretends to work.
#![forbid(unsafe_code)]

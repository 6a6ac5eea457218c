//! Starling data plane — not built yet.
//!
//! This crate will hold a data-plane cell's gateway nodes: the WebSocket client protocol, the
//! server REST API authenticated by app API keys, the messaging domain (users, conversations,
//! messages with gap-free per-conversation `seq`), its storage and migrations, the bus between
//! nodes (Apache Pulsar | in-process) and the presence/routing/rate-limit registry
//! (Redis | in-process). See `ARCHITECTURE.md` and the issues that build it.
//!
//! It is empty on purpose: nothing here pretends to work. `starling data-plane` says so and exits.
#![forbid(unsafe_code)]

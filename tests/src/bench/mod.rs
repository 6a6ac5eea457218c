//! The parts of `starling-bench` (the binary in `src/bin/starling-bench.rs`):
//!
//! - [`server`]: the server under test — a `starling standalone` child process on a free loopback
//!   port, or one already running — and the admin and server API calls that set a benchmark up;
//! - [`stats`]: latency histograms, process RSS and CPU from `/proc`, formatting;
//! - [`idle`]: server memory per idle WebSocket connection;
//! - [`chat`]: 1:1 chat throughput and send→deliver latency;
//! - [`room`]: fan-out in one broadcast room;
//! - [`storm`]: a reconnect storm, with catch-up by `sync`;
//! - [`client`]: a client WebSocket from a chosen source address, histograms between processes;
//! - [`worker`]: the client processes of `--procs`.

pub mod chat;
pub mod client;
pub mod idle;
pub mod room;
pub mod server;
pub mod stats;
pub mod storm;
pub mod worker;

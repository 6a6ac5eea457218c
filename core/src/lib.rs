//! Starling core: what both planes share.
//!
//! - [`id`]: typed, prefixed ids (`tnt_…`, `app_…`, `key_…`) — never bare integers in APIs.
//! - [`error`]: transport-neutral [`error::ErrorCode`]s and the JSON error body `{code, message, request_id}`.
//! - [`secret`]: API-key and token generation, keyed hashing, constant-time checks.
//! - [`seal`]: secrets sealed at rest (XChaCha20-Poly1305 under a key id, for rotation).
//! - [`config`]: layered configuration (defaults → TOML file → `STARLING_*` env) with field-named errors.
//! - [`telemetry`]: tracing, optional OpenTelemetry OTLP export, Prometheus metrics.
//! - [`http`]: shared HTTP plumbing: request ids, JSON extraction with field-named errors, pagination,
//!   metrics middleware.
//! - [`cache`]: a small key-value cache trait with Redis and in-process implementations (one
//!   conformance suite for both), used for idempotency keys.
//! - [`signing`]: the control plane's Ed25519 signatures (config feed, internal calls), verified
//!   by cells with public keys only.
//! - [`webhook`]: the webhook event catalog, secrets and Standard Webhooks signatures.
#![forbid(unsafe_code)]

pub mod appconfig;
pub mod cache;
pub mod cellkey;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod id;
pub mod internal_auth;
pub mod limits;
pub mod pulsar;
pub mod seal;
pub mod secret;
pub mod signing;
pub mod telemetry;
pub mod usage;
pub mod webhook;
pub mod webhook_admin;

pub use error::{ApiError, ErrorCode};

//! Starling control plane: the truth about tenants, apps, API keys, plans and quotas, and the
//! data-plane clusters apps live on.
//!
//! - [`entity`] and [`migration`]: the schema (sea-orm; the same migrations on PostgreSQL and SQLite).
//! - [`store`]: connecting, migrating, and [`store::scoped`], the one way to query tenant-owned rows.
//! - [`service`]: the domain rules, as methods of [`service::ControlPlane`].
//! - [`api`]: the operator's admin REST API under `/admin/v1`, with its OpenAPI document.
//! - [`config`] and [`server`]: configuration and the HTTP server (health, readiness, metrics).
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod entity;
pub mod migration;
pub mod server;
pub mod service;
pub mod store;

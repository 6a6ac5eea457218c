//! sea-orm entities of the control plane. Ids are stored as their prefixed text; enums as text;
//! limits as JSON. Queries on tenant-owned tables go through [`crate::store::scoped`].

pub mod api_key;
pub mod app;
pub mod app_token_secret;
pub mod billing;
pub mod cluster;
pub mod cluster_credential;
pub mod plan;
pub mod pre_send_hook;
pub mod tenant;
pub mod usage;
pub mod webhook_endpoint;

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Whether a tenant or an app may be used.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In service.
    #[sea_orm(string_value = "active")]
    Active,
    /// Refused by the data plane with `app_suspended`; data kept.
    #[sea_orm(string_value = "suspended")]
    Suspended,
}

/// What an app is for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// Building and testing.
    #[sea_orm(string_value = "development")]
    Development,
    /// A pre-production copy.
    #[sea_orm(string_value = "staging")]
    Staging,
    /// Real users.
    #[sea_orm(string_value = "production")]
    Production,
}

/// Whether a cluster takes new apps.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// Serving, and takes new apps.
    #[sea_orm(string_value = "active")]
    Active,
    /// Serving its apps, takes no new ones (being emptied).
    #[sea_orm(string_value = "draining")]
    Draining,
    /// Not serving.
    #[sea_orm(string_value = "offline")]
    Offline,
}

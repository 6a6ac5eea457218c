//! A data-plane cluster (cell) that apps are placed on.
use sea_orm::entity::prelude::*;

use super::ClusterStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub name: String,
    pub region: String,
    pub status: ClusterStatus,
    /// Public endpoint of the cell's gateways, if known.
    pub endpoint: Option<String>,
    /// Where the control plane calls the cell's internal API (`https://…` unless development).
    pub internal_endpoint: Option<String>,
    /// A development cluster: its internal endpoint may be plain `http://`.
    pub development: bool,
    /// The cell's X25519 public key (base64url): app-config updates are sealed to it.
    pub config_public_key: Option<String>,
    /// How many apps the cluster may carry.
    pub capacity_apps: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

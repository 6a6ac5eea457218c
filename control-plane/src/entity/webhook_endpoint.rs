//! A webhook endpoint of an app.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoint")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub url: String,
    pub description: String,
    /// JSON array of event type names; empty: every type that is not opt-in.
    pub event_types: Json,
    pub secret: String,
    /// The secret before the last rotation, valid until `previous_expires_at`.
    pub previous_secret: Option<String>,
    pub previous_expires_at: Option<DateTimeUtc>,
    pub enabled: bool,
    pub enabled_at: DateTimeUtc,
    pub rate_limit_per_second: Option<i32>,
    pub ordered: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

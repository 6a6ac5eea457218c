//! One console mutation: who, what, when, from where.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "console_audit")]
pub struct Model {
    /// The tenant acted on, or `account` for an account's own events (login, logout, password).
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// An account id, or `operator`.
    pub actor_id: String,
    pub actor_email: String,
    /// The mutation, e.g. `createApiKey`.
    pub action: String,
    /// The id of the resource acted on.
    pub target: Option<String>,
    /// Arguments worth keeping (never a secret).
    pub detail: Json,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

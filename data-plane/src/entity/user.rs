//! An end user of an app (id chosen by the customer).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dp_user")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub avatar_url: Option<String>,
    pub metadata: Json,
    /// `active` or `deactivated`.
    pub status: String,
    pub banned: bool,
    /// A ban ends then; `None` with `banned` means for good.
    pub banned_until: Option<DateTimeUtc>,
    pub ban_reason: Option<String>,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! A revocation of a user's tokens: all issued until `not_before` (`token_id` is empty), or
//! one token by its id.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dp_token_revocation")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// Empty for the user's "not before" row.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_id: String,
    /// Tokens issued at or before this second are void (the "not before" row).
    pub not_before: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    /// After this, the revoked token id names no valid token and the row may be removed.
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! A conversation: direct (two users), group, or broadcast room.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `direct`, `group` or `room`.
    pub kind: String,
    pub name: Option<String>,
    pub metadata: Json,
    /// For direct conversations: the two user ids, sorted, so there is one per pair.
    pub direct_key: Option<String>,
    /// Who may post: `members` or `admins`.
    pub post_policy: String,
    /// The seq of the newest message (0 when none).
    pub last_seq: i64,
    pub last_message_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! A message, at its place (`seq`) in its conversation.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub app_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub id: String,
    /// The sending user; empty for system messages.
    pub sender_id: String,
    pub client_msg_id: Option<String>,
    /// `text`, `custom` or `system`.
    pub kind: String,
    pub text: Option<String>,
    pub custom: Option<Json>,
    pub attachments: Json,
    pub mentions: Json,
    pub parent_id: Option<String>,
    pub reply_count: i64,
    pub created_at: DateTimeUtc,
    pub edited_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! Users, conversations, members, messages, reactions.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn s(name: &'static str, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).not_null().to_owned()
}
fn s_null(name: &'static str, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).null().to_owned()
}
fn ts(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
fn ts_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("dp_user")
                .col(s("app_id", 64))
                .col(s("id", 128))
                .col(s("name", 256))
                .col(s_null("avatar_url", 1024))
                .col(ColumnDef::new("metadata").json().not_null())
                .col(s("status", 16))
                .col(ts_null("banned_until"))
                .col(ColumnDef::new("banned").boolean().not_null().default(false))
                .col(s_null("ban_reason", 512))
                .col(ts_null("last_seen_at"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("conversation")
                .col(s("app_id", 64))
                .col(s("id", 64))
                .col(s("kind", 16))
                .col(s_null("name", 256))
                .col(ColumnDef::new("metadata").json().not_null())
                .col(s_null("direct_key", 300))
                .col(s("post_policy", 16))
                .col(
                    ColumnDef::new("last_seq")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(ts_null("last_message_at"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_conversation_direct")
                .table("conversation")
                .col("app_id")
                .col("direct_key")
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("member")
                .col(s("app_id", 64))
                .col(s("conversation_id", 64))
                .col(s("user_id", 128))
                .col(s("role", 16))
                .col(ts_null("muted_until"))
                .col(ColumnDef::new("banned").boolean().not_null().default(false))
                .col(
                    ColumnDef::new("last_read_seq")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(ts("joined_at"))
                .primary_key(
                    Index::create()
                        .col("app_id")
                        .col("conversation_id")
                        .col("user_id"),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_member_user")
                .table("member")
                .col("app_id")
                .col("user_id")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("message")
                .col(s("app_id", 64))
                .col(s("conversation_id", 64))
                .col(ColumnDef::new("seq").big_integer().not_null())
                .col(s("id", 64))
                .col(s("sender_id", 128))
                .col(s_null("client_msg_id", 64))
                .col(s("kind", 16))
                .col(ColumnDef::new("text").text().null())
                .col(ColumnDef::new("custom").json().null())
                .col(ColumnDef::new("attachments").json().not_null())
                .col(ColumnDef::new("mentions").json().not_null())
                .col(s_null("parent_id", 64))
                .col(
                    ColumnDef::new("reply_count")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(ts("created_at"))
                .col(ts_null("edited_at"))
                .col(ts_null("deleted_at"))
                .primary_key(
                    Index::create()
                        .col("app_id")
                        .col("conversation_id")
                        .col("seq"),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_message_id")
                .table("message")
                .col("app_id")
                .col("id")
                .unique()
                .to_owned(),
        )
        .await?;
        // A retried send finds its original here.
        m.create_index(
            Index::create()
                .name("ux_message_client_id")
                .table("message")
                .col("app_id")
                .col("conversation_id")
                .col("sender_id")
                .col("client_msg_id")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_message_parent")
                .table("message")
                .col("app_id")
                .col("parent_id")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("reaction")
                .col(s("app_id", 64))
                .col(s("message_id", 64))
                .col(s("user_id", 128))
                .col(s("emoji", 64))
                .col(ts("created_at"))
                .primary_key(
                    Index::create()
                        .col("app_id")
                        .col("message_id")
                        .col("user_id")
                        .col("emoji"),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["reaction", "message", "member", "conversation", "dp_user"] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

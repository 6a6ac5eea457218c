//! The outbox: messages committed but not yet published on the bus.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("outbox")
                .col(ColumnDef::new("app_id").string_len(64).not_null())
                .col(ColumnDef::new("message_id").string_len(64).not_null())
                .col(ColumnDef::new("conversation_id").string_len(64).not_null())
                .col(ColumnDef::new("seq").big_integer().not_null())
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(Index::create().col("app_id").col("message_id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_outbox_created")
                .table("outbox")
                .col("created_at")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("outbox").to_owned()).await
    }
}

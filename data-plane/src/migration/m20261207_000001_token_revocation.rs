//! Revoked user tokens: per user, a "not before" (every token issued until then is void) and
//! single tokens by id (`jti`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("dp_token_revocation")
                .col(ColumnDef::new("app_id").string_len(64).not_null())
                .col(ColumnDef::new("user_id").string_len(128).not_null())
                // '' for the user's "not before" row, else the revoked token's id.
                .col(ColumnDef::new("token_id").string_len(128).not_null())
                .col(
                    ColumnDef::new("not_before")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                // When a token-id row may go: no token it names is valid past it.
                .col(
                    ColumnDef::new("expires_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .primary_key(Index::create().col("app_id").col("user_id").col("token_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("dp_token_revocation").to_owned())
            .await
    }
}

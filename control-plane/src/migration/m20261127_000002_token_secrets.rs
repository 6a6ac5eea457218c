//! Secrets that sign the user tokens (JWTs) of an app.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("app_token_secret")
                .col(ColumnDef::new("tenant_id").string_len(64).not_null())
                .col(ColumnDef::new("app_id").string_len(64).not_null())
                .col(ColumnDef::new("kid").string_len(64).not_null())
                .col(ColumnDef::new("secret").string_len(128).not_null())
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("expires_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .primary_key(Index::create().col("tenant_id").col("app_id").col("kid"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_app_token_secret_app")
                        .from("app_token_secret", ("tenant_id", "app_id"))
                        .to("app", ("tenant_id", "id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("app_token_secret").to_owned())
            .await
    }
}

//! Webhook endpoints and pre-send hooks of apps: the source of truth, published to cells on the
//! app-config feed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn at(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("webhook_endpoint")
                .col(ColumnDef::new("tenant_id").string_len(64).not_null())
                .col(ColumnDef::new("app_id").string_len(64).not_null())
                .col(ColumnDef::new("id").string_len(64).not_null())
                .col(ColumnDef::new("url").string_len(2048).not_null())
                .col(ColumnDef::new("description").string_len(256).not_null())
                .col(ColumnDef::new("event_types").json().not_null())
                .col(ColumnDef::new("secret").string_len(128).not_null())
                .col(ColumnDef::new("previous_secret").string_len(128).null())
                .col(
                    ColumnDef::new("previous_expires_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new("enabled").boolean().not_null())
                .col(at("enabled_at"))
                .col(ColumnDef::new("rate_limit_per_second").integer().null())
                .col(ColumnDef::new("ordered").boolean().not_null())
                .col(at("created_at"))
                .col(at("updated_at"))
                .primary_key(Index::create().col("tenant_id").col("app_id").col("id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_webhook_endpoint_app")
                        .from("webhook_endpoint", ("tenant_id", "app_id"))
                        .to("app", ("tenant_id", "id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("pre_send_hook")
                .col(ColumnDef::new("tenant_id").string_len(64).not_null())
                .col(ColumnDef::new("app_id").string_len(64).not_null())
                .col(ColumnDef::new("url").string_len(2048).not_null())
                .col(ColumnDef::new("secret").string_len(128).not_null())
                .col(ColumnDef::new("timeout_ms").integer().not_null())
                .col(ColumnDef::new("fail_open").boolean().not_null())
                .col(at("updated_at"))
                .primary_key(Index::create().col("tenant_id").col("app_id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_pre_send_hook_app")
                        .from("pre_send_hook", ("tenant_id", "app_id"))
                        .to("app", ("tenant_id", "id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("pre_send_hook").to_owned())
            .await?;
        m.drop_table(Table::drop().table("webhook_endpoint").to_owned())
            .await
    }
}

//! Usage metering: received report ids (idempotency), hourly figures per node, monthly active
//! users, quota threshold events; plans name their soft limits.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string_len(64).not_null().to_owned()
}

fn ts(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn count(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("usage_report")
                .col(id("id").primary_key())
                .col(id("tenant_id"))
                .col(id("app_id"))
                .col(ts("received_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_usage_report_app")
                .table("usage_report")
                .col("tenant_id")
                .col("app_id")
                .col("received_at")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("usage_hourly")
                .col(id("tenant_id"))
                .col(id("app_id"))
                .col(ts("hour"))
                .col(id("node_id"))
                .col(count("messages"))
                .col(count("api_calls"))
                .col(count("peak_connections"))
                .col(count("stored_bytes"))
                .primary_key(
                    Index::create()
                        .col("tenant_id")
                        .col("app_id")
                        .col("hour")
                        .col("node_id"),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("usage_active_user")
                .col(id("tenant_id"))
                .col(id("app_id"))
                .col(ColumnDef::new("period").string_len(7).not_null())
                .col(ColumnDef::new("user_id").string_len(128).not_null())
                .col(ts("first_seen_at"))
                .primary_key(
                    Index::create()
                        .col("tenant_id")
                        .col("app_id")
                        .col("period")
                        .col("user_id"),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("quota_event")
                .col(id("id").primary_key())
                .col(id("tenant_id"))
                .col(id("app_id"))
                .col(ColumnDef::new("period").string_len(7).not_null())
                .col(ColumnDef::new("limit_name").string_len(64).not_null())
                .col(ColumnDef::new("threshold").integer().not_null())
                .col(count("used"))
                .col(count("limit_value"))
                .col(ColumnDef::new("soft").boolean().not_null().default(false))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_quota_event_once")
                .table("quota_event")
                .col("tenant_id")
                .col("app_id")
                .col("period")
                .col("limit_name")
                .col("threshold")
                .unique()
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("plan")
                .add_column(
                    ColumnDef::new("soft_limits")
                        .json()
                        .not_null()
                        .default("[]"),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("plan")
                .drop_column("soft_limits")
                .to_owned(),
        )
        .await?;
        for t in [
            "quota_event",
            "usage_active_user",
            "usage_hourly",
            "usage_report",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

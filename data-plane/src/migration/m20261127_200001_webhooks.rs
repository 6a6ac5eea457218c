//! Webhook delivery state of a cell: events (recorded in the transaction of the change they
//! describe, when an endpoint wants them), one delivery per event and endpoint with its retry
//! schedule, every attempt, endpoint health, and notifications for the app's owners.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn s(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string_len(64).not_null().to_owned()
}

fn at(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn at_null(name: &'static str) -> ColumnDef {
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
                .table("webhook_event")
                .col(s("app_id"))
                .col(s("id"))
                .col(s("event_type"))
                .col(ColumnDef::new("payload").text().not_null())
                .col(at("created_at"))
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_event_time")
                .table("webhook_event")
                .col("app_id")
                .col("created_at")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_delivery")
                .col(s("app_id"))
                .col(s("id"))
                .col(s("event_id"))
                .col(s("endpoint_id"))
                .col(ColumnDef::new("status").string_len(16).not_null())
                .col(ColumnDef::new("attempts").integer().not_null())
                .col(at("next_attempt_at"))
                .col(at_null("lease_until"))
                .col(ColumnDef::new("last_status_code").integer().null())
                .col(ColumnDef::new("last_error").string_len(512).null())
                .col(at("created_at"))
                .col(at("updated_at"))
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await?;
        // The dispatcher's question, across the cell's apps: what is due now?
        m.create_index(
            Index::create()
                .name("ix_webhook_delivery_due")
                .table("webhook_delivery")
                .col("status")
                .col("next_attempt_at")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_delivery_endpoint")
                .table("webhook_delivery")
                .col("app_id")
                .col("endpoint_id")
                .col("status")
                .col("id")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_delivery_event")
                .table("webhook_delivery")
                .col("app_id")
                .col("event_id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_attempt")
                .col(s("app_id"))
                .col(s("id"))
                .col(s("delivery_id"))
                .col(s("event_id"))
                .col(s("endpoint_id"))
                .col(at("attempted_at"))
                .col(ColumnDef::new("ok").boolean().not_null())
                .col(ColumnDef::new("status_code").integer().null())
                .col(ColumnDef::new("latency_ms").big_integer().not_null())
                .col(ColumnDef::new("response_excerpt").text().null())
                .col(ColumnDef::new("error").string_len(512).null())
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_attempt_event")
                .table("webhook_attempt")
                .col("app_id")
                .col("event_id")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_attempt_endpoint")
                .table("webhook_attempt")
                .col("app_id")
                .col("endpoint_id")
                .col("id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_endpoint_state")
                .col(s("app_id"))
                .col(s("endpoint_id"))
                .col(at_null("failing_since"))
                .col(at_null("disabled_at"))
                .primary_key(Index::create().col("app_id").col("endpoint_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_notification")
                .col(s("app_id"))
                .col(s("id"))
                .col(s("tenant_id"))
                .col(s("endpoint_id"))
                .col(ColumnDef::new("kind").string_len(64).not_null())
                .col(ColumnDef::new("subject").string_len(256).not_null())
                .col(ColumnDef::new("body").text().not_null())
                .col(at("created_at"))
                .primary_key(Index::create().col("app_id").col("id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "webhook_notification",
            "webhook_endpoint_state",
            "webhook_attempt",
            "webhook_delivery",
            "webhook_event",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

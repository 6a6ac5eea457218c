//! Stripe billing: each tenant's customer and subscription, plan ↔ price links, and the ids of
//! Stripe events already handled (replays are recognised).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string_len(64).not_null().to_owned()
}

fn text_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string_len(255).null().to_owned()
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
                .table("tenant_billing")
                .col(id("tenant_id").primary_key())
                .col(
                    ColumnDef::new("stripe_customer_id")
                        .string_len(255)
                        .not_null()
                        .unique_key(),
                )
                .col(text_null("stripe_subscription_id"))
                .col(text_null("subscription_status"))
                .col(text_null("subscription_item_id"))
                .col(text_null("metered_item_id"))
                .col(ts_null("subscription_event_at"))
                .col(ts_null("invoice_event_at"))
                .col(ts_null("payment_failed_at"))
                .col(ts_null("grace_until"))
                .col(ts_null("usage_reported_until"))
                .col(
                    ColumnDef::new("suspended_by_billing")
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("plan_price")
                .col(id("plan_id").primary_key())
                .col(ColumnDef::new("stripe_price_id").string_len(255).not_null())
                .col(text_null("stripe_metered_price_id"))
                .col(ts("updated_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_plan_price_plan")
                        .from("plan_price", "plan_id")
                        .to("plan", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("stripe_event")
                .col(
                    ColumnDef::new("id")
                        .string_len(255)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("kind").string_len(128).not_null())
                .col(ts("received_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["stripe_event", "plan_price", "tenant_billing"] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

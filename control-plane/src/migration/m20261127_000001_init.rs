//! Tenants, apps, API keys, plans and clusters.

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
                .table("plan")
                .col(id("id").primary_key())
                .col(
                    ColumnDef::new("code")
                        .string_len(64)
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new("name").string_len(128).not_null())
                .col(
                    ColumnDef::new("is_default")
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(ColumnDef::new("limits").json().not_null())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("cluster")
                .col(id("id").primary_key())
                .col(
                    ColumnDef::new("name")
                        .string_len(64)
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new("region").string_len(64).not_null())
                .col(ColumnDef::new("status").string_len(16).not_null())
                .col(ColumnDef::new("endpoint").string_len(512).null())
                .col(ColumnDef::new("capacity_apps").big_integer().not_null())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("tenant")
                .col(id("id").primary_key())
                .col(ColumnDef::new("name").string_len(128).not_null())
                .col(ColumnDef::new("status").string_len(16).not_null())
                .col(id("plan_id"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_tenant_plan")
                        .from("tenant", "plan_id")
                        .to("plan", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_tenant_plan")
                .table("tenant")
                .col("plan_id")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("app")
                .col(id("tenant_id"))
                .col(id("id"))
                .col(ColumnDef::new("name").string_len(128).not_null())
                .col(ColumnDef::new("environment").string_len(16).not_null())
                .col(ColumnDef::new("status").string_len(16).not_null())
                .col(id("cluster_id"))
                .col(ColumnDef::new("quota_overrides").json().not_null())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .primary_key(Index::create().col("tenant_id").col("id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_app_tenant")
                        .from("app", "tenant_id")
                        .to("tenant", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_app_cluster")
                        .from("app", "cluster_id")
                        .to("cluster", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_app_tenant_name")
                .table("app")
                .col("tenant_id")
                .col("name")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_app_id")
                .table("app")
                .col("id")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_app_cluster")
                .table("app")
                .col("cluster_id")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("api_key")
                .col(id("tenant_id"))
                .col(id("app_id"))
                .col(id("id"))
                .col(ColumnDef::new("name").string_len(128).not_null())
                .col(ColumnDef::new("secret_hash").string_len(128).not_null())
                .col(ColumnDef::new("scopes").json().not_null())
                .col(ts_null("expires_at"))
                .col(ts_null("last_used_at"))
                .col(ts_null("revoked_at"))
                .col(ColumnDef::new("rotated_from").string_len(64).null())
                .col(ColumnDef::new("replaced_by").string_len(64).null())
                .col(ts("created_at"))
                .primary_key(Index::create().col("tenant_id").col("app_id").col("id"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_api_key_app")
                        .from("api_key", ("tenant_id", "app_id"))
                        .to("app", ("tenant_id", "id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Keys are looked up by their public id alone when a customer presents one.
        m.create_index(
            Index::create()
                .name("ux_api_key_id")
                .table("api_key")
                .col("id")
                .unique()
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["api_key", "app", "tenant", "cluster", "plan"] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

//! Cell identities: a cluster's internal endpoint (where the control plane calls its
//! `/internal/v1`), whether it is a development cluster (plain `http://` allowed there), and the
//! per-cell credentials a cell presents to the control plane's internal routes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        m.alter_table(
            Table::alter()
                .table("cluster")
                .add_column(ColumnDef::new("internal_endpoint").string_len(512).null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("cluster")
                .add_column(
                    ColumnDef::new("development")
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("cluster_credential")
                .col(ColumnDef::new("id").string_len(64).not_null().primary_key())
                .col(ColumnDef::new("cluster_id").string_len(64).not_null())
                .col(ColumnDef::new("secret_hash").string_len(128).not_null())
                .col(
                    ColumnDef::new("created_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("last_used_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new("revoked_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_cluster_credential_cluster")
                        .from("cluster_credential", "cluster_id")
                        .to("cluster", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cluster_credential_cluster")
                .table("cluster_credential")
                .col("cluster_id")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("cluster_credential").to_owned())
            .await?;
        for c in ["development", "internal_endpoint"] {
            m.alter_table(Table::alter().table("cluster").drop_column(c).to_owned())
                .await?;
        }
        Ok(())
    }
}

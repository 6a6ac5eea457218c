//! A cluster's config key: the X25519 public key the control plane seals each app-config update
//! for that cell to (see `starling_core::cellkey`), so the secrets inside cross the bus readable
//! by that cell's nodes only. Null: updates go in clear (signed), as before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("cluster")
                .add_column(ColumnDef::new("config_public_key").string_len(64).null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("cluster")
                .drop_column("config_public_key")
                .to_owned(),
        )
        .await
    }
}

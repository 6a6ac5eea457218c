//! Schema migrations of the control plane. The same migrations run on PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;

mod m20261127_000001_init;
mod m20261127_000002_token_secrets;
mod m20261127_200001_webhooks;
mod m20261127_300001_usage;
mod m20261127_300002_billing;
mod m20261207_000001_sealed_secrets;
mod m20261207_100001_cell_identity;
mod m20261207_200001_cell_config_key;

/// All control-plane migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_init::Migration),
            Box::new(m20261127_000002_token_secrets::Migration),
            Box::new(m20261127_200001_webhooks::Migration),
            Box::new(m20261127_300001_usage::Migration),
            Box::new(m20261127_300002_billing::Migration),
            Box::new(m20261207_000001_sealed_secrets::Migration),
            Box::new(m20261207_100001_cell_identity::Migration),
            Box::new(m20261207_200001_cell_config_key::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "cp_migrations".into_iden()
    }
}

//! Schema migrations of the data plane (the same on PostgreSQL and SQLite). Every table starts
//! its primary key with `app_id`: all rows belong to one app.

use sea_orm_migration::prelude::*;

mod m20261127_000001_messaging;
mod m20261127_000002_outbox;
mod m20261127_200001_webhooks;
mod m20261207_000001_token_revocation;

/// All data-plane migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_messaging::Migration),
            Box::new(m20261127_000002_outbox::Migration),
            Box::new(m20261127_200001_webhooks::Migration),
            Box::new(m20261207_000001_token_revocation::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "dp_migrations".into_iden()
    }
}

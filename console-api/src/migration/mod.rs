//! Schema migrations of the console's own tables (accounts, memberships, invitations, sessions,
//! audit log), in the control-plane database. They have their own migration table so that they
//! never interleave with the control plane's list. Same migrations on PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;

mod m20261127_100001_console;

/// All console migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261127_100001_console::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "console_migrations".into_iden()
    }
}

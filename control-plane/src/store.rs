//! Database connection, migrations, and the one scoping helper for tenant-owned rows.
//!
//! Every query on a tenant-owned table starts from [`scoped`] (or [`app_scoped`]), which filters
//! by the owner's ids: a row of another tenant is simply not there, and the API answers 404.

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Select};
use sea_orm_migration::MigratorTrait;
use starling_core::id::{AppId, TenantId};

use crate::entity::usage::{active_user, hourly, quota_event};
use crate::entity::{api_key, app, pre_send_hook, webhook_endpoint};
use crate::migration::Migrator;

/// Connects to PostgreSQL (`postgres://…`) or SQLite (`sqlite://path?mode=rwc`).
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    starling_core::db::connect(url, max_connections).await
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    starling_core::db::migrate_locked::<Migrator>(db, MIGRATION_LOCK).await
}

/// The advisory lock key of the control plane's migrations ("StarDP"/"StarCP" in ASCII).
const MIGRATION_LOCK: i64 = 0x5374_6172_4350;

/// Names of the migrations applied so far and still pending.
pub async fn migration_status(
    db: &DatabaseConnection,
) -> Result<(Vec<String>, Vec<String>), DbErr> {
    let applied = Migrator::get_applied_migrations(db)
        .await?
        .into_iter()
        .map(|m| m.name().to_owned())
        .collect();
    let pending = Migrator::get_pending_migrations(db)
        .await?
        .into_iter()
        .map(|m| m.name().to_owned())
        .collect();
    Ok((applied, pending))
}

/// A table whose rows belong to a tenant.
pub trait TenantOwned: EntityTrait {
    /// The column holding the tenant id.
    fn tenant_column() -> Self::Column;
}

/// A table whose rows belong to an app (and so to its tenant).
pub trait AppOwned: TenantOwned {
    /// The column holding the app id.
    fn app_column() -> Self::Column;
}

impl TenantOwned for app::Entity {
    fn tenant_column() -> Self::Column {
        app::Column::TenantId
    }
}

impl TenantOwned for api_key::Entity {
    fn tenant_column() -> Self::Column {
        api_key::Column::TenantId
    }
}

impl AppOwned for api_key::Entity {
    fn app_column() -> Self::Column {
        api_key::Column::AppId
    }
}

impl TenantOwned for webhook_endpoint::Entity {
    fn tenant_column() -> Self::Column {
        webhook_endpoint::Column::TenantId
    }
}

impl AppOwned for webhook_endpoint::Entity {
    fn app_column() -> Self::Column {
        webhook_endpoint::Column::AppId
    }
}

impl TenantOwned for pre_send_hook::Entity {
    fn tenant_column() -> Self::Column {
        pre_send_hook::Column::TenantId
    }
}

impl AppOwned for pre_send_hook::Entity {
    fn app_column() -> Self::Column {
        pre_send_hook::Column::AppId
    }
}
macro_rules! app_owned {
    ($($m:ident),*) => {$(
        impl TenantOwned for $m::Entity {
            fn tenant_column() -> Self::Column {
                $m::Column::TenantId
            }
        }
        impl AppOwned for $m::Entity {
            fn app_column() -> Self::Column {
                $m::Column::AppId
            }
        }
    )*};
}

app_owned!(hourly, active_user, quota_event);

/// The rows of `E` that belong to `tenant`: the start of every query on a tenant-owned table.
pub fn scoped<E: TenantOwned>(tenant: &TenantId) -> Select<E> {
    E::find().filter(E::tenant_column().eq(tenant.as_str()))
}

/// The rows of `E` that belong to `app` of `tenant`.
pub fn app_scoped<E: AppOwned>(tenant: &TenantId, app: &AppId) -> Select<E> {
    scoped::<E>(tenant).filter(E::app_column().eq(app.as_str()))
}

//! Migrations and the one scoping helper: every data-plane table belongs to an app, and every
//! query starts from [`scoped`], so another app's rows are never reachable.

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Select};

use crate::entity::{
    conversation, member, message, outbox, reaction, token_revocation, user, webhook_attempt,
    webhook_delivery, webhook_endpoint_state, webhook_event, webhook_notification,
};
use crate::migration::Migrator;

/// Applies every pending data-plane migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    starling_core::db::migrate_locked::<Migrator>(db, MIGRATION_LOCK).await
}

/// The advisory lock key of the data plane's migrations ("StarDP"/"StarCP" in ASCII).
const MIGRATION_LOCK: i64 = 0x5374_6172_4450;

/// A table whose rows belong to an app.
pub trait AppOwned: EntityTrait {
    /// The column holding the app id.
    fn app_column() -> Self::Column;
}

macro_rules! app_owned {
    ($($m:ident),*) => {$(
        impl AppOwned for $m::Entity {
            fn app_column() -> Self::Column {
                $m::Column::AppId
            }
        }
    )*};
}
app_owned!(
    user,
    conversation,
    member,
    message,
    outbox,
    reaction,
    token_revocation,
    webhook_event,
    webhook_delivery,
    webhook_attempt,
    webhook_endpoint_state,
    webhook_notification
);

/// The rows of `E` that belong to `app`: the start of every data-plane query.
pub fn scoped<E: AppOwned>(app: &str) -> Select<E> {
    E::find().filter(E::app_column().eq(app))
}

//! The secrets the control-plane database holds, sealed at rest (see `starling_core::seal`).
//!
//! Every column below stores `sealed:v1:<kid>:…`, never the secret itself. A value is bound to
//! its table, column and row (the associated data [`aad`]), so a sealed value copied into
//! another row does not open. Services seal on write and open only where the clear value is
//! needed (the API answer that shows it, the configuration published to cells).
//!
//! [`ControlPlane::seal_clear_secrets`] runs at every start and seals rows still in clear (from
//! before sealing existed); [`ControlPlane::reseal_secrets`] moves every value to the current
//! key (`starling secrets reseal`, after a rotation). Both change one row per statement, each
//! conditional on the row still holding what was read, so they are safe to run at any time and
//! on several control planes at once: whoever loses a race simply leaves the row to the winner.

use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use starling_core::seal::{Sealer, is_sealed};

use super::{ControlPlane, Error, Result};

/// A table holding sealed secrets: its primary key columns (the row's identity, part of the
/// associated data) and its sealed columns (text; nullable ones may be NULL).
#[derive(Debug, Clone, Copy)]
pub struct SealedTable {
    /// Table name.
    pub table: &'static str,
    /// Primary key columns, in order.
    pub keys: &'static [&'static str],
    /// Columns holding sealed secrets.
    pub columns: &'static [&'static str],
}

/// Every table with secret columns. A new secret column must be listed here, or the start-up
/// sealing and `secrets reseal` would miss it (the database-dump test catches that).
pub const SEALED_TABLES: &[SealedTable] = &[
    SealedTable {
        table: "app_token_secret",
        keys: &["tenant_id", "app_id", "kid"],
        columns: &["secret"],
    },
    SealedTable {
        table: "webhook_endpoint",
        keys: &["tenant_id", "app_id", "id"],
        columns: &["secret", "previous_secret"],
    },
    SealedTable {
        table: "pre_send_hook",
        keys: &["tenant_id", "app_id"],
        columns: &["secret"],
    },
];

/// The associated data of a sealed value: where it is stored, e.g.
/// `webhook_endpoint.secret:tnt_…/app_…/whe_…`.
pub fn aad(table: &str, column: &str, keys: &[&str]) -> String {
    format!("{table}.{column}:{}", keys.join("/"))
}

pub(crate) fn token_secret_aad(tenant: &str, app: &str, kid: &str) -> String {
    aad("app_token_secret", "secret", &[tenant, app, kid])
}

/// `column` is `secret` or `previous_secret`.
pub(crate) fn endpoint_aad(column: &str, tenant: &str, app: &str, id: &str) -> String {
    aad("webhook_endpoint", column, &[tenant, app, id])
}

pub(crate) fn hook_aad(tenant: &str, app: &str) -> String {
    aad("pre_send_hook", "secret", &[tenant, app])
}

/// Opens a stored value. A value that does not open is the operator's problem (a missing key,
/// an altered row), never the caller's: an internal error, logged with the reason.
pub(crate) fn open(sealer: &Sealer, aad: &str, value: &str) -> Result<String> {
    sealer
        .open(aad, value)
        .map_err(|e| Error::Sealed(format!("opening the secret at {aad}: {e}")))
}

/// How many values of one table were (re)sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealCount {
    /// The table.
    pub table: &'static str,
    /// Values sealed or resealed by this run.
    pub changed: u64,
    /// Sealed values looked at.
    pub seen: u64,
}

/// What to do with the values of a table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Seal values still in clear; leave sealed ones alone (start-up).
    ClearOnly,
    /// Also reseal every value not under the current key (`secrets reseal`).
    Reseal,
}

impl ControlPlane {
    /// Seals every secret still stored in clear. Run at every start (`server::open`).
    pub async fn seal_clear_secrets(&self) -> Result<Vec<SealCount>> {
        let mut out = Vec::new();
        for t in SEALED_TABLES {
            out.push(process(&self.db, &self.sealer, t, Mode::ClearOnly, &mut |_| {}).await?);
        }
        Ok(out)
    }

    /// Reseals every secret under the current sealing key (and seals any still in clear),
    /// calling `progress` after each table. A value that does not open (sealed under a key no
    /// longer configured) stops the run with an error naming the row and the key id; values
    /// resealed before it stay resealed, so running it again continues.
    pub async fn reseal_secrets(
        &self,
        progress: &mut (dyn FnMut(&SealCount) + Send),
    ) -> Result<Vec<SealCount>> {
        let mut out = Vec::new();
        for t in SEALED_TABLES {
            let c = process(&self.db, &self.sealer, t, Mode::Reseal, &mut *progress).await?;
            out.push(c);
        }
        Ok(out)
    }
}

async fn process(
    db: &DatabaseConnection,
    sealer: &Sealer,
    t: &SealedTable,
    mode: Mode,
    progress: &mut (dyn FnMut(&SealCount) + Send),
) -> Result<SealCount> {
    let mut q = Query::select();
    q.from(Alias::new(t.table));
    for c in t.keys.iter().chain(t.columns) {
        q.column(Alias::new(*c));
    }
    if mode == Mode::ClearOnly {
        // Only rows with a clear value (NULL is neither and is skipped by NOT LIKE).
        let mut any = Condition::any();
        for c in t.columns {
            any = any.add(Expr::col(Alias::new(*c)).not_like("sealed:%"));
        }
        q.cond_where(any);
    }
    let rows = db.query_all(&q).await?;
    let mut count = SealCount {
        table: t.table,
        changed: 0,
        seen: 0,
    };
    for row in rows {
        let keys: Vec<String> = t
            .keys
            .iter()
            .map(|k| row.try_get::<String>("", k))
            .collect::<std::result::Result<_, _>>()?;
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut update = Query::update();
        update.table(Alias::new(t.table));
        for (k, v) in t.keys.iter().zip(&keys) {
            update.and_where(Expr::col(Alias::new(*k)).eq(v.as_str()));
        }
        let mut changes = 0;
        for c in t.columns {
            let Some(value) = row.try_get::<Option<String>>("", c)? else {
                continue;
            };
            count.seen += 1;
            let aad = aad(t.table, c, &key_refs);
            let clear = if !is_sealed(&value) {
                value.clone()
            } else if mode == Mode::Reseal && !sealer.is_current(&value) {
                sealer
                    .open(&aad, &value)
                    .map_err(|e| Error::Sealed(format!("{aad}: {e}")))?
            } else {
                continue;
            };
            update.value(Alias::new(*c), sealer.seal(&aad, &clear));
            // Only if the row still holds what was read: a concurrent writer or sealer wins.
            update.and_where(Expr::col(Alias::new(*c)).eq(value.as_str()));
            changes += 1;
        }
        if changes > 0 && db.execute(&update).await?.rows_affected() == 1 {
            count.changed += changes;
        }
    }
    if count.changed > 0 {
        tracing::info!(
            table = t.table,
            values = count.changed,
            "secrets sealed under key {}",
            sealer.current_kid()
        );
    }
    progress(&count);
    Ok(count)
}

//! Connecting to the relational store: PostgreSQL in a deployment, SQLite embedded.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// How long a SQLite statement waits for another connection's write lock before it fails with
/// "database is locked". Writers queue for the lock (every write transaction takes it up front,
/// [`begin_write`]); a group commit of a full batch holds it for tens of milliseconds, so a wait
/// this long means the store is stuck, not busy. Longer than the pool's acquire timeout (5 s),
/// so a request that got a connection is not the one that gives up first.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Begins a transaction that may write. On SQLite it begins `IMMEDIATE`: it takes the write lock
/// at `BEGIN`, waiting up to [`SQLITE_BUSY_TIMEOUT`] behind other writers. A `DEFERRED`
/// transaction (sqlx's default) that reads first takes a read snapshot; when it then writes after
/// another connection committed, SQLite cannot upgrade it and fails at once with SQLITE_BUSY, busy
/// timeout or not: that was "database is locked" answered as 500 under ordinary concurrency
/// (7–11 of 40 conversation deletions beside other writes; 31–36 of 40 token-secret rotations
/// beside sends). On PostgreSQL the option is ignored: a plain `BEGIN`.
///
/// Every transaction in the workspace begins here (`clippy.toml` forbids a plain `begin()`).
pub async fn begin_write<C: TransactionTrait<Transaction = DatabaseTransaction>>(
    db: &C,
) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// How long PostgreSQL lets one statement run, and wait for a lock, before it gives up with an
/// error (and rolls the transaction back). Without them a lock held by another session, or a
/// runaway query, holds a pooled connection, and the node's one message committer, for as long
/// as it lasts. SQLite has neither (it has one writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `statement_timeout`, in milliseconds (0: none).
    pub statement_ms: u64,
    /// `lock_timeout`, in milliseconds (0: none).
    pub lock_ms: u64,
}

impl Default for Timeouts {
    /// 30 s per statement (a send's statements take milliseconds; a migration or a retention
    /// sweep longer, but not this), 5 s waiting for a lock (row locks between nodes are held
    /// for one transaction's milliseconds; longer means something is stuck).
    fn default() -> Self {
        Self {
            statement_ms: 30_000,
            lock_ms: 5_000,
        }
    }
}

/// Connects to PostgreSQL (`postgres://…`) or SQLite (`sqlite://path?mode=rwc`) with the
/// default [`Timeouts`].
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, max_connections, Timeouts::default()).await
}

/// [`connect`] with the given PostgreSQL timeouts.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    timeouts: Timeouts,
) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    let sqlite = url.starts_with("sqlite:");
    opts.max_connections(if sqlite {
        max_connections.clamp(1, 8)
    } else {
        max_connections
    })
    .min_connections(if sqlite { 1 } else { 0 })
    .connect_timeout(Duration::from_secs(10))
    .acquire_timeout(Duration::from_secs(5))
    // sqlx pings a pooled connection on every checkout by default: one more round trip per
    // statement or transaction. Only a connection idle long enough to have been dropped (by
    // the server, a proxy, a firewall) is pinged now.
    .test_before_acquire_if_idle_for(Duration::from_secs(30))
    .sqlx_logging(false)
    .map_sqlx_sqlite_opts(|o| o.busy_timeout(SQLITE_BUSY_TIMEOUT));
    if !sqlite {
        // Every statement is prepared (sqlx caches them per connection), and after five runs
        // PostgreSQL may switch a statement to a generic plan for good. On tables that were
        // small when that happened (a new database, a new cell) it chose indexes that scan
        // every message or conversation of the app per send (264 M index tuples read for 23 k
        // sends in one benchmark, docs/BENCHMARKS.md), until an ANALYZE replanned. Planning
        // each execution costs tens of microseconds and cannot go that wrong.
        // The timeouts are session settings sent at connect, so they hold for every statement
        // on every pooled connection without a round trip of their own.
        opts.map_sqlx_postgres_opts(move |o| {
            o.options([
                ("plan_cache_mode", "force_custom_plan".to_owned()),
                ("statement_timeout", timeouts.statement_ms.to_string()),
                ("lock_timeout", timeouts.lock_ms.to_string()),
            ])
        });
    }
    let db = Database::connect(opts).await?;
    if sqlite {
        // WAL lets readers run beside the writer; the pragma sticks to the database file.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    Ok(db)
}

/// Applies every pending migration of `M`. On PostgreSQL this runs in one transaction under an
/// advisory lock (`lock_key`, one per migrator): nodes of a cell that start together on a fresh
/// database would otherwise create the same tables at once, and all but one would fail to
/// start (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`). The
/// others wait, then find nothing pending.
pub async fn migrate_locked<M: sea_orm_migration::MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return M::up(db, None).await;
    }
    let txn = begin_write(db).await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({lock_key})"))
        .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}

/// One page of `select` in the order of `key` (a unique text column: a time-sortable id, or a
/// user id), after the position the page's cursor names. Every list of both APIs goes through it.
pub async fn paginate<E, T>(
    db: &impl sea_orm::ConnectionTrait,
    select: sea_orm::Select<E>,
    key: E::Column,
    params: &crate::http::PageParams,
    map: impl Fn(E::Model) -> T,
    key_of: impl Fn(&T) -> &str,
) -> Result<crate::http::Page<T>, crate::error::ApiError>
where
    E: sea_orm::EntityTrait,
{
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let limit = params.limit()?;
    let mut q = select;
    if let Some(after) = params.after()? {
        q = q.filter(key.gt(after));
    }
    let rows = q
        .order_by_asc(key)
        .limit(limit + 1)
        .all(db)
        .await?
        .into_iter()
        .map(map)
        .collect();
    Ok(crate::http::Page::from_rows(rows, limit, key_of))
}

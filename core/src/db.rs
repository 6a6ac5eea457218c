//! Connecting to the relational store: PostgreSQL in a deployment, SQLite embedded.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

/// Connects to PostgreSQL (`postgres://…`) or SQLite (`sqlite://path?mode=rwc`).
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
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
    .sqlx_logging(false);
    let db = Database::connect(opts).await?;
    if sqlite {
        // WAL lets readers run beside the writer; the pragma sticks to the database file.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    Ok(db)
}

//! The control plane's domain services: the rules about tenants, apps, keys, plans and clusters.
//! The admin REST API (and later the console API) are thin layers over these.

pub mod api_key;
pub mod app;
pub mod billing;
pub mod cell_credential;
pub mod cluster;
pub mod feed;
pub mod plan;
pub mod sealed;
pub mod tenant;
pub mod token_secret;
pub mod usage;
pub mod webhook;

use sea_orm::{DatabaseConnection, DbErr, EntityTrait, Select, SqlErr};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::http::{Page, PageParams};
use starling_core::seal::Sealer;
use starling_core::secret::KeyHasher;

/// A domain error; each maps to one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such resource (or not the caller's).
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of resource.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A field has a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Any other client error (already an API error).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The database failed.
    #[error("database: {0}")]
    Db(DbErr),
    /// A stored secret does not open: its sealing key is not configured, or the row was
    /// altered. The operator's problem, never the caller's.
    #[error("{0}")]
    Sealed(String),
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Error::Conflict("a resource with these unique values already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                Error::Conflict("the resource is still referenced by others".into())
            }
            _ => Error::Db(e),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { kind, id } => ApiError::not_found(kind, id),
            Error::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            Error::Invalid { field, message } => ApiError::field(field, message),
            Error::Api(e) => e,
            // Connection trouble is a retryable 503; anything else an opaque 500.
            Error::Db(e) => e.into(),
            Error::Sealed(m) => ApiError::internal(m),
        }
    }
}

/// Result of a domain operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn not_found(kind: &'static str, id: impl std::fmt::Display) -> Error {
    Error::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Checks a display name: 1..=128 characters after trimming, no control characters.
pub(crate) fn check_name(field: &str, name: &str) -> Result<String> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 128 {
        return Err(invalid(field, "must be 1..=128 characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// Checks a code (a machine name): 1..=64 of `a-z 0-9 - _`, starting with a letter.
pub(crate) fn check_code(field: &str, code: &str) -> Result<String> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(code.to_owned())
    } else {
        Err(invalid(
            field,
            "must be 1..=64 characters of a-z, 0-9, '-' and '_', starting with a letter",
        ))
    }
}

/// One page of `select`, ordered by the time-sortable id column (see `starling_core::db::paginate`).
pub(crate) async fn paginate<E, T>(
    db: &DatabaseConnection,
    select: Select<E>,
    id_column: E::Column,
    params: &PageParams,
    map: impl Fn(E::Model) -> T,
    id_of: impl Fn(&T) -> &str,
) -> Result<Page<T>>
where
    E: EntityTrait,
{
    Ok(starling_core::db::paginate(db, select, id_column, params, map, id_of).await?)
}

/// The control plane: its database and secrets. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    /// The control-plane database.
    pub db: DatabaseConnection,
    /// Hashes API-key secrets.
    pub hasher: KeyHasher,
    /// Seals the secrets the database holds (see [`sealed`]).
    pub sealer: Sealer,
    /// Where app configuration is published for data-plane cells (each cell's feed), and the
    /// key every update is signed with; `None`: nowhere.
    pub feed: Option<feed::Publisher>,
    /// The time usage periods and billing grace periods are taken from.
    pub clock: std::sync::Arc<dyn starling_core::clock::Clock>,
    /// Called for every quota threshold event (webhooks plug in here).
    pub quota_hook: Option<usage::QuotaHook>,
    /// Stripe billing, when configured.
    pub billing: Option<std::sync::Arc<billing::Billing>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("feed", &self.feed.is_some())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A control plane over a migrated database.
    pub fn new(db: DatabaseConnection, hasher: KeyHasher, sealer: Sealer) -> Self {
        Self {
            db,
            hasher,
            sealer,
            feed: None,
            clock: starling_core::clock::system(),
            quota_hook: None,
            billing: None,
        }
    }

    /// Takes time from `clock` (tests move it to the end of a period).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn starling_core::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// The current time, to the microsecond (what PostgreSQL keeps), so a value reads back equal.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

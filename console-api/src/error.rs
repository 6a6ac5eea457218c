//! Errors of the console API. Every GraphQL error carries `extensions.code` (the same codes as the
//! REST APIs, plus a few of the console's own); only client errors say what went wrong, anything
//! else is logged and answered with an opaque `internal`.

use std::borrow::Cow;

use async_graphql::ErrorExtensions;

use starling_core::error::{ApiError, ErrorCode};

/// Codes only the console uses.
pub mod code {
    /// Too many failed logins: the account is locked for a while.
    pub const ACCOUNT_LOCKED: &str = "account_locked";
    /// The query's calculated cost is above `console.max_cost`.
    pub const QUERY_TOO_COSTLY: &str = "query_too_costly";
    /// The query nests deeper than `console.max_depth`.
    pub const QUERY_TOO_DEEP: &str = "query_too_deep";
    /// The query is not valid GraphQL for this schema.
    pub const GRAPHQL_INVALID: &str = "graphql_invalid";
}

/// A console error on its way to the client. It deliberately does not implement `Display`, so
/// that `?` turns it into a GraphQL error through [`From`] below (keeping its code), not through
/// async-graphql's catch-all conversion of displayable errors.
#[derive(Debug, Clone)]
pub struct Fail {
    /// Machine-readable code.
    pub code: Cow<'static, str>,
    /// Human-readable message, naming the field at fault where there is one.
    pub message: String,
    /// The argument at fault.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

impl Fail {
    /// An error with a code from [`ErrorCode`].
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::custom(code.as_str(), message)
    }

    /// An error with one of the console's own codes.
    pub fn custom(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Cow::Borrowed(code),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// `validation_failed` about one argument.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::field(field, message).into()
    }

    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `not_found` for a kind and id.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        ApiError::not_found(kind, id).into()
    }

    /// `internal`: logs the cause, shows nothing of it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::internal(cause).into()
    }

    /// The GraphQL error.
    pub fn into_graphql(self) -> async_graphql::Error {
        let Fail {
            code,
            message,
            field,
            retry_after,
        } = self;
        async_graphql::Error::new(message).extend_with(|_, e| {
            e.set("code", code.as_ref());
            if let Some(f) = &field {
                e.set("field", f.as_str());
            }
            if let Some(s) = retry_after {
                e.set("retryAfter", s);
            }
        })
    }

    /// The error as a server error (for extensions that stop a request before it runs).
    pub fn into_server_error(self) -> async_graphql::ServerError {
        let mut e = self
            .into_graphql()
            .into_server_error(async_graphql::Pos::default());
        // It is about the whole request, not a place in the query.
        e.locations.clear();
        e
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Self {
            code: Cow::Borrowed(e.code.as_str()),
            message: e.message,
            field: e.field,
            retry_after: e.retry_after,
        }
    }
}

impl From<starling_control_plane::service::Error> for Fail {
    fn from(e: starling_control_plane::service::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<sea_orm::DbErr> for Fail {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::from(e).into()
    }
}

impl From<Fail> for async_graphql::Error {
    fn from(f: Fail) -> Self {
        f.into_graphql()
    }
}

/// Result of console operations.
pub type Result<T, E = Fail> = std::result::Result<T, E>;

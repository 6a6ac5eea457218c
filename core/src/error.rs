//! Transport-neutral error codes and the client-facing error.
//!
//! Only an [`ApiError`] reaches a client, as `{code, message, request_id, field?}`. Anything else is
//! logged and becomes an opaque `internal` error: SQL and stack details never leak.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A machine-readable error code. The same code means the same thing over REST, GraphQL and
/// WebSocket; each transport maps it with its own function ([`ErrorCode::http_status`] here).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or not JSON at all.
    InvalidJson,
    /// A header, query parameter or path segment is malformed.
    InvalidRequest,
    /// The JSON is well-formed but a field is missing, unknown or has a bad value.
    ValidationFailed,
    /// No credentials, or wrong ones.
    Unauthorized,
    /// The credentials are valid but do not allow this.
    Forbidden,
    /// The resource does not exist (or belongs to someone else).
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The request conflicts with the current state (duplicate, still in use, ...).
    Conflict,
    /// A request with the same `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse,
    /// The `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// Too many requests; retry after the time in `Retry-After`.
    RateLimited,
    /// The app is suspended.
    AppSuspended,
    /// The user is banned, from the whole app or from the conversation the request names.
    Banned,
    /// The user is deactivated.
    UserDeactivated,
    /// A quota of the plan is used up.
    QuotaExceeded,
    /// The app's pre-send hook refused the message; the message says why.
    MessageRejected,
    /// Something failed on our side; the request id helps find it in the logs.
    Internal,
    /// A dependency is unavailable; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status this code travels with.
    pub fn http_status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidRequest => StatusCode::BAD_REQUEST,
            ValidationFailed | IdempotencyKeyReused | MessageRejected => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | AppSuspended | Banned | UserDeactivated => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict | IdempotencyKeyInUse => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RateLimited | QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code of its wire form (`"not_found"`), as another Starling service answered it.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidRequest => "invalid_request",
            ValidationFailed => "validation_failed",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            IdempotencyKeyInUse => "idempotency_key_in_use",
            IdempotencyKeyReused => "idempotency_key_reused",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            AppSuspended => "app_suspended",
            Banned => "banned",
            UserDeactivated => "user_deactivated",
            QuotaExceeded => "quota_exceeded",
            MessageRejected => "message_rejected",
            Internal => "internal",
            Unavailable => "unavailable",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `validation_failed`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Human-readable explanation, naming the field where one is at fault.
    #[schema(example = "name: must be 1..=128 characters")]
    pub message: String,
    /// The id of this request (also in the `x-request-id` header); quote it when asking for help.
    pub request_id: String,
    /// The JSON path of the field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error meant for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, lowercase, no trailing period.
    pub message: String,
    /// The field at fault, if any.
    pub field: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A `validation_failed` error about one field; the message is prefixed with the field.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            code: ErrorCode::ValidationFailed,
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after: None,
        }
    }

    /// `not_found` for a resource kind and id.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{kind} {id} not found"))
    }

    /// `conflict` with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// `internal`, logging the cause but not showing it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; quote the request id when reporting it",
        )
    }

    /// The body this error is sent as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            request_id: crate::http::current_request_id().unwrap_or_default(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let mut res = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// Whether a database error means "cannot reach the database" (retryable) rather than a bug.
fn is_unavailable(e: &sea_orm::DbErr) -> bool {
    use sea_orm::DbErr;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        // PostgreSQL gave up waiting (`lock_timeout`, `statement_timeout`): the transaction
        // was rolled back, and trying again later may well succeed.
        _ if matches!(sql_state(e).as_deref(), Some("55P03" | "57014")) => true,
        DbErr::Exec(_) | DbErr::Query(_) => {
            let s = e.to_string().to_ascii_lowercase();
            [
                "io error",
                "connection",
                "pool timed out",
                "broken pipe",
                "closed",
                "reset by peer",
                "eof",
            ]
            .iter()
            .any(|w| s.contains(w))
        }
        _ => false,
    }
}

/// The SQLSTATE (PostgreSQL) or extended result code (SQLite) of an error the database
/// answered with; `None` for an error that is not the server's answer (I/O, pool, protocol).
pub fn sql_state(e: &sea_orm::DbErr) -> Option<String> {
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s))
        | DbErr::Conn(RuntimeErr::SqlxError(s)) => s
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

impl From<sea_orm::DbErr> for ApiError {
    /// Unique-constraint violations are conflicts; anything else is an opaque internal error.
    fn from(e: sea_orm::DbErr) -> Self {
        match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                ApiError::conflict("a resource with these unique values already exists")
            }
            _ if is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                let mut err = ApiError::new(
                    ErrorCode::Unavailable,
                    "the database is unavailable; nothing was stored, retry shortly",
                );
                err.retry_after = Some(1);
                err
            }
            _ => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_back_from_their_wire_form() {
        use ErrorCode::*;
        for c in [
            NotFound,
            ValidationFailed,
            Unavailable,
            IdempotencyKeyInUse,
            Internal,
        ] {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn codes_and_statuses_are_consistent() {
        let json = serde_json::to_value(ErrorCode::IdempotencyKeyReused).unwrap();
        assert_eq!(json, ErrorCode::IdempotencyKeyReused.as_str());
        assert_eq!(ErrorCode::NotFound.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ErrorCode::ValidationFailed.http_status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = ApiError::field("name", "must not be empty");
        assert_eq!(e.message, "name: must not be empty");
        assert_eq!(e.field.as_deref(), Some("name"));
    }
}

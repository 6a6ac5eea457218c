//! `Idempotency-Key` for POST requests, as Stripe does it: the first successful result is kept
//! for 24 hours and replayed for a retry with the same key and body; the same key with another
//! body is refused; a retry while the first request still runs is told to wait.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header::CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use starling_core::error::{ApiError, ErrorCode};

use super::AdminState;

const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// How long a result is kept.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long a request may hold its key before another may take it (a crashed request).
const LOCK: Duration = Duration::from_secs(60);
const MAX_BODY: usize = 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    Pending {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: u16,
        content_type: Option<String>,
        body: String,
    },
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn bad_key() -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::InvalidRequest,
        "Idempotency-Key: must be 1..=255 printable ASCII characters",
    );
    e.field = Some("Idempotency-Key".into());
    e
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "idempotency store failed");
    ApiError::new(
        ErrorCode::Unavailable,
        "idempotency store unavailable; retry later",
    )
}

/// Middleware: see the module docs.
pub(super) async fn idempotency(
    State(s): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(key) = req.headers().get(HEADER) else {
        return Ok(next.run(req).await);
    };
    let key = key.to_str().map_err(|_| bad_key())?.to_owned();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad_key());
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large"))?;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let fingerprint = hex_sha256(&[parts.method.as_str().as_bytes(), path.as_bytes(), &bytes]);
    let cache_key = format!("starling:idem:admin:{}", hex_sha256(&[key.as_bytes()]));

    let pending = serde_json::to_vec(&Record::Pending {
        fingerprint: fingerprint.clone(),
    })
    .expect("serialize");
    if !s
        .cache
        .set_nx(&cache_key, &pending, LOCK)
        .await
        .map_err(unavailable)?
    {
        let existing = s.cache.get(&cache_key).await.map_err(unavailable)?;
        let record = existing.and_then(|b| serde_json::from_slice::<Record>(&b).ok());
        return match record {
            Some(Record::Done {
                fingerprint: fp, ..
            })
            | Some(Record::Pending { fingerprint: fp })
                if fp != fingerprint =>
            {
                Err(ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "Idempotency-Key was already used with a different request; use a new key",
                ))
            }
            Some(Record::Done {
                status,
                content_type,
                body,
                ..
            }) => {
                let mut res =
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
                if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    res.headers_mut().insert(CONTENT_TYPE, ct);
                }
                res.headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
                Ok(res)
            }
            _ => {
                let mut e = ApiError::new(
                    ErrorCode::IdempotencyKeyInUse,
                    "a request with this Idempotency-Key is still in progress; retry shortly",
                );
                e.retry_after = Some(1);
                Err(e)
            }
        };
    }

    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !res.status().is_success() {
        // Only successes are kept: a client may fix a refused request and retry with the same key.
        s.cache.delete(&cache_key).await.map_err(unavailable)?;
        return Ok(res);
    }
    let (parts, body) = res.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    let record = Record::Done {
        fingerprint,
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    s.cache
        .set(
            &cache_key,
            &serde_json::to_vec(&record).expect("serialize"),
            KEEP,
        )
        .await
        .map_err(unavailable)?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

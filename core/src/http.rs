//! Shared HTTP plumbing for both planes' REST APIs.
//!
//! - a request id per request (`x-request-id`, taken from the client when sane, else generated),
//!   kept in a task-local so that every error body can carry it;
//! - [`Json`]: a JSON extractor whose errors name the field at fault;
//! - [`Path`] and [`Query`]: the same for path and query parameters (axum's own answer in plain
//!   text, which no spec describes);
//! - [`Page`] and [`PageParams`]: cursor pagination;
//! - [`track_metrics`]: Prometheus request counters and latency histograms per route, with labels
//!   from fixed sets only ([`method_label`]);
//! - [`limit_body`]: every request body bounded, whoever reads it.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode};

/// The request id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

fn acceptable_client_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Middleware: give each request an id, a tracing span, and echo the id in the response.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(acceptable_client_id)
        .unwrap_or_else(|| format!("req_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));
    let span = tracing::info_span!(
        "http_request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id).expect("request ids are ascii");
    let mut res = REQUEST_ID
        .scope(id, next.run(req).instrument(span.clone()))
        .await;
    span.record("status", res.status().as_u16());
    res.headers_mut().insert(X_REQUEST_ID.clone(), header);
    res
}

/// The `method` label of a request: one of the standard methods, else `other`. HTTP lets a
/// client send any token as a method (`FOO`, `X1`, …): used as a label as sent, each one would
/// be a new Prometheus series, so one unauthenticated client could grow the metrics without bound.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware: count requests and time them per matched route. Every label comes from a fixed
/// set: the method from [`method_label`], the route from the router's own patterns (`unmatched`
/// for any other path), the status from the server's answer.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("starling_http_requests_total", &labels).increment(1);
    metrics::histogram!("starling_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Middleware: bound every request body to `max` bytes (`State(max)`, with
/// `axum::middleware::from_fn_with_state`). A declared `Content-Length` above it is answered 413
/// `payload_too_large` before a byte of the body is read; any other body is wrapped so that
/// whoever reads it (an axum extractor, or a handler streaming it itself, as GraphQL servers do)
/// gets an error at `max` bytes instead of buffering the rest: the extractors of this module and
/// axum's answer that as 413 `payload_too_large` too.
pub async fn limit_body(
    axum::extract::State(max): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(len) = declared_length(req.headers())
        && len > max as u64
    {
        return too_large(max).into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, max));
    next.run(Request::from_parts(parts, body)).await
}

/// The request's `Content-Length`, when it declares one.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether an error reading a body came from a size limit ([`limit_body`] or axum's own).
pub fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// 413 `payload_too_large` for a body over `max` bytes.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is too large: at most {max} bytes are accepted"),
    )
}

/// Fallback for unknown routes: a JSON 404.
pub async fn not_found_fallback(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Fallback for a known route with the wrong method: a JSON 405.
pub async fn method_not_allowed_fallback(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A JSON body whose errors name the field at fault: malformed JSON → 400 `invalid_json`,
/// unknown/missing/mistyped field → 422 `validation_failed` with `field` set.
/// An empty body is read as `{}`, so endpoints whose fields are all optional need no body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            } else {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("could not read body: {e}"),
                )
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse_json(b"{}").map(Json);
        }
        match content_type {
            Some(ct) if is_json_content_type(&ct) => {}
            Some(ct) => {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content-type must be application/json, got {ct:?}"),
                ));
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "content-type must be application/json (header missing)",
                ));
            }
        }
        parse_json(&bytes).map(Json)
    }
}

fn is_json_content_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses JSON the way [`Json`] does, with field-named errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {inner}"),
            ),
            Category::Data => {
                let msg = strip_position(&inner.to_string());
                if path == "." {
                    // The error is about the top level (e.g. a missing or unknown field name):
                    // pull the field name out of serde's message where it gives one.
                    let field = backticked(&msg);
                    let mut e = ApiError::new(ErrorCode::ValidationFailed, msg);
                    e.field = field;
                    e
                } else {
                    ApiError::field(path, msg)
                }
            }
        }
    })
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters with errors that name the parameter (400 `invalid_request`, `field` set):
/// axum's own `Path` answers a parameter that is not UTF-8 once percent-decoded
/// (`/v1/conversations/%FF%FE`) with a plain-text 400, where every spec promises the JSON error
/// body. Every handler of every listener takes this one (`clippy.toml` forbids axum's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[allow(clippy::disallowed_types)] // the one place that wraps it
        type AxumPath<T> = axum::extract::Path<T>;
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match AxumPath::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let key = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
                    _ => None,
                };
                let what = key.as_deref().unwrap_or("path");
                let mut err = ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("path parameter {what}: {}", e.body_text()),
                );
                err.field = key;
                Err(err)
            }
            // The route has no such parameters: a handler wired to the wrong route.
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// Query parameters with errors that name the parameter (400 `invalid_request`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(query);
        de.map(Query)
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    // axum's Query rejection text already names the parameter; keep it, with our code.
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "malformed query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| {
            let text = e.body_text();
            let text = text
                .strip_prefix("Failed to deserialize query string: ")
                .unwrap_or(&text)
                .to_owned();
            let mut err = ApiError::new(ErrorCode::InvalidRequest, format!("query: {text}"));
            err.field = text
                .split(':')
                .next()
                .filter(|f| !f.contains(' '))
                .map(str::to_owned);
            err
        })
}

/// For `#[serde(default, deserialize_with = "double_option")]` on an `Option<Option<T>>` field
/// of a patch: absent → `None` (unchanged), `null` → `Some(None)` (cleared), a value →
/// `Some(Some(v))`.
pub fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Cursor pagination parameters: `?limit=50&cursor=…`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many items to return, 1..=200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; omit for the first page.
    pub cursor: Option<String>,
}

/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

impl PageParams {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE_SIZE as u64),
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n as u64),
            Some(n) => {
                let mut e = ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("limit: must be 1..={MAX_PAGE_SIZE}, got {n}"),
                );
                e.field = Some("limit".into());
                Err(e)
            }
        }
    }

    /// The position after which the page starts (the last id of the previous page), checked.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        let Some(cursor) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let bad = || {
            let mut e = ApiError::new(
                ErrorCode::InvalidRequest,
                "cursor: not a cursor returned by this API",
            );
            e.field = Some("cursor".into());
            e
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let pos = s.strip_prefix("v1:").ok_or_else(bad)?;
        Ok(Some(pos.to_owned()))
    }
}

/// Encodes a position (the last id of a page) as an opaque cursor.
pub fn encode_cursor(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, oldest first.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, id_of: impl Fn(&T) -> &str) -> Self {
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id_of(r)))
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }

    /// Maps the items.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct In {
        name: String,
        limits: Limits,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        max: u32,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<In>(br#"{"name": "a", "limits": {"max": -1}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert_eq!(e.field.as_deref(), Some("limits.max"), "{e:?}");

        let e =
            parse_json::<In>(br#"{"name": "a", "limits": {"max": 1}, "colour": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"), "{e:?}");
        assert!(e.message.contains("unknown field"), "{e:?}");

        let e = parse_json::<In>(br#"{"limits": {"max": 1}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"), "{e:?}");

        let e = parse_json::<In>(br#"{"name": "a",,}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let p = PageParams {
            limit: None,
            cursor: Some(encode_cursor("tnt_x")),
        };
        assert_eq!(p.after().unwrap().as_deref(), Some("tnt_x"));
        let bad = PageParams {
            limit: Some(0),
            cursor: Some("!!".into()),
        };
        assert!(bad.after().is_err());
        assert!(bad.limit().is_err());
    }

    #[test]
    fn page_from_rows_sets_cursor_only_when_more() {
        let p = Page::from_rows(vec!["a".to_string(), "b".into(), "c".into()], 2, |s| s);
        assert_eq!(p.data, vec!["a", "b"]);
        assert_eq!(p.next_cursor, Some(encode_cursor("b")));
        let p = Page::from_rows(vec!["a".to_string()], 2, |s| s);
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn a_junk_method_does_not_make_a_metric_series() {
        use tower::ServiceExt;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(track_metrics));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                for m in ["JUNK1", "JUNK2", "Get", "GET"] {
                    let req = Request::builder()
                        .method(axum::http::Method::from_bytes(m.as_bytes()).unwrap())
                        .uri("/x")
                        .body(axum::body::Body::empty())
                        .unwrap();
                    app.clone().oneshot(req).await.unwrap();
                }
            })
        });
        let text = handle.render();
        assert!(
            !text.contains("JUNK"),
            "a method as sent is never a label: {text}"
        );
        assert!(!text.contains("\"Get\""), "{text}");
        assert!(
            text.contains(
                r#"starling_http_requests_total{method="other",route="/x",status="405"} 3"#
            ),
            "unknown methods share one series: {text}"
        );
        assert!(text.contains(r#"method="GET""#), "{text}");
    }

    /// A handler that reads the whole body itself, as a GraphQL server does, without a limit of
    /// its own: only [`limit_body`] stands between it and the client.
    async fn read_all(body: axum::body::Body) -> Response {
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => format!("read {}", b.len()).into_response(),
            Err(e) if is_length_limit(&e) => too_large(1 << 20).into_response(),
            Err(e) => ApiError::new(ErrorCode::InvalidRequest, e.to_string()).into_response(),
        }
    }

    fn limited_app() -> axum::Router {
        axum::Router::new()
            .route("/x", axum::routing::post(read_all))
            .layer(axum::middleware::from_fn_with_state(
                1usize << 20,
                limit_body,
            ))
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_cut_at_the_limit() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tower::ServiceExt;
        const CHUNK: usize = 64 * 1024;
        let pulled = Arc::new(AtomicUsize::new(0));
        let p = pulled.clone();
        // 64 MiB offered without a Content-Length, one chunk at a time.
        let chunks = futures::stream::iter(0..1024).map(move |_| {
            p.fetch_add(CHUNK, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; CHUNK]))
        });
        use futures::StreamExt;
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .body(axum::body::Body::from_stream(chunks))
            .unwrap();
        let res = limited_app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "payload_too_large", "{v}");
        let n = pulled.load(Ordering::SeqCst);
        assert!(
            n <= (1 << 20) + CHUNK,
            "{n} bytes were read of a body cut at 1 MiB"
        );

        // Under the limit: read whole.
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .body(axum::body::Body::from(vec![b'x'; 1000]))
            .unwrap();
        let res = limited_app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), axum::http::StatusCode::OK);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        use tower::ServiceExt;
        // The body would never end: a refusal proves nothing waited for it.
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .header("content-length", (200u64 << 20).to_string())
            .body(axum::body::Body::from_stream(never))
            .unwrap();
        let res = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            limited_app().oneshot(req),
        )
        .await
        .expect("answered without reading")
        .unwrap();
        assert_eq!(res.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}

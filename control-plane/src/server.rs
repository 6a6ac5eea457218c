//! The control-plane HTTP server: the admin API plus `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use starling_core::cache::{Cache, MemoryCache, RedisCache};
use starling_core::error::ApiError;
use starling_core::http::{
    limit_body, method_not_allowed_fallback, not_found_fallback, request_id, track_metrics,
};
use starling_core::seal::Sealer;
use starling_core::secret::KeyHasher;
use tokio::net::TcpListener;

use crate::api::{self, AdminState};
use crate::service::ControlPlane;
use crate::store;

/// Largest request body accepted by default (`server.max_body_bytes`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct OpsState {
    db: DatabaseConnection,
    cache: Arc<dyn Cache>,
    metrics: PrometheusHandle,
}

/// Connects, migrates, seals any secret still in clear and seeds the default plan: a control
/// plane ready to serve. `sealer` seals the secrets the database holds; `key_hash_secret` only
/// keys API-key hashes (separate root secrets, see docs/CONFIGURATION.md).
pub async fn open(
    database_url: &str,
    max_connections: u32,
    key_hash_secret: &str,
    sealer: Sealer,
) -> anyhow::Result<ControlPlane> {
    open_with(
        database_url,
        max_connections,
        starling_core::db::Timeouts::default(),
        key_hash_secret,
        sealer,
    )
    .await
}

/// [`open`] with the PostgreSQL timeouts of `database.statement_timeout_ms` and
/// `database.lock_timeout_ms`.
pub async fn open_with(
    database_url: &str,
    max_connections: u32,
    timeouts: starling_core::db::Timeouts,
    key_hash_secret: &str,
    sealer: Sealer,
) -> anyhow::Result<ControlPlane> {
    let db = starling_core::db::connect_with(database_url, max_connections, timeouts).await?;
    store::migrate(&db).await?;
    let cp = ControlPlane::new(db, KeyHasher::new(key_hash_secret), sealer);
    // Rows from before sealing existed (or written by an older version): sealed now, so an
    // upgraded deployment holds no secret in clear after its first start.
    cp.seal_clear_secrets()
        .await
        .map_err(|e| anyhow::anyhow!("sealing secrets stored in clear: {e}"))?;
    cp.ensure_default_plan()
        .await
        .map_err(|e| anyhow::anyhow!("seeding the default plan: {e}"))?;
    Ok(cp)
}

/// The cache: Redis when a URL is given, else in-process.
pub async fn open_cache(redis_url: Option<&str>) -> anyhow::Result<Arc<dyn Cache>> {
    Ok(match redis_url {
        Some(url) => Arc::new(RedisCache::connect(url).await?),
        None => Arc::new(MemoryCache::new()),
    })
}

/// The whole HTTP application.
pub fn app(state: AdminState, metrics: PrometheusHandle) -> Router {
    app_with(state, metrics, Router::new())
}

/// The whole HTTP application with more routes (a standalone process adds the data plane's).
/// Routes in `extra` must bound their request bodies themselves (see [`limit_body`]); the
/// control plane's own are bounded to `state.max_body_bytes` here.
pub fn app_with(state: AdminState, metrics: PrometheusHandle, extra: Router) -> Router {
    let max_body = state.max_body_bytes;
    let ops = OpsState {
        db: state.cp.db.clone(),
        cache: state.cache.clone(),
        metrics,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ops)
        .merge(api::router(state))
        // Every body bounded whoever reads it, not only by the extractors that honour axum's
        // DefaultBodyLimit. Routes in `extra` bound their own, so that each refuses in its own
        // shape: the console's GraphQL answers a GraphQL error (it once read a 200 MiB POST whole
        // before any login); standalone wraps the data plane's routes in the same layer.
        .layer(from_fn_with_state(max_body, limit_body))
        .merge(extra)
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(from_fn(track_metrics))
        .layer(from_fn(request_id))
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the peer address: the console's audit log records where a change came from.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A panic in a handler is a bug: log it, answer an opaque 500 with the request id, keep serving.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {what}")).into_response()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let db = s.db.ping().await.map_err(|e| e.to_string());
    let cache = s.cache.ping().await.map_err(|e| e.to_string());
    let ok = db.is_ok() && cache.is_ok();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            "unavailable".to_owned()
        }
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "checks": {"database": show(&db), "cache": show(&cache)},
    });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(body),
    )
}

async fn metrics_text(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

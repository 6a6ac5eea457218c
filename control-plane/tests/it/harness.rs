//! Starts a real control-plane HTTP server on 127.0.0.1:0 and talks to it with reqwest.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_control_plane::api::AdminState;
use starling_control_plane::server;
use starling_core::cache::Cache;
use tokio::sync::OnceCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const TOKEN: &str = "sop_test-operator-token-0123456789abcdefghijklmnop";
pub const KEY_HASH_SECRET: &str = "test-key-hash-secret-0123456789abcdefghijklmnop";
/// The sealing key every test control plane uses (`kid:base64`). Fixed, and the same in every
/// test crate that shares the PostgreSQL database, so each one can open what the others sealed.
pub const SEALING_KEY: &str = "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The tests' sealer (just [`SEALING_KEY`]).
pub fn sealer() -> starling_core::seal::Sealer {
    starling_core::seal::Sealer::new(
        starling_core::seal::SealKey::parse(SEALING_KEY).unwrap(),
        vec![],
    )
    .unwrap()
}

static PG_MIGRATED: OnceCell<()> = OnceCell::const_new();

fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL and Redis",
    )
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").expect(
        "TEST_REDIS_URL is not set: run the tests with scripts/test, which starts PostgreSQL and Redis",
    )
}

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub db: sea_orm::DatabaseConnection,
    /// The database's URL (to start another control plane on it).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A database of its own: a new SQLite file, or a new database on the PostgreSQL server of
/// `TEST_DATABASE_URL` (for tests that must see every row, e.g. resealing all of them).
pub async fn fresh_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    use sea_orm::ConnectionTrait;
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let url = pg_url();
            let name = unique("it").replace('-', "_");
            let db = sea_orm::Database::connect(&url)
                .await
                .expect("connect PostgreSQL");
            db.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a database");
            db.close().await.unwrap();
            let (server, _) = url.rsplit_once('/').expect("a database URL has a path");
            (format!("{server}/{name}"), None)
        }
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_custom(backend, |cp| cp).await
    }

    /// A server whose control plane `custom` changed first (billing, a clock…).
    pub async fn start_custom(
        backend: Backend,
        custom: impl FnOnce(
            starling_control_plane::service::ControlPlane,
        ) -> starling_control_plane::service::ControlPlane,
    ) -> Server {
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
                (url, Some(dir))
            }
            Backend::Postgres => {
                let url = pg_url();
                // Migrate once per process: tests run concurrently on one database.
                PG_MIGRATED
                    .get_or_init(|| async {
                        server::open(&url, 2, KEY_HASH_SECRET, sealer())
                            .await
                            .expect("migrate PostgreSQL");
                    })
                    .await;
                (url, None)
            }
        };
        Self::start_on(backend, url, dir, custom, sealer()).await
    }

    /// A server on the database at `url`, sealing with `sealer`.
    pub async fn start_on(
        backend: Backend,
        url: String,
        dir: Option<tempfile::TempDir>,
        custom: impl FnOnce(
            starling_control_plane::service::ControlPlane,
        ) -> starling_control_plane::service::ControlPlane,
        sealer: starling_core::seal::Sealer,
    ) -> Server {
        let cp = custom(
            server::open(&url, 5, KEY_HASH_SECRET, sealer)
                .await
                .expect("open control plane"),
        );
        let cache: Arc<dyn Cache> = match backend {
            Backend::Sqlite => server::open_cache(None).await.unwrap(),
            Backend::Postgres => server::open_cache(Some(&redis_url()))
                .await
                .expect("connect Redis"),
        };
        let db = cp.db.clone();
        let state = AdminState {
            cp,
            cache,
            operator_token: Arc::from(TOKEN),
            max_body_bytes: server::MAX_BODY_BYTES,
        };
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let app = server::app(state, metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, app, std::future::pending()));
        let s = Server {
            base,
            client: reqwest::Client::new(),
            backend,
            db,
            url,
            _dir: dir,
        };
        // Each test gets its own active cluster so placement never depends on other tests.
        s.ok(
            Method::POST,
            "/admin/v1/clusters",
            Some(json!({
                "name": unique("test-cluster"), "region": "test", "capacity_apps": 10_000
            })),
        )
        .await;
        s
    }

    /// Sends a request with the operator token; returns status, body (JSON or null) and headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self.call_with(method, path, body, &[]).await;
        (s, v)
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(TOKEN);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v, headers)
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> (StatusCode, Value) {
        let res = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A request that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let m = method.clone();
        let (status, v) = self.call(method, path, body).await;
        assert!(status.is_success(), "{m} {path} → {status}: {v}");
        v
    }

    pub async fn tenant(&self) -> String {
        let v = self
            .ok(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"name": unique("tenant")})),
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn app(&self, tenant: &str) -> String {
        let v = self
            .ok(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant}/apps"),
                Some(json!({"name": unique("app")})),
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Asserts an error response: status, code, and (when given) the field.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str, field: Option<&str>) {
    let (s, v) = got;
    assert_eq!(s.as_u16(), status, "status of {v}");
    assert_eq!(v["code"], code, "code of {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {v}"
    );
    assert!(
        v["request_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("req_")),
        "request_id in {v}"
    );
    if let Some(f) = field {
        assert_eq!(v["field"], f, "field of {v}");
        assert!(
            v["message"].as_str().unwrap().contains(f),
            "message names the field: {v}"
        );
    }
}

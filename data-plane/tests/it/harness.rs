//! A real data-plane node on 127.0.0.1:0 (SQLite or PostgreSQL), fed app configs the way the
//! control plane feeds them, driven over HTTP (reqwest) and WebSocket (tokio-tungstenite).

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_core::appconfig::{
    AppConfig, ConfigFeed, ConfigUpdate, InProcessFeed, KeyConfig, SignedUpdate, TokenSecret,
    next_version,
};
use starling_core::config::GatewayConfig;
use starling_core::id::{AppId, TenantId, TokenSecretId};
use starling_core::limits::Limits;
use starling_core::secret::{KeyHasher, generate_api_key, random_token};
use starling_core::signing::{SigningKey, Verifier};
use starling_data_plane::bus::InProcessBus;
use starling_data_plane::directory::{CellTrust, Directory};
use starling_data_plane::node::Node;
use starling_data_plane::registry::InProcessRegistry;
use tokio::sync::{OnceCell, mpsc};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One node on SQLite, in-process bus and registry (standalone).
    Sqlite,
    /// One node on PostgreSQL, in-process bus and registry.
    Postgres,
    /// Three nodes on PostgreSQL, Pulsar (bus) and Redis (registry, rate limits); clients are
    /// spread over the nodes, so every test also runs across nodes.
    Cell,
}

const KEY_HASH_SECRET: &str = "dp-test-key-hash-secret-0123456789abcdef";
/// The cell the test nodes serve.
pub const CLUSTER_ID: &str = "cls_01JTESTCE11000000000000000";

/// The control plane's signing key, as the test nodes trust it.
pub fn control_plane_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

/// `update` as the control plane sends it to the test cell.
pub fn signed(update: ConfigUpdate) -> SignedUpdate {
    SignedUpdate::sign(control_plane_key(), CLUSTER_ID, &update)
}
static PG_MIGRATED: OnceCell<()> = OnceCell::const_new();

pub struct Cell {
    /// The server API of the first node.
    pub base: String,
    /// Every node's WebSocket base; connections go round-robin.
    pub ws_bases: Vec<String>,
    next_ws: std::sync::atomic::AtomicUsize,
    /// The first node.
    pub node: Arc<Node>,
    /// Every node.
    pub nodes: Vec<Arc<Node>>,
    pub feed: Arc<InProcessFeed>,
    pub client: reqwest::Client,
    /// Every node's internal API (`/internal/v1`), on a listener of its own.
    pub internal_bases: Vec<String>,
    /// The cluster this cell is (`gateway.cluster_id` of its nodes).
    pub cluster_id: String,
    /// The control plane's signing key, whose public key the nodes trust.
    pub signing_key: SigningKey,
    _dir: Option<tempfile::TempDir>,
}

pub struct TestApp {
    pub cfg: AppConfig,
    pub key: String,
}

impl Cell {
    pub async fn start(backend: Backend) -> Cell {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl Fn(&mut GatewayConfig)) -> Cell {
        Self::start_full(backend, tweak, None).await
    }

    pub async fn start_full(
        backend: Backend,
        tweak: impl Fn(&mut GatewayConfig),
        bus: Option<Arc<dyn starling_data_plane::bus::Bus>>,
    ) -> Cell {
        Self::start_inner(backend, tweak, bus, None, None).await
    }

    /// A PostgreSQL node whose connections go to `url` (a proxy in front of
    /// `TEST_DATABASE_URL`, say) with PostgreSQL `timeouts`.
    pub async fn start_on_database(
        url: &str,
        timeouts: starling_core::db::Timeouts,
        tweak: impl Fn(&mut GatewayConfig),
    ) -> Cell {
        Self::start_inner(
            Backend::Postgres,
            tweak,
            None,
            None,
            Some((url.to_owned(), timeouts)),
        )
        .await
    }

    /// A cell whose nodes take quota periods from `clock`.
    pub async fn start_clocked(
        backend: Backend,
        clock: Arc<dyn starling_core::clock::Clock>,
    ) -> Cell {
        Self::start_inner(backend, |_| {}, None, Some(clock), None).await
    }

    async fn start_inner(
        backend: Backend,
        tweak: impl Fn(&mut GatewayConfig),
        bus: Option<Arc<dyn starling_data_plane::bus::Bus>>,
        clock: Option<Arc<dyn starling_core::clock::Clock>>,
        database: Option<(String, starling_core::db::Timeouts)>,
    ) -> Cell {
        let env = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run the tests with scripts/test, which starts the services"
                )
            })
        };
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    format!("sqlite://{}?mode=rwc", dir.path().join("dp.db").display()),
                    Some(dir),
                )
            }
            Backend::Postgres | Backend::Cell => {
                let url = env("TEST_DATABASE_URL");
                PG_MIGRATED
                    .get_or_init(|| async {
                        let db = starling_core::db::connect(&url, 2)
                            .await
                            .expect("connect PostgreSQL");
                        starling_data_plane::store::migrate(&db)
                            .await
                            .expect("migrate");
                    })
                    .await;
                (url, None)
            }
        };
        let n = if backend == Backend::Cell { 3 } else { 1 };
        let feed = Arc::new(InProcessFeed::new());
        let quotas: Arc<dyn starling_data_plane::quota::QuotaStore> = if backend == Backend::Cell {
            Arc::new(
                starling_data_plane::quota::RedisQuotas::connect(&env("TEST_REDIS_URL"))
                    .await
                    .expect("connect Redis"),
            )
        } else {
            Arc::new(starling_data_plane::quota::InProcessQuotas::default())
        };
        let clock = clock.unwrap_or_else(starling_core::clock::system);
        let (bus, registry, limiter): (
            Arc<dyn starling_data_plane::bus::Bus>,
            Arc<dyn starling_data_plane::registry::Registry>,
            Arc<dyn starling_data_plane::ratelimit::RateLimiter>,
        ) = if backend == Backend::Cell {
            let client = starling_core::pulsar::connect(
                &env("TEST_PULSAR_URL"),
                &starling_core::pulsar::PulsarAuth {
                    token: Some(env("TEST_PULSAR_ADMIN_TOKEN")),
                    ca_file: Some(env("TEST_PULSAR_CA_FILE").into()),
                },
                Duration::from_secs(30),
            )
            .await
            .expect("connect Pulsar");
            let prefix = format!(
                "persistent://public/default/it-{}-",
                ulid::Ulid::new().to_string().to_lowercase()
            );
            let redis = env("TEST_REDIS_URL");
            (
                bus.unwrap_or_else(|| {
                    Arc::new(starling_data_plane::pulsar_bus::PulsarBus::new(
                        client, &prefix,
                    ))
                }),
                Arc::new(
                    starling_data_plane::redis_registry::RedisRegistry::connect(
                        &redis,
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("connect Redis"),
                ),
                Arc::new(
                    starling_data_plane::ratelimit::RedisLimiter::connect(&redis)
                        .await
                        .expect("connect Redis"),
                ),
            )
        } else {
            (
                bus.unwrap_or_else(|| Arc::new(InProcessBus::new())),
                Arc::new(InProcessRegistry::new()),
                Arc::new(starling_data_plane::ratelimit::InProcessLimiter::default()),
            )
        };
        let mut nodes = Vec::new();
        let mut ws_bases = Vec::new();
        let mut internal_bases = Vec::new();
        let mut base = String::new();
        let cluster_id = starling_core::id::ClusterId::generate().into_string();
        let signing_key = SigningKey::generate();
        for i in 0..n {
            let db = match &database {
                Some((url, t)) => starling_core::db::connect_with(url, 10, *t).await,
                None => starling_core::db::connect(&url, 10).await,
            }
            .expect("connect");
            let directory = Arc::new(Directory::new(
                KeyHasher::new(KEY_HASH_SECRET),
                CellTrust {
                    cluster_id: CLUSTER_ID.into(),
                    verifier: Verifier::new([control_plane_key().public_key()]),
                    keys: Default::default(),
                },
            ));
            directory.follow(feed.clone()).await.unwrap();
            let mut g = GatewayConfig {
                node_id: format!("node-{i}-{}", ulid::Ulid::new()),
                cluster_id: Some(cluster_id.clone()),
                heartbeat_secs: 5,
                ..Default::default()
            };
            tweak(&mut g);
            let metering = Arc::new(starling_data_plane::metering::Metering::new(
                &g.node_id,
                clock.clone(),
                quotas.clone(),
                None,
            ));
            let node = Node::start_metered(
                db,
                directory,
                bus.clone(),
                registry.clone(),
                limiter.clone(),
                metering,
                g,
            )
            .await
            .unwrap();
            let app = node
                .router()
                .fallback(starling_core::http::not_found_fallback)
                .layer(axum::middleware::from_fn(starling_core::http::request_id));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let internal = node
                .internal_router(starling_data_plane::api::internal::InternalAuth {
                    cluster_id: node.gateway.cluster_id.clone(),
                    verifier: Verifier::new([signing_key.public_key()]),
                })
                .layer(axum::middleware::from_fn(starling_core::http::request_id));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            internal_bases.push(format!("http://{}", listener.local_addr().unwrap()));
            tokio::spawn(async move { axum::serve(listener, internal).await });
            if i == 0 {
                base = format!("http://{addr}");
            }
            ws_bases.push(format!("ws://{addr}"));
            nodes.push(node);
        }
        Cell {
            base,
            ws_bases,
            next_ws: std::sync::atomic::AtomicUsize::new(0),
            node: nodes[0].clone(),
            nodes,
            feed,
            client: reqwest::Client::new(),
            internal_bases,
            cluster_id,
            signing_key,
            _dir: dir,
        }
    }

    /// A new app (unlimited unless `limits` says otherwise) with one full-scope key.
    pub async fn app(&self, limits: Limits) -> TestApp {
        let hasher = KeyHasher::new(KEY_HASH_SECRET);
        let k = generate_api_key();
        let cfg = AppConfig {
            app_id: AppId::generate(),
            tenant_id: TenantId::generate(),
            suspended: None,
            limits,
            soft_limits: vec![],
            keys: vec![KeyConfig {
                id: k.id.clone(),
                secret_hash: hasher.hash(&k.secret),
                scopes: vec!["server_full".into()],
                expires_at: None,
                revoked: false,
            }],
            token_secrets: vec![TokenSecret {
                kid: TokenSecretId::generate().into_string(),
                secret: random_token(""),
                expires_at: None,
            }],
            webhooks: vec![],
            pre_send_hook: None,
            version: next_version(),
        };
        self.publish(cfg.clone()).await;
        TestApp { cfg, key: k.token }
    }

    /// Publishes a config change and waits until the node applied it.
    pub async fn publish(&self, mut cfg: AppConfig) -> AppConfig {
        cfg.version = next_version();
        self.feed
            .publish(signed(ConfigUpdate::Upsert(cfg.clone())))
            .await
            .unwrap();
        for _ in 0..200 {
            let applied = |n: &Arc<Node>| {
                n.messaging
                    .directory
                    .app(&cfg.app_id)
                    .is_some_and(|c| c.version >= cfg.version)
            };
            if self.nodes.iter().all(applied) {
                return cfg;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("config update not applied within 2s");
    }

    pub async fn api(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self.api_h(&app.key, method, path, body).await;
        (s, v)
    }

    pub async fn api_h(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    pub async fn ok(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let m = method.clone();
        let (s, v) = self.api(app, method, path, body).await;
        assert!(s.is_success(), "{m} {path} → {s}: {v}");
        v
    }

    /// The stored messages of a conversation, oldest first (the first 200).
    pub async fn history(&self, app: &TestApp, cid: &str) -> Vec<Value> {
        let h = self
            .ok(
                app,
                Method::GET,
                &format!("/v1/conversations/{cid}/messages?order=asc&limit=200"),
                None,
            )
            .await;
        h["messages"].as_array().cloned().unwrap_or_default()
    }

    pub async fn user(&self, app: &TestApp, id: &str) {
        self.ok(
            app,
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(json!({"name": id})),
        )
        .await;
    }

    pub async fn token(&self, app: &TestApp, user: &str) -> String {
        let v = self
            .ok(
                app,
                Method::POST,
                &format!("/v1/users/{user}/tokens"),
                Some(json!({})),
            )
            .await;
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn conversation(&self, app: &TestApp, body: Value) -> String {
        let v = self
            .ok(app, Method::POST, "/v1/conversations", Some(body))
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Users `alice` and `bob` and their direct conversation, whose id it returns: the start
    /// of most message tests.
    pub async fn alice_and_bob(&self, app: &TestApp) -> String {
        self.user(app, "alice").await;
        self.user(app, "bob").await;
        self.conversation(app, json!({"kind": "direct", "members": ["alice", "bob"]}))
            .await
    }

    /// Connects a user's device.
    pub async fn ws(&self, app: &TestApp, user: &str) -> Ws {
        let token = self.token(app, user).await;
        self.ws_with_token(&token).await.expect("connect")
    }

    pub async fn ws_with_token(&self, token: &str) -> Result<Ws, (u16, String)> {
        let i = self
            .next_ws
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            % self.ws_bases.len();
        let url = format!("{}/v1/connect?token={token}", self.ws_bases[i]);
        match tokio_tungstenite::connect_async(&url).await {
            Ok((stream, _)) => {
                let (sink, mut read) = stream.split();
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(m) = read.next().await {
                        match m {
                            Ok(Message::Text(t)) => {
                                let _ = tx.send(
                                    serde_json::from_str::<Value>(t.as_str())
                                        .unwrap_or(json!({"raw": t.as_str()})),
                                );
                            }
                            Ok(Message::Close(c)) => {
                                let code = c.map(|c| u16::from(c.code)).unwrap_or(1005);
                                let _ = tx.send(json!({"type": "__close", "code": code}));
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let _ = tx.send(json!({"type": "__close", "code": 1006, "error": e.to_string()}));
                                break;
                            }
                        }
                    }
                });
                let mut ws = Ws {
                    sink,
                    rx,
                    stash: Vec::new(),
                    next_id: 0,
                };
                let hello = ws.expect(|f| f["type"] == "hello", "hello").await;
                assert!(hello["connection_id"].as_str().unwrap().starts_with("con_"));
                Ok(ws)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(e) => Err((0, e.to_string())),
        }
    }
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

pub struct Ws {
    sink: Sink,
    rx: mpsc::UnboundedReceiver<Value>,
    stash: Vec<Value>,
    next_id: u64,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    pub async fn raw(&mut self, text: &str) {
        self.sink.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends a request frame and returns its `ack` or `error` reply.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        frame["id"] = json!(id);
        self.raw(&frame.to_string()).await;
        self.expect(
            |f| (f["type"] == "ack" || f["type"] == "error") && f["id"] == id,
            "reply",
        )
        .await
    }

    /// A request that must succeed; returns its result.
    pub async fn ok(&mut self, frame: Value) -> Value {
        let r = self.request(frame.clone()).await;
        assert_eq!(r["type"], "ack", "{frame} → {r}");
        r["result"].clone()
    }

    /// The first frame (already received or coming within 10 s) that matches.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(f)) if pred(&f) => return f,
                Ok(Some(f)) => self.stash.push(f),
                Ok(None) => panic!(
                    "connection ended while waiting for {what}; got {:?}",
                    self.stash
                ),
                Err(_) => panic!("no {what} within {WAIT:?}; got {:?}", self.stash),
            }
        }
    }

    /// An event of a type.
    pub async fn event(&mut self, ty: &str) -> Value {
        self.expect(|f| f["type"] == ty, ty).await
    }

    /// Asserts no frame matching arrives within `d`.
    pub async fn none(&mut self, pred: impl Fn(&Value) -> bool, d: Duration) {
        if let Some(f) = self.stash.iter().find(|f| pred(f)) {
            panic!("unexpected frame {f}");
        }
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(f)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert!(!pred(&f), "unexpected frame {f}");
            self.stash.push(f);
        }
    }

    /// Waits at most `within` for the server to close the connection; returns the close code
    /// (1006 when the connection dropped without one), or `None` if it stayed open.
    pub async fn closed_within(&mut self, within: Duration) -> Option<u16> {
        if let Some(f) = self.stash.iter().find(|f| f["type"] == "__close") {
            return f["code"].as_u64().map(|c| c as u16);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(f)) if f["type"] == "__close" => {
                    return f["code"].as_u64().map(|c| c as u16);
                }
                Ok(Some(f)) => self.stash.push(f),
                Ok(None) => return Some(1006),
                Err(_) => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
    }
}

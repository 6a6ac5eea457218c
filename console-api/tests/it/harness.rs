//! Starts a real control-plane server with the console on 127.0.0.1:0 and talks GraphQL to it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{Value, json};
use starling_console_api::{Console, Mode};
use starling_control_plane::api::AdminState;
use starling_control_plane::config::ConsoleConfig;
use starling_control_plane::server;
use starling_control_plane::service::ControlPlane;
use starling_control_plane::service::cluster::ClusterIn;
use starling_control_plane::service::tenant::TenantIn;
use tokio::sync::OnceCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const OPERATOR: &str = "sop_console-test-operator-token-0123456789abcdef";
pub const KEY_HASH_SECRET: &str = "console-test-key-hash-secret-0123456789abcdefgh";
/// The sealing key of the tests' control plane: the control-plane tests' own, since both share
/// the PostgreSQL database.
pub const SEALING_KEY: &str = "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn sealer() -> starling_core::seal::Sealer {
    starling_core::seal::Sealer::new(
        starling_core::seal::SealKey::parse(SEALING_KEY).unwrap(),
        vec![],
    )
    .unwrap()
}
pub const PASSWORD: &str = "correct horse battery staple";

static PG_MIGRATED: OnceCell<()> = OnceCell::const_new();

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub cp: ControlPlane,
    _dir: Option<tempfile::TempDir>,
}

/// The settings the tests run with: small lockout figures so that lockout is quick to reach.
pub fn test_config() -> ConsoleConfig {
    ConsoleConfig {
        login_max_failures: 3,
        lockout_secs: 600,
        ..ConsoleConfig::default()
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_with(backend, test_config(), Mode::Development).await
    }

    pub async fn start_with(backend: Backend, cfg: ConsoleConfig, mode: Mode) -> Server {
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
                (url, Some(dir))
            }
            Backend::Postgres => {
                let url = std::env::var("TEST_DATABASE_URL").expect(
                    "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
                );
                PG_MIGRATED
                    .get_or_init(|| async {
                        let cp = server::open(&url, 2, KEY_HASH_SECRET, sealer())
                            .await
                            .expect("migrate PostgreSQL");
                        starling_console_api::migrate(&cp.db)
                            .await
                            .expect("migrate the console's tables");
                    })
                    .await;
                (url, None)
            }
        };
        let cp = server::open(&url, 5, KEY_HASH_SECRET, sealer())
            .await
            .expect("open control plane");
        starling_console_api::migrate(&cp.db).await.unwrap();
        cp.create_cluster(ClusterIn {
            name: unique("console-cluster"),
            region: "test".into(),
            endpoint: None,
            internal_endpoint: None,
            development: false,
            capacity_apps: 10_000,
            config_public_key: None,
            status: None,
        })
        .await
        .expect("cluster");
        let console = Console::new(
            cp.clone(),
            cfg,
            mode,
            OPERATOR,
            Some(starling_core::signing::SigningKey::generate()),
        );
        let state = AdminState {
            cp: cp.clone(),
            cache: server::open_cache(None).await.unwrap(),
            operator_token: Arc::from(OPERATOR),
            max_body_bytes: server::MAX_BODY_BYTES,
        };
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let app = server::app_with(state, metrics, console.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, app, std::future::pending()));
        Server {
            base,
            client: reqwest::Client::new(),
            cp,
            _dir: dir,
        }
    }

    /// Posts a GraphQL request; returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, vars: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, starling_console_api::PATH))
            .header("user-agent", "console-it")
            .json(&json!({"query": query, "variables": vars}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        assert!(
            res.status().is_success(),
            "GraphQL answers 200: {}",
            res.status()
        );
        res.json().await.expect("JSON body")
    }

    /// Posts a GraphQL request with extra headers; returns the status and the whole body.
    pub async fn gql_with(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        vars: Value,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, starling_console_api::PATH))
            .json(&json!({"query": query, "variables": vars}));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        (status, res.json().await.expect("JSON body"))
    }

    /// A request that must succeed; returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, vars: Value) -> Value {
        let v = self.gql(token, query, vars).await;
        assert!(v.get("errors").is_none(), "unexpected errors: {v}");
        v["data"].clone()
    }

    /// A new tenant (made by the operator through the control plane).
    pub async fn tenant(&self) -> String {
        self.cp
            .create_tenant(TenantIn {
                name: unique("tenant"),
                plan_id: None,
            })
            .await
            .expect("tenant")
            .id
            .to_string()
    }

    /// Invites `email` to `tenant` as `role` with `inviter`'s token; returns the invitation token.
    pub async fn invite(&self, inviter: &str, tenant: &str, email: &str, role: &str) -> String {
        let d = self
            .ok(
                Some(inviter),
                "mutation($t: ID!, $e: String!, $r: Role!) { inviteMember(tenantId: $t, email: $e, role: $r) { token invitation { email role } } }",
                json!({"t": tenant, "e": email, "r": role}),
            )
            .await;
        d["inviteMember"]["token"].as_str().unwrap().to_owned()
    }

    /// A new account with `role` in `tenant` (invited by the operator); returns
    /// (account id, access token).
    pub async fn member(&self, tenant: &str, role: &str) -> (String, String) {
        let email = format!("{}@example.com", unique(&role.to_lowercase()));
        let token = self.invite(OPERATOR, tenant, &email, role).await;
        let d = self
            .ok(
                None,
                "mutation($t: String!, $n: String, $p: String!) { acceptInvitation(token: $t, name: $n, password: $p) { accessToken account { id email } } }",
                json!({"t": token, "n": "Test Person", "p": PASSWORD}),
            )
            .await;
        let s = &d["acceptInvitation"];
        assert_eq!(s["account"]["email"], email);
        (
            s["account"]["id"].as_str().unwrap().to_owned(),
            s["accessToken"].as_str().unwrap().to_owned(),
        )
    }

    /// An app made by the operator.
    pub async fn app(&self, tenant: &str) -> String {
        let d = self
            .ok(
                Some(OPERATOR),
                "mutation($t: ID!, $n: String!) { createApp(tenantId: $t, input: {name: $n}) { id } }",
                json!({"t": tenant, "n": unique("app")}),
            )
            .await;
        d["createApp"]["id"].as_str().unwrap().to_owned()
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// The `extensions.code` of the first error (panics when there is none).
#[track_caller]
pub fn code(v: &Value) -> String {
    let e = &v["errors"][0];
    assert!(e.is_object(), "expected an error: {v}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {v}"
    );
    e["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no extensions.code in {v}"))
        .to_owned()
}

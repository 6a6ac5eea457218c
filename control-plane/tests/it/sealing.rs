//! Secrets sealed at rest: a dump of the control-plane database holds none of the secrets the
//! API hands out, rotating the sealing key loses nothing, and rows from before sealing are
//! sealed at the next start.

use reqwest::Method;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, Set, Statement};
use serde_json::{Value, json};
use starling_control_plane::entity::{app_token_secret, pre_send_hook, webhook_endpoint};
use starling_control_plane::server;
use starling_control_plane::service::ControlPlane;
use starling_core::seal::{SealKey, Sealer, kid_of};
use starling_core::secret::{KeyHasher, split_api_key};

use crate::backend_tests;
use crate::harness::{Backend, KEY_HASH_SECRET, Server, fresh_database, sealer};

backend_tests!(
    database_dump_holds_no_secret_in_clear,
    clear_rows_are_sealed_at_the_next_start
);

/// Every secret an app has, as the API showed them.
struct AppSecrets {
    tenant: String,
    app: String,
    /// `id.secret` of an API key.
    api_key: String,
    token_secrets: Vec<String>,
    webhook_secrets: Vec<String>,
    hook_secret: String,
}

impl AppSecrets {
    fn all(&self) -> Vec<&str> {
        let key_secret = split_api_key(&self.api_key).unwrap().1;
        let mut v: Vec<&str> = vec![key_secret, &self.hook_secret];
        v.extend(self.token_secrets.iter().map(String::as_str));
        v.extend(self.webhook_secrets.iter().map(String::as_str));
        v
    }
}

/// An app with every kind of secret: two token secrets (one rotation), two webhook endpoints
/// (one with a rotated secret, so two secrets), a pre-send hook and an API key.
async fn app_with_secrets(s: &Server) -> AppSecrets {
    let tenant = s.tenant().await;
    let app = s.app(&tenant).await;
    let base = format!("/admin/v1/tenants/{tenant}/apps/{app}");
    s.ok(
        Method::POST,
        &format!("{base}/token-secrets/rotate"),
        Some(json!({})),
    )
    .await;
    let list = s
        .ok(Method::GET, &format!("{base}/token-secrets"), None)
        .await;
    let token_secrets: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["secret"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(token_secrets.len(), 2, "{list}");
    let mut webhook_secrets = Vec::new();
    let mut ids = Vec::new();
    for n in 0..2 {
        let e = s
            .ok(
                Method::POST,
                &format!("{base}/webhook-endpoints"),
                Some(json!({"url": format!("https://example.com/hook{n}")})),
            )
            .await;
        webhook_secrets.push(e["secret"].as_str().unwrap().to_owned());
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    let r = s
        .ok(
            Method::POST,
            &format!("{base}/webhook-endpoints/{}/secret/rotate", ids[0]),
            Some(json!({"overlap_seconds": 3600})),
        )
        .await;
    webhook_secrets.push(r["secret"].as_str().unwrap().to_owned());
    let h = s
        .ok(
            Method::PUT,
            &format!("{base}/pre-send-hook"),
            Some(json!({"url": "https://example.com/pre", "fail_open": false})),
        )
        .await;
    let k = s
        .ok(
            Method::POST,
            &format!("{base}/api-keys"),
            Some(json!({"name": "backend"})),
        )
        .await;
    AppSecrets {
        tenant,
        app,
        api_key: k["secret"].as_str().unwrap().to_owned(),
        token_secrets,
        webhook_secrets,
        hook_secret: h["secret"].as_str().unwrap().to_owned(),
    }
}

/// Every row of every table, each as one text line of all its columns: what a stolen dump holds.
async fn dump(db: &DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let q = |sql: &str| Statement::from_string(backend, sql.to_owned());
    let tables_sql = match backend {
        DbBackend::Sqlite => {
            "SELECT name AS t FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        _ => "SELECT tablename AS t FROM pg_tables WHERE schemaname = current_schema()",
    };
    let tables: Vec<String> = db
        .query_all_raw(q(tables_sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "t").unwrap())
        .collect();
    assert!(
        tables.iter().any(|t| t == "webhook_endpoint"),
        "the dump sees the tables: {tables:?}"
    );
    let mut lines = Vec::new();
    for t in tables {
        let columns_sql = match backend {
            DbBackend::Sqlite => format!("SELECT name AS c FROM pragma_table_info('{t}')"),
            _ => format!(
                "SELECT column_name::text AS c FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{t}'"
            ),
        };
        let columns: Vec<String> = db
            .query_all_raw(q(&columns_sql))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String>("", "c").unwrap())
            .collect();
        // SELECT * with every column as text (binary columns too), in one string per row.
        let all = columns
            .iter()
            .map(|c| format!("COALESCE(CAST(\"{c}\" AS TEXT), '')"))
            .collect::<Vec<_>>()
            .join(" || ' | ' || ");
        for r in db
            .query_all_raw(q(&format!("SELECT {all} AS line FROM \"{t}\"")))
            .await
            .unwrap()
        {
            lines.push(format!("{t}: {}", r.try_get::<String>("", "line").unwrap()));
        }
    }
    lines
}

async fn database_dump_holds_no_secret_in_clear(s: Server) {
    let a = app_with_secrets(&s).await;
    let lines = dump(&s.db).await;
    assert!(
        lines.iter().any(|l| l.contains(&a.app)),
        "the dump holds the app's rows"
    );
    for secret in a.all() {
        assert!(secret.len() >= 32, "a real secret: {secret}");
        if let Some(l) = lines.iter().find(|l| l.contains(secret)) {
            panic!("a secret is in clear in the database: {l}");
        }
    }
    // They are there, sealed: each secret row names the key it is sealed under.
    let sealed = lines
        .iter()
        .filter(|l| l.contains(&a.app) && l.contains("sealed:v1:test:"))
        .count();
    assert!(sealed >= 4, "token secrets, 2 endpoints, hook: {sealed}");
}

fn key(kid: &str, byte: u8) -> SealKey {
    SealKey::new(kid, [byte; 32]).unwrap()
}

async fn open_cp(url: &str, sealer: Sealer) -> ControlPlane {
    server::open(url, 2, KEY_HASH_SECRET, sealer)
        .await
        .expect("open control plane")
}

/// What a cell would get of the app's secrets (token secrets, webhook secrets, hook secret).
async fn cell_secrets(cp: &ControlPlane, a: &AppSecrets) -> (Vec<String>, Vec<String>, String) {
    let c = cp
        .app_config(&a.tenant, &a.app)
        .await
        .expect("app config opens")
        .unwrap();
    let mut tokens: Vec<String> = c.token_secrets.into_iter().map(|t| t.secret).collect();
    let mut hooks: Vec<String> = c
        .webhooks
        .into_iter()
        .flat_map(|w| w.secrets.into_iter().map(|s| s.secret))
        .collect();
    tokens.sort();
    hooks.sort();
    (tokens, hooks, c.pre_send_hook.unwrap().secret.secret)
}

/// The kids of every sealed value in the secret tables.
async fn sealed_kids(db: &DatabaseConnection) -> Vec<String> {
    let mut kids = Vec::new();
    for (t, c) in [
        ("app_token_secret", "secret"),
        ("webhook_endpoint", "secret"),
        ("webhook_endpoint", "previous_secret"),
        ("pre_send_hook", "secret"),
    ] {
        for r in db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT {c} AS v FROM {t} WHERE {c} IS NOT NULL"),
            ))
            .await
            .unwrap()
        {
            let v: String = r.try_get("", "v").unwrap();
            kids.push(kid_of(&v).unwrap_or("CLEAR").to_owned());
        }
    }
    kids
}

/// The operator's rotation: new key current, old one previous, reseal, drop the old key.
/// Nothing is lost and every API key still authenticates. On a database of its own: resealing
/// walks every row, and other tests' rows in a shared database must keep their key.
async fn rotating_the_sealing_key_loses_nothing(backend: Backend) {
    let (url, dir) = fresh_database(backend).await;
    let k1 = Sealer::new(key("k1", 1), vec![]).unwrap();
    let s = Server::start_on(backend, url.clone(), dir, |cp| cp, k1.clone()).await;
    let a = app_with_secrets(&s).await;
    let before = cell_secrets(&open_cp(&url, k1.clone()).await, &a).await;
    let (tokens, hooks, hook) = &before;
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        hooks.len(),
        3,
        "two endpoints, one with its previous secret"
    );
    assert_eq!(hook, &a.hook_secret);
    let mut shown = a.token_secrets.clone();
    shown.sort();
    assert_eq!(tokens, &shown, "cells get what the API showed");

    // 1. The new key is current, the old one previous: everything still opens.
    let rotating = open_cp(&url, Sealer::new(key("k2", 2), vec![key("k1", 1)]).unwrap()).await;
    assert_eq!(cell_secrets(&rotating, &a).await, before);
    // 2. Reseal: every value moves to k2, with a count per table.
    let mut seen = Vec::new();
    let counts = rotating
        .reseal_secrets(&mut |c| seen.push(c.table))
        .await
        .unwrap();
    let changed = |t: &str| counts.iter().find(|c| c.table == t).unwrap().changed;
    assert_eq!(changed("app_token_secret"), 2, "{counts:?}");
    assert_eq!(changed("webhook_endpoint"), 3, "{counts:?}");
    assert_eq!(changed("pre_send_hook"), 1, "{counts:?}");
    assert_eq!(
        seen,
        ["app_token_secret", "webhook_endpoint", "pre_send_hook"]
    );
    let kids = sealed_kids(&rotating.db).await;
    assert!(
        !kids.is_empty() && kids.iter().all(|k| k == "k2"),
        "{kids:?}"
    );
    // Running it again finds nothing to do.
    let again = rotating.reseal_secrets(&mut |_| {}).await.unwrap();
    assert!(again.iter().all(|c| c.changed == 0), "{again:?}");

    // 3. The old key is dropped: the same secrets, and API keys (keyed hashes) still work.
    let after = open_cp(&url, Sealer::new(key("k2", 2), vec![]).unwrap()).await;
    assert_eq!(cell_secrets(&after, &a).await, before);
    let c = after.app_config(&a.tenant, &a.app).await.unwrap().unwrap();
    let (id, secret) = split_api_key(&a.api_key).unwrap();
    let k = c.keys.iter().find(|k| k.id == id).expect("the key");
    assert!(KeyHasher::new(KEY_HASH_SECRET).verify(secret, &k.secret_hash));
    let (st, _) = s
        .call(
            Method::GET,
            &format!(
                "/admin/v1/tenants/{}/apps/{}/token-secrets",
                a.tenant, a.app
            ),
            None,
        )
        .await;
    assert_eq!(st, 500, "the old server, k1 only, cannot open k2 values");
    // And the resealed values need k2: k1 alone no longer opens them.
    let old_only = open_cp(&url, k1).await;
    let e = old_only
        .app_config(&a.tenant, &a.app)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"k2\""),
        "the error names the missing key id: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_sealing_key_loses_nothing_sqlite() {
    rotating_the_sealing_key_loses_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_sealing_key_loses_nothing_postgres() {
    rotating_the_sealing_key_loses_nothing(Backend::Postgres).await;
}

/// Rows written before sealing existed (inserted here directly, in clear) are sealed when the
/// control plane next starts, and still work.
async fn clear_rows_are_sealed_at_the_next_start(s: Server) {
    let tenant = s.tenant().await;
    let app = s.app(&tenant).await;
    let now = chrono::Utc::now();
    let clear_token = format!(
        "clear-token-secret-{}",
        starling_core::secret::random_token("")
    );
    let (clear_hook, clear_new, clear_old) = (
        starling_core::webhook::generate_secret(),
        starling_core::webhook::generate_secret(),
        starling_core::webhook::generate_secret(),
    );
    let endpoint = starling_core::id::WebhookEndpointId::generate().into_string();
    app_token_secret::ActiveModel {
        tenant_id: Set(tenant.clone()),
        app_id: Set(app.clone()),
        kid: Set(starling_core::id::TokenSecretId::generate().into_string()),
        secret: Set(clear_token.clone()),
        created_at: Set(now),
        expires_at: Set(None),
    }
    .insert(&s.db)
    .await
    .unwrap();
    webhook_endpoint::ActiveModel {
        tenant_id: Set(tenant.clone()),
        app_id: Set(app.clone()),
        id: Set(endpoint.clone()),
        url: Set("https://example.com/old".into()),
        description: Set(String::new()),
        event_types: Set(json!([])),
        secret: Set(clear_new.clone()),
        previous_secret: Set(Some(clear_old.clone())),
        previous_expires_at: Set(Some(now + chrono::Duration::hours(1))),
        enabled: Set(true),
        enabled_at: Set(now),
        rate_limit_per_second: Set(None),
        ordered: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&s.db)
    .await
    .unwrap();
    pre_send_hook::ActiveModel {
        tenant_id: Set(tenant.clone()),
        app_id: Set(app.clone()),
        url: Set("https://example.com/pre".into()),
        secret: Set(clear_hook.clone()),
        timeout_ms: Set(1000),
        fail_open: Set(true),
        updated_at: Set(now),
    }
    .insert(&s.db)
    .await
    .unwrap();
    let clear = [&clear_token, &clear_new, &clear_old, &clear_hook];
    // (On the shared PostgreSQL database another test's start may seal them first.)
    if s.backend == Backend::Sqlite {
        let lines = dump(&s.db).await;
        assert!(
            clear.iter().all(|c| lines.iter().any(|l| l.contains(*c))),
            "the rows are in clear before the start: the dump would see them"
        );
    }

    // The next start (twice at once, as two control planes would) seals them.
    let (a, b) = tokio::join!(open_cp(&s.url, sealer()), open_cp(&s.url, sealer()));
    drop(b);
    let lines = dump(&s.db).await;
    for c in clear {
        assert!(
            !lines.iter().any(|l| l.contains(c.as_str())),
            "{c} is still in clear"
        );
    }
    // And they open to what they were, bound to their own rows.
    let cfg = a.app_config(&tenant, &app).await.unwrap().unwrap();
    assert!(cfg.token_secrets.iter().any(|t| t.secret == clear_token));
    let w = cfg.webhooks.iter().find(|w| w.id == endpoint).unwrap();
    let got: Vec<&str> = w.secrets.iter().map(|s| s.secret.as_str()).collect();
    assert_eq!(got, [clear_new.as_str(), clear_old.as_str()]);
    assert_eq!(cfg.pre_send_hook.unwrap().secret.secret, clear_hook);
    let h: Value = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{tenant}/apps/{app}/pre-send-hook"),
            None,
        )
        .await;
    assert_eq!(h["secret"], clear_hook.as_str());
}

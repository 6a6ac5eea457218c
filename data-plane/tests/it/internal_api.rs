//! The internal API (`/internal/v1`, the control plane's moderation calls) under attack: it is
//! not on the public listener at all, and on the internal listener only a call token the control
//! plane signed for this cluster, this method, this path and this body, and not expired, opens
//! it. The old shared `sin_` token derived from `auth.key_hash_secret` (which every gateway
//! holds) opens nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_core::internal_auth::mint_call_token;
use starling_core::limits::Limits;
use starling_core::secret::KeyHasher;
use starling_core::signing::SigningKey;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

backend_tests!(
    internal_routes_are_absent_from_the_public_listener,
    call_tokens_open_one_request_on_one_cell
);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sends `method base+path` with `token` (if any) and `body`.
async fn send(
    c: &Cell,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut r = c.client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(serde_json::to_vec(b).unwrap());
    }
    let res = r.send().await.unwrap();
    let st = res.status();
    (st, res.json().await.unwrap_or(Value::Null))
}

/// `GET path` on the first node's internal listener with the genuine token for it.
async fn list_users_internally(c: &Cell, path: &str) -> (StatusCode, Value) {
    let t = token(c, &Method::GET, path, None);
    send(c, &c.internal_bases[0], Method::GET, path, Some(&t), None).await
}

/// A token the control plane would mint for this cell and request.
fn token(c: &Cell, method: &Method, path: &str, body: Option<&Value>) -> String {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    mint_call_token(
        &c.signing_key,
        &c.cluster_id,
        method.as_str(),
        path,
        &bytes,
        now(),
        30,
    )
}

/// The token of the old design: an HMAC of a constant under the key-hash secret.
fn old_shared_token() -> String {
    format!(
        "sin_{}",
        KeyHasher::new("dp-test-key-hash-secret-0123456789abcdef").hash("starling-internal-api-v1")
    )
}

async fn internal_routes_are_absent_from_the_public_listener(backend: Backend) {
    let c = Cell::start(backend).await;
    let app = c.app(Limits::default()).await;
    let a = app.cfg.app_id.as_str();
    let (st, v) = c
        .api(
            &app,
            Method::PUT,
            "/v1/users/alice",
            Some(json!({"name": "alice"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let users = format!("/internal/v1/apps/{a}/users");
    let ban = format!("/internal/v1/apps/{a}/users/alice/ban");
    let body = json!({"reason": "spam"});
    // Whatever the credential — a genuine call token, the old shared token, none — the public
    // listener of every node answers as for any unknown path.
    for (i, _) in c.ws_bases.iter().enumerate() {
        let public = c.ws_bases[i].replace("ws://", "http://");
        for (m, path, body) in [
            (Method::GET, users.clone(), None),
            (Method::POST, ban.clone(), Some(&body)),
            (Method::DELETE, ban.clone(), None),
        ] {
            let good = token(&c, &m, &path, body);
            for t in [Some(good.as_str()), Some(old_shared_token().as_str()), None] {
                let (st, v) = send(&c, &public, m.clone(), &path, t, body).await;
                assert_eq!(
                    (st, v["code"].as_str()),
                    (StatusCode::NOT_FOUND, Some("not_found")),
                    "{m} {public}{path} on the public listener: {v}"
                );
            }
        }
    }
    let (_, u) = c.api(&app, Method::GET, "/v1/users/alice", None).await;
    assert_eq!(u["banned"], false, "{u}");
    // The same calls on the internal listener work.
    let (st, v) = list_users_internally(&c, &users).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["id"], "alice", "{v}");
    // And the internal listener serves nothing public.
    let (st, _) = send(
        &c,
        &c.internal_bases[0],
        Method::GET,
        "/v1/users",
        Some(&app.key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

async fn call_tokens_open_one_request_on_one_cell(backend: Backend) {
    let c = Cell::start(backend).await;
    let app = c.app(Limits::default()).await;
    let a = app.cfg.app_id.as_str();
    for u in ["alice", "bob"] {
        let (st, v) = c
            .api(
                &app,
                Method::PUT,
                &format!("/v1/users/{u}"),
                Some(json!({"name": u})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let internal = c.internal_bases.last().unwrap().clone();
    let users = format!("/internal/v1/apps/{a}/users?limit=5");
    let ban = format!("/internal/v1/apps/{a}/users/alice/ban");
    let body = json!({"reason": "spam"});
    let refused = |(st, v): (StatusCode, Value), what: &str| {
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{what}: {v}"
        );
        v["message"].as_str().unwrap().to_owned()
    };
    let other_cluster = starling_core::id::ClusterId::generate().into_string();
    let get_bytes: &[u8] = b"";
    let body_bytes = serde_json::to_vec(&body).unwrap();

    // Cell Y's token on cell X.
    let for_y = mint_call_token(
        &c.signing_key,
        &other_cluster,
        "GET",
        &users,
        get_bytes,
        now(),
        30,
    );
    let m = refused(
        send(&c, &internal, Method::GET, &users, Some(&for_y), None).await,
        "another cell's token",
    );
    assert!(m.contains(&other_cluster), "{m}");
    // Expired (minted two minutes ago for a minute's life).
    let old = mint_call_token(
        &c.signing_key,
        &c.cluster_id,
        "GET",
        &users,
        get_bytes,
        now() - 120,
        60,
    );
    refused(
        send(&c, &internal, Method::GET, &users, Some(&old), None).await,
        "expired",
    );
    // Re-targeted: a token for the list used on another path, another query, another method.
    let t = token(&c, &Method::GET, &users, None);
    for path in [
        format!("/internal/v1/apps/{a}/users/bob"),
        format!("/internal/v1/apps/{a}/users?limit=100"),
        format!("/internal/v1/apps/{a}/users"),
    ] {
        let m = refused(
            send(&c, &internal, Method::GET, &path, Some(&t), None).await,
            &path,
        );
        assert!(m.contains("another request"), "{m}");
    }
    refused(
        send(
            &c,
            &internal,
            Method::DELETE,
            &ban,
            Some(&token(&c, &Method::POST, &ban, Some(&body))),
            None,
        )
        .await,
        "a ban's token used to unban",
    );
    // A ban's token with another body (a ban for good instead of the one signed).
    let t = token(&c, &Method::POST, &ban, Some(&body));
    let other = json!({"reason": "spam", "until": "2999-01-01T00:00:00Z"});
    refused(
        send(&c, &internal, Method::POST, &ban, Some(&t), Some(&other)).await,
        "another body",
    );
    // Signed by a key the cell does not trust, with the trusted key's id, or tampered with.
    let stranger = SigningKey::generate();
    let forged = mint_call_token(
        &stranger,
        &c.cluster_id,
        "POST",
        &ban,
        &body_bytes,
        now(),
        30,
    );
    refused(
        send(
            &c,
            &internal,
            Method::POST,
            &ban,
            Some(&forged),
            Some(&body),
        )
        .await,
        "untrusted key",
    );
    let parts: Vec<&str> = forged.split('.').collect();
    let relabelled = format!(
        "{}.{}.{}.{}",
        parts[0],
        parts[1],
        c.signing_key.kid(),
        parts[3]
    );
    refused(
        send(
            &c,
            &internal,
            Method::POST,
            &ban,
            Some(&relabelled),
            Some(&body),
        )
        .await,
        "relabelled key id",
    );
    // The old shared token, an API key of the app, nothing.
    let shared = old_shared_token();
    for (t, what) in [
        (Some(shared.as_str()), "old sin_ token"),
        (Some(app.key.as_str()), "API key"),
        (None, "no token"),
    ] {
        refused(
            send(&c, &internal, Method::POST, &ban, t, Some(&body)).await,
            what,
        );
    }
    let (_, u) = c.api(&app, Method::GET, "/v1/users/alice", None).await;
    assert_eq!(u["banned"], false, "nothing above banned alice: {u}");

    // The genuine token for exactly this request works, on any node of the cell.
    let (st, v) = send(&c, &internal, Method::POST, &ban, Some(&t), Some(&body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["banned"], true, "{v}");
    let (st, v) = list_users_internally(&c, &users).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
}

/// A node without its cluster id accepts no internal call, even a well-signed one.
#[tokio::test]
async fn a_node_without_a_cluster_id_refuses_every_call() {
    let c = Cell::start_with(Backend::Sqlite, |g| g.cluster_id = None).await;
    let app = c.app(Limits::default()).await;
    let path = format!("/internal/v1/apps/{}/users", app.cfg.app_id);
    let t = token(&c, &Method::GET, &path, None);
    let (st, v) = send(&c, &c.internal_bases[0], Method::GET, &path, Some(&t), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("gateway.cluster_id"),
        "{v}"
    );
}

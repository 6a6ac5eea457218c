//! Access that ends, ends everywhere: bans, deactivation, deletion, revoked tokens, a suspended
//! app and a retired token secret close the user's WebSockets on every node (in the cell the
//! devices are spread over three nodes and the REST call goes to the first) within 2 s, with
//! the documented close code; what the user sends meanwhile is refused with a clear code.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell, TestApp, Ws};

/// The budget for an ending to reach every node.
const BUDGET: Duration = Duration::from_secs(2);

/// A token with its id.
async fn token(cell: &Cell, app: &TestApp, user: &str) -> (String, String) {
    let v = cell
        .ok(
            app,
            Method::POST,
            &format!("/v1/users/{user}/tokens"),
            Some(json!({})),
        )
        .await;
    (
        v["token"].as_str().unwrap().to_owned(),
        v["token_id"].as_str().unwrap_or_default().to_owned(),
    )
}

/// One device per node (round-robin), all with `token`.
async fn devices(cell: &Cell, token: &str) -> Vec<Ws> {
    let mut out = Vec::new();
    for _ in 0..cell.ws_bases.len() {
        out.push(cell.ws_with_token(token).await.expect("connect"));
    }
    out
}

/// Every device gets `code` within the budget counted from `since`.
async fn all_closed(devices: &mut [Ws], code: u16, since: Instant, what: &str) {
    for (i, d) in devices.iter_mut().enumerate() {
        let left = BUDGET.saturating_sub(since.elapsed());
        let got = d.closed_within(left).await;
        assert_eq!(
            got,
            Some(code),
            "{what}: device {i} closed with {code} within 2 s"
        );
    }
    eprintln!("{what}: every device closed after {:?}", since.elapsed());
}

/// The handshake's refusal: status and error code.
async fn refused(cell: &Cell, token: &str) -> (u16, String) {
    match cell.ws_with_token(token).await {
        Ok(_) => panic!("the connection was accepted"),
        Err((status, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (status, v["code"].as_str().unwrap_or(&body).to_owned())
        }
    }
}

async fn every_ending_of_a_users_access_closes_their_sockets_on_every_node(backend: Backend) {
    let cell = Cell::start(backend).await;
    let app = cell.app(Limits::default()).await;
    for u in ["alice", "bob", "carol", "dave", "erin", "zed"] {
        cell.user(&app, u).await;
    }
    let mut zed = cell.ws(&app, "zed").await;

    // An app-wide ban: 4003, and the handshake refuses the same token with 403 `banned`.
    let (t, _) = token(&cell, &app, "alice").await;
    let mut ds = devices(&cell, &t).await;
    let t0 = Instant::now();
    cell.ok(&app, Method::POST, "/v1/users/alice/ban", Some(json!({})))
        .await;
    all_closed(&mut ds, 4003, t0, "ban").await;
    assert_eq!(refused(&cell, &t).await, (403, "banned".into()));

    // Deactivation: 4003, then 403 `user_deactivated`.
    let (t, _) = token(&cell, &app, "bob").await;
    let mut ds = devices(&cell, &t).await;
    let t0 = Instant::now();
    cell.ok(&app, Method::POST, "/v1/users/bob/deactivate", None)
        .await;
    all_closed(&mut ds, 4003, t0, "deactivation").await;
    assert_eq!(refused(&cell, &t).await, (403, "user_deactivated".into()));

    // Deletion: 4003, then the handshake's 404; a user made again under the same id does not
    // inherit the old tokens.
    let (t, _) = token(&cell, &app, "carol").await;
    let mut ds = devices(&cell, &t).await;
    let t0 = Instant::now();
    let (st, _) = cell
        .api(&app, Method::DELETE, "/v1/users/carol", None)
        .await;
    assert_eq!(st, 204);
    all_closed(&mut ds, 4003, t0, "deletion").await;
    assert_eq!(refused(&cell, &t).await, (404, "not_found".into()));
    cell.user(&app, "carol").await;
    assert_eq!(refused(&cell, &t).await, (401, "unauthorized".into()));

    // Every token of a user: 4001 (reconnect with a new token), the old token is refused, a
    // token issued in a later second works.
    let (t, _) = token(&cell, &app, "dave").await;
    let mut ds = devices(&cell, &t).await;
    let t0 = Instant::now();
    let v = cell
        .ok(&app, Method::POST, "/v1/users/dave/tokens/revoke", None)
        .await;
    assert_eq!(v["user_id"], "dave");
    assert!(v["tokens_not_before"].is_string(), "{v}");
    all_closed(&mut ds, 4001, t0, "revoking every token").await;
    assert_eq!(refused(&cell, &t).await, (401, "unauthorized".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (fresh, _) = token(&cell, &app, "dave").await;
    let mut d = cell
        .ws_with_token(&fresh)
        .await
        .expect("a newer token works");
    d.ok(json!({"type": "ping"})).await;

    // One token by its id: only its sessions end.
    let (t1, id1) = token(&cell, &app, "erin").await;
    let (t2, _) = token(&cell, &app, "erin").await;
    let mut ds1 = devices(&cell, &t1).await;
    let mut ds2 = devices(&cell, &t2).await;
    let t0 = Instant::now();
    let (st, v) = cell
        .api(
            &app,
            Method::DELETE,
            &format!("/v1/users/erin/tokens/{id1}"),
            None,
        )
        .await;
    assert_eq!(st, 204, "{v}");
    all_closed(&mut ds1, 4001, t0, "revoking one token").await;
    assert_eq!(refused(&cell, &t1).await, (401, "unauthorized".into()));
    for d in &mut ds2 {
        assert_eq!(d.closed_within(Duration::from_millis(300)).await, None);
        d.ok(json!({"type": "ping"})).await;
    }
    let (st, v) = cell
        .api(&app, Method::DELETE, "/v1/users/nobody/tokens/utk_x", None)
        .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (404, Some("not_found")));

    // Nobody else was touched.
    assert_eq!(zed.closed_within(Duration::from_millis(100)).await, None);
    zed.ok(json!({"type": "ping"})).await;
}

async fn a_suspended_app_or_a_retired_token_secret_ends_sessions_on_every_node(backend: Backend) {
    let cell = Cell::start(backend).await;
    let app = cell.app(Limits::default()).await;
    let other = cell.app(Limits::default()).await;
    cell.user(&app, "alice").await;
    cell.user(&other, "alice").await;
    let mut bystander = cell.ws(&other, "alice").await;

    let t = cell.token(&app, "alice").await;
    let mut ds = devices(&cell, &t).await;
    let mut cfg = app.cfg.clone();
    cfg.suspended = Some("unpaid".into());
    let t0 = Instant::now();
    let cfg = cell.publish(cfg).await;
    all_closed(&mut ds, 4003, t0, "suspension").await;
    assert_eq!(refused(&cell, &t).await, (403, "app_suspended".into()));

    let mut cfg = cfg;
    cfg.suspended = None;
    let cfg = cell.publish(cfg).await;
    let mut ds = devices(&cell, &t).await;
    // The secret that signed the token is replaced with no overlap (a leak): 4001.
    let mut rotated = cfg.clone();
    rotated.token_secrets = vec![starling_core::appconfig::TokenSecret {
        kid: starling_core::id::TokenSecretId::generate().into_string(),
        secret: starling_core::secret::random_token(""),
        expires_at: None,
    }];
    let t0 = Instant::now();
    cell.publish(rotated).await;
    all_closed(&mut ds, 4001, t0, "retired token secret").await;
    assert_eq!(refused(&cell, &t).await, (401, "unauthorized".into()));
    let mut d = cell.ws(&app, "alice").await;
    d.ok(json!({"type": "ping"})).await;

    // A secret that expires by time ends its sessions within a second of expiring.
    let mut expiring = cell.app(Limits::default()).await;
    cell.user(&expiring, "alice").await;
    let t = cell.token(&expiring, "alice").await;
    let mut ds = devices(&cell, &t).await;
    expiring.cfg.token_secrets[0].expires_at =
        Some(chrono::Utc::now() + chrono::Duration::milliseconds(1500));
    expiring.cfg = cell.publish(expiring.cfg.clone()).await;
    for d in &mut ds {
        d.ok(json!({"type": "ping"})).await;
    }
    let t0 = Instant::now() + Duration::from_millis(1500);
    tokio::time::sleep_until(t0.into()).await;
    all_closed(&mut ds, 4001, t0, "expired token secret").await;

    assert_eq!(
        bystander.closed_within(Duration::from_millis(100)).await,
        None
    );
    bystander.ok(json!({"type": "ping"})).await;
}

async fn a_conversation_ban_ends_that_conversation_and_only_it(backend: Backend) {
    let cell = Cell::start(backend).await;
    let app = cell.app(Limits::default()).await;
    cell.user(&app, "alice").await;
    cell.user(&app, "bob").await;
    let g = cell
        .conversation(&app, json!({"kind": "group", "members": ["alice", "bob"]}))
        .await;
    let h = cell
        .conversation(&app, json!({"kind": "group", "members": ["alice", "bob"]}))
        .await;
    let room = cell
        .conversation(&app, json!({"kind": "room", "created_by": "bob"}))
        .await;
    let mut alice = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    let mine = alice
        .ok(json!({"type": "send", "conversation_id": g, "text": "before"}))
        .await["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .ok(json!({"type": "subscribe", "conversation_id": room}))
        .await;

    for c in [&g, &room] {
        cell.ok(
            &app,
            Method::PATCH,
            &format!("/v1/conversations/{c}/members/alice"),
            Some(json!({"banned": true})),
        )
        .await;
        // She is told, on whichever node she is.
        let ev = alice
            .expect(
                |f| f["type"] == "member.updated" && f["conversation_id"] == *c,
                "member.updated",
            )
            .await;
        assert_eq!(ev["member"]["banned"], true);
    }

    // Every frame about the conversation is refused with `banned`.
    for frame in [
        json!({"type": "send", "conversation_id": g, "text": "after"}),
        json!({"type": "edit", "conversation_id": g, "message_id": mine, "text": "edited"}),
        json!({"type": "delete", "conversation_id": g, "message_id": mine}),
        json!({"type": "react", "conversation_id": g, "message_id": mine, "emoji": "x"}),
        json!({"type": "read", "conversation_id": g, "seq": 1}),
        json!({"type": "typing", "conversation_id": g, "state": "start"}),
        json!({"type": "sync", "conversation_id": g, "after_seq": 0}),
        json!({"type": "subscribe", "conversation_id": room}),
    ] {
        let r = alice.request(frame.clone()).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("banned")),
            "{frame} → {r}"
        );
    }
    // Leaving the room and joining again does not lift the ban.
    alice
        .ok(json!({"type": "unsubscribe", "conversation_id": room}))
        .await;
    let r = alice
        .request(json!({"type": "subscribe", "conversation_id": room}))
        .await;
    assert_eq!(r["code"], "banned", "{r}");

    // Nothing of the conversation reaches her; the other one goes on, on the same socket.
    bob.ok(json!({"type": "send", "conversation_id": g, "text": "secret"}))
        .await;
    bob.ok(json!({"type": "send", "conversation_id": h, "text": "hello"}))
        .await;
    alice
        .expect(
            |f| f["type"] == "message.new" && f["message"]["text"] == "hello",
            "the other conversation's message",
        )
        .await;
    alice
        .none(
            |f| f["type"] == "message.new" && f["message"]["text"] == "secret",
            Duration::from_millis(300),
        )
        .await;
    alice
        .ok(json!({"type": "sync", "conversation_id": h, "after_seq": 0}))
        .await;
    assert_eq!(alice.closed_within(Duration::from_millis(50)).await, None);
}

async fn a_banned_users_frames_are_refused_before_the_close_arrives(backend: Backend) {
    let cell = Cell::start(backend).await;
    let app = cell.app(Limits::default()).await;
    let g = cell.alice_and_bob(&app).await;
    let mut alice = cell.ws(&app, "alice").await;
    let mine = alice
        .ok(json!({"type": "send", "conversation_id": g, "text": "mine"}))
        .await["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The principal her connection holds, as the gateway would hand it its next frame.
    let p = cell
        .node
        .messaging
        .directory
        .verify_token(&cell.token(&app, "alice").await)
        .unwrap();
    cell.ok(&app, Method::POST, "/v1/users/alice/ban", Some(json!({})))
        .await;
    for frame in [
        json!({"type": "sync", "conversation_id": g, "after_seq": 0}),
        json!({"type": "edit", "conversation_id": g, "message_id": mine, "text": "y"}),
        json!({"type": "delete", "conversation_id": g, "message_id": mine}),
        json!({"type": "send", "conversation_id": g, "text": "x"}),
        json!({"type": "react", "conversation_id": g, "message_id": mine, "emoji": "x"}),
        json!({"type": "read", "conversation_id": g, "seq": 1}),
        json!({"type": "typing", "conversation_id": g, "state": "start"}),
        json!({"type": "subscribe", "conversation_id": g}),
    ] {
        let r = starling_data_plane::gateway::handle_text(&cell.node, &p, &frame.to_string()).await;
        let r = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("banned")),
            "{frame} → {r}"
        );
    }
    // Her message is still there, unedited.
    let v = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{g}/messages"),
            None,
        )
        .await;
    let m = &v["messages"][0];
    assert_eq!(m["id"], mine.as_str(), "{v}");
    assert_eq!(
        (
            m["text"].as_str(),
            m["edited_at"].is_null(),
            m["deleted_at"].is_null()
        ),
        (Some("mine"), true, true),
        "{v}"
    );
    assert_eq!(alice.closed_within(BUDGET).await, Some(4003));
}

backend_tests!(
    every_ending_of_a_users_access_closes_their_sockets_on_every_node,
    a_suspended_app_or_a_retired_token_secret_ends_sessions_on_every_node,
    a_conversation_ban_ends_that_conversation_and_only_it,
    a_banned_users_frames_are_refused_before_the_close_arrives,
);

/// A token whose `nbf` is an hour away is not valid yet; one valid from a minute ago is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_valid_yet_is_refused_at_connect() {
    let cell = Cell::start(Backend::Sqlite).await;
    let app = cell.app(Limits::default()).await;
    cell.user(&app, "alice").await;
    let secret = &app.cfg.token_secrets[0];
    let sign = |nbf: i64| {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(secret.kid.clone());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "alice", "app_id": app.cfg.app_id.as_str(), "iat": now, "exp": now + 7200, "nbf": now + nbf}),
            &jsonwebtoken::EncodingKey::from_secret(secret.secret.as_bytes()),
        )
        .unwrap()
    };
    let (status, body) = cell
        .ws_with_token(&sign(3600))
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not valid yet"), "{body}");
    let mut ws = cell.ws_with_token(&sign(-60)).await.expect("valid now");
    ws.ok(json!({"type": "ping"})).await;
}

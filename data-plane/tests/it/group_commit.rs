//! Group commit: many sends at once share transactions, yet every send keeps its own outcome:
//! gap-free seqs that match the acks, one delivery each, failures that stay with their send,
//! webhook events for exactly the committed messages, tenancy.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_core::appconfig::{PreSendHookConfig, WebhookEndpointConfig, WebhookSecret};
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell, TestApp};

backend_tests!(
    concurrent_sends_keep_seqs_gap_free_and_deliver_once,
    failing_sends_in_a_wave_fail_alone,
    a_retry_committed_meanwhile_is_answered_as_duplicate,
    the_one_check_query_refuses_as_the_separate_checks_did,
);

async fn send(c: &Cell, app: &TestApp, cid: &str, body: Value) -> (StatusCode, Value) {
    c.api(
        app,
        Method::POST,
        &format!("/v1/conversations/{cid}/messages"),
        Some(body),
    )
    .await
}

/// The stored messages of a conversation, oldest first: (seq, id).
async fn history(c: &Cell, app: &TestApp, cid: &str) -> Vec<(i64, String)> {
    c.history(app, cid)
        .await
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn concurrent_sends_keep_seqs_gap_free_and_deliver_once(b: Backend) {
    let c = Cell::start(b).await;
    let app = c.app(Limits::default()).await;
    let senders = ["u0", "u1", "u2", "u3"];
    for u in senders.iter().chain(&["watcher"]) {
        c.user(&app, u).await;
    }
    let mut cids = Vec::new();
    for name in ["one", "two"] {
        cids.push(
            c.conversation(
                &app,
                json!({"kind": "group", "created_by": "watcher", "members": senders, "name": name}),
            )
            .await,
        );
    }
    let mut w = c.ws(&app, "watcher").await;
    let n = 80;
    let acks = join_all((0..n).map(|i| {
        let (c, app, cid) = (&c, &app, &cids[i % 2]);
        async move {
            let (s, v) = send(
                c,
                app,
                cid,
                json!({"sender_id": senders[i % 4], "client_msg_id": format!("c{i}"), "text": format!("m{i}")}),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "send {i}: {v}");
            assert_eq!(v["duplicate"], false, "send {i}: {v}");
            (
                cid.clone(),
                v["message"]["seq"].as_i64().unwrap(),
                v["message"]["id"].as_str().unwrap().to_owned(),
            )
        }
    }))
    .await;
    for cid in &cids {
        let mut acked: Vec<(i64, String)> = acks
            .iter()
            .filter(|(c, _, _)| c == cid)
            .map(|(_, s, id)| (*s, id.clone()))
            .collect();
        acked.sort();
        let seqs: Vec<i64> = acked.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=(n as i64 / 2)).collect::<Vec<_>>(),
            "acked seqs of {cid} are 1..=n, no gap, no duplicate"
        );
        assert_eq!(
            history(&c, &app, cid).await,
            acked,
            "every ack's seq and id are the stored row's"
        );
    }
    let want: HashSet<String> = acks.iter().map(|(_, _, id)| id.clone()).collect();
    let mut got = HashSet::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    while got.len() < n {
        let e = w.event("message.new").await;
        let id = e["message"]["id"].as_str().unwrap().to_owned();
        assert!(want.contains(&id), "delivered {id}, which was not acked");
        assert!(got.insert(id.clone()), "{id} delivered twice");
        let cid = e["message"]["conversation_id"].as_str().unwrap().to_owned();
        last.insert(cid, e["message"]["seq"].as_i64().unwrap());
    }
    w.none(|f| f["type"] == "message.new", Duration::from_millis(300))
        .await;
}

fn endpoint() -> WebhookEndpointConfig {
    WebhookEndpointConfig {
        id: "ep_groupcommit".into(),
        // Never called: these nodes record events but do not deliver them.
        url: "http://127.0.0.1:9/hook".into(),
        event_types: vec!["message.created".into()],
        secrets: vec![WebhookSecret {
            secret: starling_core::webhook::generate_secret(),
            expires_at: None,
        }],
        enabled: true,
        enabled_at: Utc::now(),
        rate_limit_per_second: None,
        ordered: false,
    }
}

/// The message ids of the app's recorded `message.created` events.
async fn created_events(c: &Cell, app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/v1/webhooks/events?limit=100".to_owned();
    loop {
        let page = c.ok(app, Method::GET, &path, None).await;
        for e in page["data"].as_array().unwrap() {
            if e["type"] == "message.created" {
                ids.push(
                    e["payload"]["data"]["message"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        match page["next_cursor"].as_str() {
            Some(cur) => path = format!("/v1/webhooks/events?limit=100&cursor={cur}"),
            None => return ids,
        }
    }
}

async fn failing_sends_in_a_wave_fail_alone(b: Backend) {
    let c = Cell::start_with(b, |g| g.webhooks.deliver = false).await;
    let mut app = c.app(Limits::default()).await;
    app.cfg.webhooks = vec![endpoint()];
    app.cfg = c.publish(app.cfg.clone()).await;
    let other = c.app(Limits::default()).await;
    for u in ["alice", "bob", "mia", "mallory"] {
        c.user(&app, u).await;
    }
    for u in ["alice", "bob"] {
        c.user(&other, u).await;
    }
    let cid = c
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "alice", "members": ["bob", "mia"], "name": "g"}),
        )
        .await;
    let theirs = c
        .conversation(
            &other,
            json!({"kind": "group", "created_by": "alice", "members": ["bob"], "name": "g"}),
        )
        .await;
    let until = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    c.ok(
        &app,
        Method::PATCH,
        &format!("/v1/conversations/{cid}/members/mia"),
        Some(json!({"muted_until": until})),
    )
    .await;

    enum Want {
        Ok,
        Race,
        Err(StatusCode, &'static str, &'static str),
    }
    let mut wave: Vec<(Value, &str, Want)> = Vec::new();
    for i in 0..20 {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        wave.push((
            json!({"sender_id": who, "client_msg_id": format!("ok{i}"), "text": format!("fine {i}")}),
            &cid,
            Want::Ok,
        ));
        if i == 5 {
            wave.push((
                json!({"sender_id": "mallory", "text": "let me in"}),
                &cid,
                Want::Err(StatusCode::FORBIDDEN, "forbidden", "not a member"),
            ));
            wave.push((
                json!({"sender_id": "mia", "text": "shh"}),
                &cid,
                Want::Err(StatusCode::FORBIDDEN, "forbidden", "muted"),
            ));
        }
        if i == 10 {
            // Another app's conversation, through this app's key.
            wave.push((
                json!({"sender_id": "alice", "text": "across"}),
                &theirs,
                Want::Err(StatusCode::NOT_FOUND, "not_found", "conversation"),
            ));
        }
        if i == 12 || i == 13 {
            wave.push((
                json!({"sender_id": "alice", "client_msg_id": "race", "text": "twice"}),
                &cid,
                Want::Race,
            ));
        }
    }
    let results = join_all(
        wave.iter()
            .map(|(body, to, _)| send(&c, &app, to, body.clone())),
    )
    .await;
    let mut committed = HashSet::new();
    let mut race = Vec::new();
    for ((body, _, want), (s, v)) in wave.iter().zip(&results) {
        match want {
            Want::Ok => {
                assert_eq!(*s, StatusCode::CREATED, "{body}: {v}");
                assert_eq!(v["duplicate"], false, "{body}: {v}");
                committed.insert(v["message"]["id"].as_str().unwrap().to_owned());
            }
            Want::Race => {
                // 201 for the try that wrote it, 200 for the duplicate.
                assert!(s.is_success(), "{body}: {v}");
                race.push((
                    v["message"]["id"].as_str().unwrap().to_owned(),
                    v["duplicate"].as_bool().unwrap(),
                ));
            }
            Want::Err(status, code, says) => {
                assert_eq!(s, status, "{body}: {v}");
                assert_eq!(v["code"], *code, "{body}: {v}");
                assert!(
                    v["message"].as_str().unwrap().contains(says),
                    "{body}: {v} should say {says}"
                );
            }
        }
    }
    assert_eq!(race[0].0, race[1].0, "both tries got the same message");
    assert_eq!(
        race.iter().filter(|(_, dup)| !dup).count(),
        1,
        "exactly one try wrote it: {race:?}"
    );
    committed.insert(race[0].0.clone());
    let stored = history(&c, &app, &cid).await;
    assert_eq!(
        stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=21).collect::<Vec<_>>(),
        "the 20 good sends and the race once, gap-free"
    );
    let stored_ids: HashSet<String> = stored.into_iter().map(|(_, id)| id).collect();
    assert_eq!(stored_ids, committed, "nothing stored for a failed send");
    // Webhook events: one per committed message, none for the failed sends.
    let mut events = created_events(&c, &app).await;
    events.sort();
    let mut want: Vec<String> = committed.into_iter().collect();
    want.sort();
    assert_eq!(
        events, want,
        "a message.created event per committed message"
    );
    // The other app's conversation is untouched.
    assert!(history(&c, &other, &theirs).await.is_empty());
}

/// A pre-send hook that holds every message whose text contains `hold` until released.
struct HoldingHook {
    held: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
    url: String,
}

impl HoldingHook {
    async fn start() -> Self {
        let held = Arc::new(AtomicUsize::new(0));
        let (release, rx) = tokio::sync::watch::channel(false);
        let h = held.clone();
        let app = axum::Router::new().fallback(axum::routing::post(move |body: String| {
            let (h, mut rx) = (h.clone(), rx.clone());
            async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                let text = v["data"]["message"]["text"].as_str().unwrap_or_default();
                if text.contains("hold") {
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.wait_for(|go| *go).await;
                }
                json!({"action": "accept"}).to_string()
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { held, release, url }
    }

    async fn wait_held(&self, n: usize) {
        for _ in 0..500 {
            if self.held.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "only {} of {n} messages reached the hook",
            self.held.load(Ordering::SeqCst)
        );
    }
}

/// A send passes its checks, then a retry with the same `client_msg_id` is committed while the
/// first waits (here: in the pre-send hook). The first then fails in the transaction with a
/// unique violation, together with other sends released at the same moment: it is answered
/// with the retry's message, and the others are written.
async fn a_retry_committed_meanwhile_is_answered_as_duplicate(b: Backend) {
    let c = Cell::start_with(b, |g| {
        g.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
        g.webhooks.deliver = false;
    })
    .await;
    let hook = HoldingHook::start().await;
    let mut app = c.app(Limits::default()).await;
    app.cfg.pre_send_hook = Some(PreSendHookConfig {
        url: hook.url.clone(),
        secret: WebhookSecret {
            secret: starling_core::webhook::generate_secret(),
            expires_at: None,
        },
        timeout_ms: 5000,
        fail_open: false,
    });
    app.cfg.webhooks = vec![endpoint()];
    app.cfg = c.publish(app.cfg.clone()).await;
    c.user(&app, "alice").await;
    c.user(&app, "bob").await;
    let cid = c
        .conversation(&app, json!({"kind": "direct", "members": ["alice", "bob"]}))
        .await;
    let (c, app, cid) = (Arc::new(c), Arc::new(app), Arc::new(cid));
    let first = {
        let (c, app, cid) = (c.clone(), app.clone(), cid.clone());
        tokio::spawn(async move {
            send(
                &c,
                &app,
                &cid,
                json!({"sender_id": "alice", "client_msg_id": "k", "text": "hold me"}),
            )
            .await
        })
    };
    hook.wait_held(1).await;
    let (s, retry) = send(
        &c,
        &app,
        &cid,
        json!({"sender_id": "alice", "client_msg_id": "k", "text": "the retry"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{retry}");
    assert_eq!(retry["duplicate"], false);
    let others: Vec<_> = (0..10)
        .map(|i| {
            let (c, app, cid) = (c.clone(), app.clone(), cid.clone());
            tokio::spawn(async move {
                send(&c, &app, &cid, json!({"sender_id": "bob", "client_msg_id": format!("b{i}"), "text": format!("hold {i}")})).await
            })
        })
        .collect();
    hook.wait_held(11).await;
    hook.release.send(true).unwrap();
    let (s, v) = first.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["duplicate"], true, "{v}");
    assert_eq!(v["message"]["id"], retry["message"]["id"]);
    assert_eq!(v["message"]["text"], "the retry", "the committed one");
    let mut ids = HashSet::from([retry["message"]["id"].as_str().unwrap().to_owned()]);
    for o in others {
        let (s, v) = o.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["duplicate"], false, "{v}");
        ids.insert(v["message"]["id"].as_str().unwrap().to_owned());
    }
    let stored = history(&c, &app, &cid).await;
    assert_eq!(
        stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    assert_eq!(
        stored.into_iter().map(|(_, id)| id).collect::<HashSet<_>>(),
        ids
    );
    let events: HashSet<String> = created_events(&c, &app).await.into_iter().collect();
    assert_eq!(
        events, ids,
        "one event per stored message, none for the loser"
    );
}

/// The send checks read in one query keep every refusal of the separate checks: status, code
/// and a message naming the user or conversation.
async fn the_one_check_query_refuses_as_the_separate_checks_did(b: Backend) {
    let c = Cell::start(b).await;
    let app = c.app(Limits::default()).await;
    for u in ["owner", "gone", "outlaw", "kicked", "plain", "stranger"] {
        c.user(&app, u).await;
    }
    let g = c
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "owner", "members": ["gone", "outlaw", "kicked", "plain"], "name": "g"}),
        )
        .await;
    let news = c
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "owner", "members": ["plain"], "name": "news", "post_policy": "admins"}),
        )
        .await;
    c.ok(&app, Method::POST, "/v1/users/gone/deactivate", None)
        .await;
    c.ok(
        &app,
        Method::POST,
        "/v1/users/outlaw/ban",
        Some(json!({"reason": "spam"})),
    )
    .await;
    c.ok(
        &app,
        Method::PATCH,
        &format!("/v1/conversations/{g}/members/kicked"),
        Some(json!({"banned": true})),
    )
    .await;
    let cases: Vec<(&str, &str, u16, &str, String)> = vec![
        ("nobody", g.as_str(), 404, "not_found", "nobody".into()),
        (
            "gone",
            &g,
            403,
            "user_deactivated",
            "user gone is deactivated".into(),
        ),
        ("outlaw", &g, 403, "banned", "user outlaw is banned".into()),
        (
            "kicked",
            &g,
            403,
            "banned",
            format!("user kicked is banned from conversation {g}"),
        ),
        (
            "stranger",
            &g,
            403,
            "forbidden",
            format!("not a member of conversation {g}"),
        ),
        (
            "plain",
            &news,
            403,
            "forbidden",
            format!("only admins post in conversation {news}"),
        ),
        (
            "plain",
            "cnv_nosuchthing",
            404,
            "not_found",
            "cnv_nosuchthing".into(),
        ),
    ];
    for (who, cid, status, code, says) in &cases {
        let (s, v) = send(&c, &app, cid, json!({"sender_id": who, "text": "hi"})).await;
        assert_eq!(s.as_u16(), *status, "{who} in {cid}: {v}");
        assert_eq!(v["code"], *code, "{who} in {cid}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(says.as_str()),
            "{who} in {cid}: {v} should say {says}"
        );
    }
    // Those who may post still can, and the backend posts as the system.
    for (who, cid) in [("plain", &g), ("owner", &news)] {
        let (s, v) = send(&c, &app, cid, json!({"sender_id": who, "text": "ok"})).await;
        assert_eq!(s, StatusCode::CREATED, "{who}: {v}");
    }
    let (s, v) = send(&c, &app, &g, json!({"text": "system"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["message"]["kind"], "system");
    assert_eq!(
        history(&c, &app, &g).await.len(),
        2,
        "nothing stored for a refusal"
    );
}

/// PostgreSQL connections plan every execution (see `starling_core::db::connect`).
#[tokio::test]
async fn postgres_connections_use_custom_plans() {
    use sea_orm::ConnectionTrait;
    let url = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is not set: run the tests with scripts/test");
    let db = starling_core::db::connect(&url, 1).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SHOW plan_cache_mode",
        ))
        .await
        .unwrap()
        .unwrap();
    let mode: String = row.try_get("", "plan_cache_mode").unwrap();
    assert_eq!(mode, "force_custom_plan");
}

//! Monthly quotas, enforced by the nodes from the app config they cache and the cell's shared
//! counters (Redis in a cell): no control plane is involved, so enforcement goes on while it is
//! down. Periods come from an injected clock.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use starling_core::clock::ManualClock;
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

backend_tests!(
    hard_message_quota_refuses_at_the_limit_and_recovers_at_reset,
    soft_limit_only_warns,
    monthly_active_users_quota
);

async fn hard_message_quota_refuses_at_the_limit_and_recovers_at_reset(b: Backend) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
    ));
    let cell = Cell::start_clocked(b, clock.clone()).await;
    let app = cell
        .app(Limits {
            messages_per_month: Some(3),
            ..Default::default()
        })
        .await;
    cell.user(&app, "alice").await;
    cell.user(&app, "bob").await;
    let cid = cell
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "alice", "members": ["bob"], "name": "q"}),
        )
        .await;
    let path = format!("/v1/conversations/{cid}/messages");
    for i in 0..2 {
        cell.ok(
            &app,
            Method::POST,
            &path,
            Some(json!({"text": format!("m{i}")})),
        )
        .await;
    }
    let mut ws = cell.ws(&app, "alice").await;
    let r = ws
        .ok(json!({"type": "send", "conversation_id": cid, "client_msg_id": "c1", "text": "third"}))
        .await;
    assert_eq!(r["duplicate"], false);

    // At the limit: refused over REST and over the WebSocket, naming the limit and the reset.
    let (st, body, headers) = cell
        .api_h(
            &app.key,
            Method::POST,
            &path,
            Some(json!({"text": "fourth"})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "quota_exceeded");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("messages_per_month"), "{msg}");
    assert!(msg.contains("2026-12-01T00:00:00+00:00"), "{msg}");
    assert_eq!(headers["retry-after"], "3600");
    let e = ws
        .request(
            json!({"type": "send", "conversation_id": cid, "client_msg_id": "c2", "text": "no"}),
        )
        .await;
    assert_eq!(e["code"], "quota_exceeded", "{e}");
    // A retry of a message already stored is not a new message: it still answers.
    let r = ws
        .ok(json!({"type": "send", "conversation_id": cid, "client_msg_id": "c1", "text": "third"}))
        .await;
    assert_eq!(r["duplicate"], true);
    let hist = cell.ok(&app, Method::GET, &path, None).await;
    assert_eq!(
        hist["messages"].as_array().unwrap().len(),
        3,
        "nothing refused was stored"
    );

    // The period ends: the quota is whole again.
    clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap());
    cell.ok(&app, Method::POST, &path, Some(json!({"text": "december"})))
        .await;
    ws.ok(json!({"type": "send", "conversation_id": cid, "client_msg_id": "c3", "text": "me too"}))
        .await;
}

async fn soft_limit_only_warns(b: Backend) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let cell = Cell::start_clocked(b, clock).await;
    let mut app = cell
        .app(Limits {
            messages_per_month: Some(1),
            ..Default::default()
        })
        .await;
    app.cfg.soft_limits = vec!["messages_per_month".into()];
    app.cfg = cell.publish(app.cfg.clone()).await;
    cell.user(&app, "alice").await;
    let cid = cell
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "alice", "members": [], "name": "s"}),
        )
        .await;
    for i in 0..3 {
        cell.ok(
            &app,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({"text": format!("m{i}")})),
        )
        .await;
    }
}

async fn monthly_active_users_quota(b: Backend) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0).unwrap(),
    ));
    let cell = Cell::start_clocked(b, clock.clone()).await;
    let app = cell
        .app(Limits {
            monthly_active_users: Some(1),
            ..Default::default()
        })
        .await;
    cell.user(&app, "alice").await;
    cell.user(&app, "bob").await;
    let alice = cell.ws(&app, "alice").await;
    let bob = cell.token(&app, "bob").await;
    let (status, body) = cell
        .ws_with_token(&bob)
        .await
        .err()
        .expect("a second active user is refused");
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("quota_exceeded") && body.contains("monthly_active_users"),
        "{body}"
    );
    alice.close().await;
    // Alice is active already this month: she may come back.
    let again = cell.ws(&app, "alice").await;
    again.close().await;
    clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    let b2 = cell.ws_with_token(&bob).await.expect("a new month");
    b2.close().await;
}

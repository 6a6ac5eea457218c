//! The server API under concurrent writes, on SQLite (the embedded store of `standalone`) and on
//! PostgreSQL: no answer is a 5xx. On SQLite a write transaction that read first used to fail
//! with "database is locked" beside other writers (7–11 of 40 conversation deletions); and a
//! PATCH or PUT of a user racing its DELETE answered 500 "None of the records are updated"
//! (118 of 600 racing requests).

use std::sync::Arc;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_core::limits::Limits;
use tokio::sync::Semaphore;

use crate::harness::{Backend, Cell, TestApp};

/// One request of a mix: method, path, body, and the statuses it may answer.
type Call = (Method, String, Option<Value>, &'static [u16]);

/// Sends every call at once (at most `width` in flight); the calls whose answer is not among
/// their allowed statuses, as text.
async fn storm(c: &Arc<Cell>, app: &TestApp, calls: Vec<Call>, width: usize) -> Vec<String> {
    let gate = Arc::new(Semaphore::new(width));
    let key = app.key.clone();
    let runs = calls.into_iter().map(|(m, path, body, allowed)| {
        let c = c.clone();
        let gate = gate.clone();
        let key = key.clone();
        async move {
            let _p = gate.acquire().await.unwrap();
            let (st, v, _) = c.api_h(&key, m.clone(), &path, body).await;
            (!allowed.contains(&st.as_u16())).then(|| format!("{m} {path} → {st} {v}"))
        }
    });
    join_all(runs).await.into_iter().flatten().collect()
}

async fn patch_racing_delete_is_not_found_never_internal(backend: Backend) {
    let c = Arc::new(Cell::start(backend).await);
    let app = c.app(Limits::default()).await;
    let mut fails = Vec::new();
    for round in 0..5 {
        let users: Vec<String> = (0..20).map(|i| format!("r{round}u{i}")).collect();
        for u in &users {
            c.user(&app, u).await;
        }
        let mut calls: Vec<Call> = Vec::new();
        for u in &users {
            let p = format!("/v1/users/{u}");
            calls.push((
                Method::PATCH,
                p.clone(),
                Some(json!({"name": "x"})),
                &[200, 404],
            ));
            calls.push((Method::DELETE, p.clone(), None, &[204, 404]));
            calls.push((
                Method::PATCH,
                p.clone(),
                Some(json!({"name": "y"})),
                &[200, 404],
            ));
            calls.push((
                Method::PUT,
                p.clone(),
                Some(json!({"name": "z"})),
                &[200, 201],
            ));
            calls.push((Method::DELETE, p.clone(), None, &[204, 404]));
            calls.push((
                Method::POST,
                format!("{p}/ban"),
                Some(json!({"reason": "race"})),
                &[200, 404],
            ));
        }
        fails.extend(storm(&c, &app, calls, 12).await);
        for u in &users {
            let (st, _) = c
                .api(
                    &app,
                    Method::PATCH,
                    &format!("/v1/users/{u}"),
                    Some(json!({})),
                )
                .await;
            assert!(st == StatusCode::OK || st == StatusCode::NOT_FOUND, "{st}");
        }
    }
    assert!(
        fails.is_empty(),
        "{} failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
    // A PATCH of a user who never was is `not_found` as well.
    let (st, v) = c
        .api(&app, Method::PATCH, "/v1/users/never-was", Some(json!({})))
        .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (404, Some("not_found")));
}

/// Every write route of the server API that this node serves itself, all at once, over and
/// over (the webhook endpoint routes write in the control plane: its tests and the console's
/// cover those).
async fn every_write_route_at_once_answers_no_5xx(backend: Backend) {
    let c = Arc::new(Cell::start(backend).await);
    let app = c.app(Limits::default()).await;
    let users: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    for u in &users {
        c.user(&app, u).await;
    }
    let mut fails = Vec::new();
    for round in 0..8 {
        // Fresh targets for the destructive calls of this round.
        let group = c
            .conversation(
                &app,
                json!({"kind": "group", "members": users, "created_by": "w0", "name": "g"}),
            )
            .await;
        let doomed = c
            .conversation(
                &app,
                json!({"kind": "group", "members": ["w1", "w2"], "name": "d"}),
            )
            .await;
        let mut msgs = Vec::new();
        for i in 0..4 {
            let m = c
                .ok(
                    &app,
                    Method::POST,
                    &format!("/v1/conversations/{group}/messages"),
                    Some(json!({"sender_id": users[i % users.len()], "text": format!("m{i}")})),
                )
                .await;
            msgs.push(m["message"]["id"].as_str().unwrap().to_owned());
        }
        let gone = format!("gone{round}");
        c.user(&app, &gone).await;
        let conv = format!("/v1/conversations/{group}");
        let mut calls: Vec<Call> = vec![
            (
                Method::DELETE,
                format!("/v1/conversations/{doomed}"),
                None,
                &[204],
            ),
            (Method::DELETE, format!("/v1/users/{gone}"), None, &[204]),
            (
                Method::PATCH,
                conv.clone(),
                Some(json!({"name": "renamed"})),
                &[200],
            ),
            (
                Method::POST,
                "/v1/conversations".into(),
                Some(json!({"kind": "direct", "members": ["w3", "w4"]})),
                &[200, 201],
            ),
            (
                Method::POST,
                "/v1/conversations".into(),
                Some(json!({"kind": "group", "members": ["w5", "w6"], "name": "n"})),
                &[201],
            ),
            (
                Method::POST,
                format!("{conv}/members"),
                Some(json!({"user_ids": [gone.clone(), "w7"]})),
                // `gone` is deleted at the same time: before (422, naming it) or after.
                &[200, 201, 422],
            ),
            (
                Method::PATCH,
                format!("{conv}/members/w5"),
                Some(json!({"role": "admin"})),
                &[200],
            ),
            (
                Method::DELETE,
                format!("{conv}/members/w6"),
                None,
                &[204, 404],
            ),
            (
                Method::POST,
                format!("{conv}/read"),
                Some(json!({"user_id": "w1", "seq": 2})),
                &[200, 204],
            ),
            (
                Method::PATCH,
                format!("{conv}/messages/{}", msgs[0]),
                Some(json!({"text": "edited"})),
                &[200],
            ),
            (
                Method::DELETE,
                format!("{conv}/messages/{}", msgs[1]),
                None,
                &[200, 204],
            ),
            (
                Method::POST,
                format!("{conv}/messages/{}/reactions", msgs[2]),
                Some(json!({"user_id": "w2", "emoji": "👍"})),
                &[200, 201],
            ),
            (
                Method::DELETE,
                format!(
                    "{conv}/messages/{}/reactions/%F0%9F%91%8D?user_id=w2",
                    msgs[2]
                ),
                None,
                &[200, 204, 404],
            ),
            (
                Method::POST,
                "/v1/webhooks/replay".into(),
                Some(json!({"since": "2020-01-01T00:00:00Z"})),
                &[200],
            ),
        ];
        for (i, u) in users.iter().enumerate() {
            let p = format!("/v1/users/{u}");
            calls.push((
                Method::PUT,
                p.clone(),
                Some(json!({"name": format!("n{round}")})),
                &[200],
            ));
            calls.push((
                Method::PATCH,
                p.clone(),
                Some(json!({"metadata": {"r": round}})),
                &[200],
            ));
            calls.push((Method::POST, format!("{p}/tokens"), Some(json!({})), &[201]));
            // Senders whose membership and standing no call of the round changes.
            if i < 5 {
                calls.push((
                    Method::POST,
                    format!("{conv}/messages"),
                    Some(json!({"sender_id": u, "text": format!("{round}-{i}")})),
                    &[200, 201],
                ));
            }
            if i == 7 {
                calls.push((Method::POST, format!("{p}/deactivate"), None, &[200]));
                calls.push((Method::POST, format!("{p}/reactivate"), None, &[200]));
                calls.push((Method::POST, format!("{p}/ban"), Some(json!({})), &[200]));
                calls.push((Method::DELETE, format!("{p}/ban"), None, &[200]));
            }
        }
        fails.extend(storm(&c, &app, calls, 16).await);
    }
    assert!(
        fails.is_empty(),
        "{} failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

mod patch_racing_delete {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::patch_racing_delete_is_not_found_never_internal(crate::harness::Backend::Sqlite)
            .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::patch_racing_delete_is_not_found_never_internal(crate::harness::Backend::Postgres)
            .await;
    }
}

mod write_routes_at_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::every_write_route_at_once_answers_no_5xx(crate::harness::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::every_write_route_at_once_answers_no_5xx(crate::harness::Backend::Postgres).await;
    }
}

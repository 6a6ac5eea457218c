//! Faults injected where a message could be lost, stored twice or stalled: a connection cut
//! right after the committer's `COMMIT` reached PostgreSQL, a `COMMIT` that hangs, a
//! conversation row locked by another session. PostgreSQL only: these are its failure modes
//! (SQLite is one file in the node's process).

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use starling_core::db::Timeouts;
use starling_core::limits::Limits;

use crate::harness::{Cell, TestApp};
use crate::pgproxy::{Fault, PgProxy};

fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    )
}

async fn send(c: &Cell, app: &TestApp, cid: &str, body: Value) -> (StatusCode, Value) {
    c.api(
        app,
        Method::POST,
        &format!("/v1/conversations/{cid}/messages"),
        Some(body),
    )
    .await
}

/// Every stored message of a conversation: its text, oldest first.
async fn texts(c: &Cell, app: &TestApp, cid: &str) -> Vec<String> {
    c.history(app, cid)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_after_postgres_committed_stores_each_message_once() {
    let proxy = PgProxy::start(&pg_url()).await;
    let c = Cell::start_on_database(&proxy.url, Timeouts::default(), |_| {}).await;
    let app = c.app(Limits::default()).await;
    let cid = c.alice_and_bob(&app).await;
    proxy.set(Fault::CutAfterCommit);
    // No client_msg_id: nothing but the server can tell a retry from a new message.
    let n = 6;
    let answers = join_all((0..n).map(|i| {
        let (c, app, cid) = (&c, &app, &cid);
        async move {
            send(
                c,
                app,
                cid,
                json!({"sender_id": "alice", "text": format!("m{i}")}),
            )
            .await
        }
    }))
    .await;
    proxy.set(Fault::None);
    assert!(
        proxy.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the proxy cut no committer COMMIT: the test did not inject its fault"
    );
    let mut got = texts(&c, &app, &cid).await;
    got.sort();
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "each message stored exactly once");
    for (i, (s, v)) in answers.iter().enumerate() {
        assert_eq!(
            *s,
            StatusCode::CREATED,
            "send {i}: its message is stored, so it is answered as sent: {v}"
        );
    }
    let seqs: Vec<i64> = answers
        .iter()
        .map(|(_, v)| v["message"]["seq"].as_i64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=n as i64).collect::<Vec<_>>(),
        "acks carry the stored seqs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_hangs_is_given_up_within_the_commit_timeout() {
    let proxy = PgProxy::start(&pg_url()).await;
    let c = Cell::start_on_database(&proxy.url, Timeouts::default(), |g| {
        g.commit_timeout_ms = 1500;
    })
    .await;
    let app = c.app(Limits::default()).await;
    let cid = c.alice_and_bob(&app).await;
    proxy.set(Fault::HangAtCommit);
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        send(
            &c,
            &app,
            &cid,
            json!({"sender_id": "alice", "client_msg_id": "hung", "text": "hello"}),
        ),
    )
    .await;
    let took = t0.elapsed();
    proxy.set(Fault::None);
    let (s, v) = r.expect("the send was answered within 10 s (the committer gave up)");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(
        took < Duration::from_millis(3500),
        "answered {took:?} after the send; the commit timeout is 1.5 s"
    );
    // The committer is free again: the retry with the same client_msg_id, and a new message,
    // are written; the held COMMIT went through when released, so the retry is its duplicate
    // or the one stored copy — never a second copy.
    let (s, v) = send(
        &c,
        &app,
        &cid,
        json!({"sender_id": "alice", "client_msg_id": "hung", "text": "hello"}),
    )
    .await;
    assert!(s.is_success(), "{s}: {v}");
    let (s, v) = send(&c, &app, &cid, json!({"sender_id": "bob", "text": "after"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let got = texts(&c, &app, &cid).await;
    assert_eq!(
        got.iter().filter(|t| *t == "hello").count(),
        1,
        "stored once: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_conversation_fails_alone_within_the_lock_timeout() {
    let timeouts = Timeouts {
        statement_ms: 30_000,
        lock_ms: 300,
    };
    let c = Cell::start_on_database(&pg_url(), timeouts, |g| g.commit_timeout_ms = 3000).await;
    // The locked tenant's quota: one message this month. A send that fails must not use it.
    let locked = c
        .app(Limits {
            messages_per_month: Some(1),
            ..Default::default()
        })
        .await;
    let other = c.app(Limits::default()).await;
    let stuck = c.alice_and_bob(&locked).await;
    let fine = c.alice_and_bob(&other).await;

    // Another session holds the conversation's row, as a stuck transaction would.
    let db = starling_core::db::connect(&pg_url(), 1).await.unwrap();
    let holder = starling_core::db::begin_write(&db).await.unwrap();
    holder
        .execute_unprepared(&format!(
            "SELECT 1 FROM conversation WHERE app_id = '{}' AND id = '{stuck}' FOR UPDATE",
            locked.cfg.app_id
        ))
        .await
        .unwrap();

    let t0 = Instant::now();
    let blocked = async {
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            send(
                &c,
                &locked,
                &stuck,
                json!({"sender_id": "alice", "text": "stuck"}),
            ),
        )
        .await;
        (r, t0.elapsed())
    };
    let others = async {
        // Give the stuck send a head start so it is in the committer first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        join_all((0..10).map(|i| {
            let (c, other, fine) = (&c, &other, &fine);
            async move {
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(15),
                    send(
                        c,
                        other,
                        fine,
                        json!({"sender_id": "bob", "text": format!("ok{i}")}),
                    ),
                )
                .await;
                (r, t.elapsed())
            }
        }))
        .await
    };
    let ((r, took), rest) = tokio::join!(blocked, others);
    let (s, v) = r.expect("the send to the locked conversation was answered within 15 s");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(
        took < Duration::from_millis(3500),
        "the locked send took {took:?}; lock_timeout 0.3 s, commit timeout 3 s"
    );
    for (i, (r, took)) in rest.into_iter().enumerate() {
        let (s, v) = r.unwrap_or_else(|_| panic!("another tenant's send {i} hung"));
        assert_eq!(s, StatusCode::CREATED, "another tenant's send {i}: {v}");
        assert!(
            took < Duration::from_millis(3500),
            "another tenant's send {i} took {took:?}"
        );
    }
    holder.rollback().await.unwrap();
    // The failed send did not count against the quota: the month's one message is still free.
    let (s, v) = send(
        &c,
        &locked,
        &stuck,
        json!({"sender_id": "alice", "text": "now"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(texts(&c, &locked, &stuck).await, vec!["now".to_owned()]);
    assert_eq!(texts(&c, &other, &fine).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_racing_a_delete_never_restores_the_text() {
    let c = Cell::start(crate::harness::Backend::Postgres).await;
    let app = c.app(Limits::default()).await;
    let cid = c.alice_and_bob(&app).await;
    let (s, v) = send(
        &c,
        &app,
        &cid,
        json!({"sender_id": "alice", "text": "secret"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mid = v["message"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{cid}/messages/{mid}");

    // Line the two up deterministically: another session holds the row, the delete reads it
    // and waits for the row, then the edit reads it (not deleted yet) and waits behind the
    // delete. Released, the delete commits first and the edit writes after it.
    let db = starling_core::db::connect(&pg_url(), 1).await.unwrap();
    let holder = starling_core::db::begin_write(&db).await.unwrap();
    holder
        .execute_unprepared(&format!(
            "SELECT 1 FROM message WHERE app_id = '{}' AND id = '{mid}' FOR UPDATE",
            app.cfg.app_id
        ))
        .await
        .unwrap();
    let delete = c.api(&app, Method::DELETE, &path, None);
    let edit = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.api(
            &app,
            Method::PATCH,
            &path,
            Some(json!({"text": "restored"})),
        )
        .await
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        holder.rollback().await.unwrap();
    };
    let ((ds, dv), (es, ev), ()) = tokio::join!(delete, edit, release);
    assert_eq!(ds, StatusCode::OK, "{dv}");
    let got = c
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages"),
            None,
        )
        .await;
    let m = &got["messages"][0];
    assert_eq!(m["deleted"], true, "{m}");
    assert_eq!(
        m["text"],
        Value::Null,
        "a deleted message keeps no text: {m}"
    );
    assert_eq!(
        es,
        StatusCode::CONFLICT,
        "the edit lost to the delete: {ev}"
    );
}

//! The message path: delivery to every device, order, idempotency, edits, deletes, reactions,
//! threads, read receipts, typing, presence, sync after a disconnect.
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

backend_tests!(
    every_device_of_every_member_gets_every_message_in_order,
    retries_are_idempotent,
    edit_delete_reactions_threads,
    receipts_typing_presence,
    presence_audience_is_direct_and_group_contacts_of_the_app,
    a_node_pushes_a_conversations_messages_in_seq_order,
    sync_returns_exactly_the_missed_messages,
);

async fn every_device_of_every_member_gets_every_message_in_order(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    for u in ["alice", "bob", "carol"] {
        cell.user(&app, u).await;
    }
    let cid = cell
        .conversation(&app, json!({"kind": "group", "created_by": "alice", "members": ["bob", "carol"], "name": "trio"}))
        .await;
    let mut a1 = cell.ws(&app, "alice").await;
    let mut a2 = cell.ws(&app, "alice").await;
    let mut b1 = cell.ws(&app, "bob").await;
    let mut b2 = cell.ws(&app, "bob").await;
    let mut c1 = cell.ws(&app, "carol").await;

    let n = 20;
    for i in 0..n {
        let r = a1.ok(json!({"type": "send", "conversation_id": cid, "client_msg_id": format!("m{i}"), "text": format!("hello {i}")})).await;
        assert_eq!(r["message"]["seq"], i + 1, "acked with its seq");
        assert_eq!(r["duplicate"], false);
    }
    // A system message from the backend too.
    let sys = cell
        .ok(
            &app,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({"text": "welcome"})),
        )
        .await;
    assert_eq!(sys["message"]["kind"], "system");
    assert_eq!(sys["message"]["sender_id"], Value::Null);

    for (name, ws) in [
        ("a1", &mut a1),
        ("a2", &mut a2),
        ("b1", &mut b1),
        ("b2", &mut b2),
        ("c1", &mut c1),
    ] {
        let mut seqs = Vec::new();
        while seqs.len() < n + 1 {
            let e = ws.event("message.new").await;
            seqs.push(e["message"]["seq"].as_i64().unwrap());
        }
        let want: Vec<i64> = (1..=(n as i64 + 1)).collect();
        assert_eq!(seqs, want, "{name} got every message once, in order");
        ws.none(|f| f["type"] == "message.new", Duration::from_millis(200))
            .await;
    }
    let seqs: Vec<i64> = cell
        .history(&app, &cid)
        .await
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>(), "history is gap-free");
    let newest = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages?limit=5"),
            None,
        )
        .await;
    assert_eq!(newest["messages"][0]["seq"], 21, "newest first by default");
    assert_eq!(newest["has_more"], true);
}

async fn retries_are_idempotent(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let again = cell
        .ok(
            &app,
            Method::POST,
            "/v1/conversations",
            Some(json!({"kind": "direct", "members": ["bob", "alice"]})),
        )
        .await;
    assert_eq!(again["id"], cid, "one direct conversation per pair");

    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    let frame =
        json!({"type": "send", "conversation_id": cid, "client_msg_id": "same", "text": "once"});
    let r1 = a.ok(frame.clone()).await;
    let r2 = a.ok(frame.clone()).await;
    assert_eq!(
        r1["message"]["id"], r2["message"]["id"],
        "the retry returns the original"
    );
    assert_eq!(r2["duplicate"], true);
    // Over REST with the same key, too.
    let (st, r3) = cell
        .api(
            &app,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({"sender_id": "alice", "client_msg_id": "same", "text": "once"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(r3["message"]["id"], r1["message"]["id"]);
    bob.event("message.new").await;
    bob.none(|f| f["type"] == "message.new", Duration::from_millis(300))
        .await;
    let hist = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages"),
            None,
        )
        .await;
    assert_eq!(hist["messages"].as_array().unwrap().len(), 1);
}

async fn edit_delete_reactions_threads(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    let m = a.ok(json!({"type": "send", "conversation_id": cid, "text": "typo", "mentions": ["bob"],
        "attachments": [{"url": "https://cdn.example.com/a.png", "type": "image/png", "size": 1234}]})).await["message"].clone();
    let mid = m["id"].as_str().unwrap();
    assert_eq!(m["attachments"][0]["type"], "image/png");
    bob.event("message.new").await;

    let r = bob
        .request(
            json!({"type": "edit", "conversation_id": cid, "message_id": mid, "text": "hijack"}),
        )
        .await;
    assert_eq!(r["code"], "forbidden", "only the sender edits: {r}");
    let e = a
        .ok(json!({"type": "edit", "conversation_id": cid, "message_id": mid, "text": "fixed"}))
        .await;
    assert!(e["message"]["edited_at"].is_string());
    let up = bob.event("message.updated").await;
    assert_eq!(up["message"]["text"], "fixed");

    let r = bob
        .ok(json!({"type": "react", "conversation_id": cid, "message_id": mid, "emoji": "👍"}))
        .await;
    assert_eq!(r["reactions"], json!({"👍": 1}));
    a.ok(json!({"type": "react", "conversation_id": cid, "message_id": mid, "emoji": "👍"}))
        .await;
    let ev = a
        .expect(
            |f| f["type"] == "reaction.added" && f["user_id"] == "alice",
            "alice's reaction",
        )
        .await;
    assert_eq!(ev["reactions"], json!({"👍": 2}));
    bob.ok(json!({"type": "react", "conversation_id": cid, "message_id": mid, "emoji": "👍", "remove": true})).await;
    let ev = a.event("reaction.removed").await;
    assert_eq!(ev["reactions"], json!({"👍": 1}));

    let reply = bob
        .ok(json!({"type": "send", "conversation_id": cid, "text": "in thread", "parent_id": mid}))
        .await;
    assert_eq!(reply["message"]["parent_id"], mid);
    let parent = a
        .expect(
            |f| {
                f["type"] == "message.updated"
                    && f["message"]["id"] == mid
                    && f["message"]["reply_count"] == 1
            },
            "thread count",
        )
        .await;
    assert_eq!(parent["message"]["reactions"], json!({"👍": 1}));
    let replies = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages/{mid}/replies"),
            None,
        )
        .await;
    assert_eq!(replies["messages"].as_array().unwrap().len(), 1);
    let r = a.request(json!({"type": "send", "conversation_id": cid, "text": "x", "parent_id": reply["message"]["id"]})).await;
    assert_eq!(r["code"], "validation_failed", "no nested threads: {r}");

    let d = a
        .ok(json!({"type": "delete", "conversation_id": cid, "message_id": mid}))
        .await;
    assert_eq!(d["message"]["deleted"], true);
    let del = bob.event("message.deleted").await;
    assert_eq!(del["message"]["text"], Value::Null);
    assert_eq!(del["message"]["seq"], 1, "the tombstone keeps its seq");
    let hist = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages?order=asc"),
            None,
        )
        .await;
    assert_eq!(hist["messages"][0]["deleted"], true);
    assert_eq!(hist["messages"][0]["reactions"], json!({}));
    let r = a
        .request(
            json!({"type": "edit", "conversation_id": cid, "message_id": mid, "text": "again"}),
        )
        .await;
    assert_eq!(r["code"], "conflict");
}

async fn receipts_typing_presence(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    let p = a
        .expect(
            |f| f["type"] == "presence" && f["user_id"] == "bob",
            "bob online",
        )
        .await;
    assert_eq!(p["online"], true);
    let u = cell.ok(&app, Method::GET, "/v1/users/bob", None).await;
    assert_eq!(u["online"], true);

    for i in 0..3 {
        a.ok(json!({"type": "send", "conversation_id": cid, "text": format!("m{i}")}))
            .await;
    }
    let convs = cell
        .ok(&app, Method::GET, "/v1/users/bob/conversations", None)
        .await;
    assert_eq!(convs["data"][0]["unread_count"], 3);
    assert_eq!(convs["data"][0]["last_message"]["text"], "m2");

    let r = bob
        .ok(json!({"type": "read", "conversation_id": cid, "seq": 2}))
        .await;
    assert_eq!(r["last_read_seq"], 2);
    let receipt = a.event("read").await;
    assert_eq!(
        (receipt["user_id"].as_str(), receipt["seq"].as_i64()),
        (Some("bob"), Some(2))
    );
    let r = bob
        .ok(json!({"type": "read", "conversation_id": cid, "seq": 1}))
        .await;
    assert_eq!(r["last_read_seq"], 2, "read state never goes back");
    let convs = cell
        .ok(&app, Method::GET, "/v1/users/bob/conversations", None)
        .await;
    assert_eq!(convs["data"][0]["unread_count"], 1);

    bob.ok(json!({"type": "typing", "conversation_id": cid, "state": "start"}))
        .await;
    let t = a.event("typing").await;
    assert_eq!(
        (t["user_id"].as_str(), t["state"].as_str()),
        (Some("bob"), Some("start"))
    );
    let r = bob
        .request(json!({"type": "typing", "conversation_id": cid, "state": "maybe"}))
        .await;
    assert_eq!(r["code"], "validation_failed");

    bob.close().await;
    let p = a
        .expect(
            |f| f["type"] == "presence" && f["user_id"] == "bob" && f["online"] == false,
            "bob offline",
        )
        .await;
    assert!(p["last_seen_at"].is_string());
    let u = cell.ok(&app, Method::GET, "/v1/users/bob", None).await;
    assert_eq!(u["online"], false);
    assert!(u["last_seen_at"].is_string());
}

/// Presence goes to the people a user shares a direct or group conversation with: not to a
/// room's members, not to the same user ids in another app.
async fn presence_audience_is_direct_and_group_contacts_of_the_app(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    let other = cell.app(Limits::default()).await;
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        cell.user(&app, u).await;
        cell.user(&other, u).await;
    }
    cell.conversation(&app, json!({"kind": "direct", "members": ["alice", "bob"]}))
        .await;
    cell.conversation(
        &app,
        json!({"kind": "group", "created_by": "alice", "members": ["carol", "bob"], "name": "g"}),
    )
    .await;
    cell.conversation(
        &app,
        json!({"kind": "room", "created_by": "alice", "members": ["dave"], "name": "r"}),
    )
    .await;
    cell.conversation(
        &other,
        json!({"kind": "direct", "members": ["alice", "erin"]}),
    )
    .await;
    let m = &cell.node.messaging;
    let a = cfg_id(&app);
    assert_eq!(m.contacts(&a, "alice").await.unwrap(), ["bob", "carol"]);
    assert_eq!(m.contacts(&a, "dave").await.unwrap(), Vec::<String>::new());
    assert_eq!(m.contacts(&a, "erin").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        m.contacts(&cfg_id(&other), "alice").await.unwrap(),
        ["erin"]
    );

    // And it is what a contact hears: carol (group) learns alice is online, dave (room) not.
    let mut carol = cell.ws(&app, "carol").await;
    let mut dave = cell.ws(&app, "dave").await;
    let _alice = cell.ws(&app, "alice").await;
    carol
        .expect(
            |f| f["type"] == "presence" && f["user_id"] == "alice" && f["online"] == true,
            "alice online at carol",
        )
        .await;
    dave.none(
        |f| f["type"] == "presence" && f["user_id"] == "alice",
        Duration::from_millis(500),
    )
    .await;
}

fn cfg_id(app: &crate::harness::TestApp) -> String {
    app.cfg.app_id.to_string()
}

/// Two senders (on two nodes, say) commit seq 3 and 2 of a conversation and publish 3 first:
/// the receiving node pushes them in seq order. A gap that does not fill is given up after the
/// reorder window, and what waited goes out.
async fn a_node_pushes_a_conversations_messages_in_seq_order(b: Backend) {
    use starling_data_plane::bus::{Delivery, Order};
    use starling_data_plane::sequencer::REORDER_WINDOW;
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    cell.user(&app, "bob").await;
    let mut bob = cell.ws(&app, "bob").await;
    let a = cfg_id(&app);
    let m = &cell.node.messaging;
    let at = m.registry.locate(&a, &["bob".to_owned()]).await.unwrap();
    let node = at
        .keys()
        .next()
        .expect("bob is connected somewhere")
        .clone();
    let publish = |seq: i64| {
        let d = Delivery {
            app_id: a.clone(),
            users: vec!["bob".into()],
            frame:
                json!({"type": "message.new", "message": {"conversation_id": "conv", "seq": seq}})
                    .to_string()
                    .into(),
            trace: None,
            order: Some(Order {
                conversation_id: "conv".into(),
                seq,
            }),
            end: None,
        };
        let (bus, node) = (m.bus.clone(), node.clone());
        async move { bus.publish(&node, d).await.unwrap() }
    };
    let mut next_seq = async || {
        let f = bob.event("message.new").await;
        f["message"]["seq"].as_i64().unwrap()
    };
    for seq in [1, 3, 4, 2] {
        publish(seq).await;
    }
    let mut got = vec![];
    for _ in 0..4 {
        got.push(next_seq().await);
    }
    assert_eq!(got, [1, 2, 3, 4]);

    let t = std::time::Instant::now();
    publish(6).await;
    assert_eq!(next_seq().await, 6, "seq 5 never came: 6 goes anyway");
    assert!(
        t.elapsed() >= REORDER_WINDOW,
        "6 went after {:?}",
        t.elapsed()
    );
}

async fn sync_returns_exactly_the_missed_messages(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    a.ok(json!({"type": "send", "conversation_id": cid, "text": "before"}))
        .await;
    let last = bob.event("message.new").await["message"]["seq"]
        .as_i64()
        .unwrap();
    bob.close().await;
    for i in 0..5 {
        a.ok(json!({"type": "send", "conversation_id": cid, "text": format!("missed {i}")}))
            .await;
    }
    let mut bob = cell.ws(&app, "bob").await;
    let r = bob
        .ok(json!({"type": "sync", "conversation_id": cid, "after_seq": last}))
        .await;
    let texts: Vec<&str> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"]
    );
    assert_eq!(r["has_more"], false);
    let r = bob
        .ok(json!({"type": "sync", "conversation_id": cid, "after_seq": last, "limit": 2}))
        .await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 2);
    assert_eq!(r["has_more"], true);
}

/// `gateway.write_delay_ms`: a quiet connection is written at once; a busy one at most once per
/// delay, and its frames arrive together, all of them, in order. (The writer does not depend on
/// the backend, so SQLite is enough.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_delay_batches_a_busy_connection_and_spares_a_quiet_one() {
    let cell = Cell::start_with(Backend::Sqlite, |g| g.write_delay_ms = 1000).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut bob = cell.ws(&app, "bob").await;
    let send = |text: String| {
        let (cell, app, cid) = (&cell, &app, cid.clone());
        async move {
            cell.ok(
                app,
                Method::POST,
                &format!("/v1/conversations/{cid}/messages"),
                Some(json!({"sender_id": "alice", "text": text})),
            )
            .await
        }
    };
    // Bob's own presence follows his hello, and so is written a second later. Once that
    // last write is over a second old, the next frame goes out at once.
    bob.expect(
        |f| f["type"] == "presence" && f["user_id"] == "bob",
        "bob's own presence",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sent = std::time::Instant::now();
    send("first".into()).await;
    let first = bob.event("message.new").await;
    let first_at = std::time::Instant::now();
    assert_eq!(first["message"]["text"], "first");
    assert!(
        first_at - sent < Duration::from_millis(700),
        "a quiet connection waited {:?}",
        first_at - sent
    );
    // Now bob's connection is busy: the next frames wait for the rest of the second, together.
    for i in 0..5 {
        send(format!("burst {i}")).await;
    }
    let mut seqs = vec![];
    for i in 0..5 {
        let f = bob.event("message.new").await;
        if i == 0 {
            let gap = std::time::Instant::now() - first_at;
            assert!(
                gap > Duration::from_millis(800),
                "a busy connection was written again after {gap:?}"
            );
        }
        assert_eq!(f["message"]["text"], format!("burst {i}"));
        seqs.push(f["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
}

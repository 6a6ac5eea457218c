//! Bad input over both doors: clear errors, and nothing else breaks. Plus users over REST,
//! groups, rooms and limits.
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

backend_tests!(
    bad_frames_get_error_frames_and_the_connection_lives,
    users_groups_rooms_and_limits
);

async fn bad_frames_get_error_frames_and_the_connection_lives(b: Backend) {
    let cell = Cell::start_with(b, |g| g.max_frame_bytes = 4096).await;
    let app = cell
        .app(Limits {
            max_message_bytes: Some(1000),
            ..Default::default()
        })
        .await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;

    a.raw("{not json").await;
    let e = a.event("error").await;
    assert_eq!(e["code"], "invalid_json");
    a.raw(r#"{"type": "teleport", "id": "x1"}"#).await;
    let e = a
        .expect(|f| f["type"] == "error" && f["id"] == "x1", "unknown type")
        .await;
    assert_eq!(e["code"], "invalid_frame");
    assert!(e["message"].as_str().unwrap().contains("teleport"), "{e}");
    a.raw(r#"{"type": "read", "id": "x2", "conversation_id": 5, "seq": "x"}"#)
        .await;
    assert_eq!(
        a.expect(|f| f["id"] == "x2", "wrong types").await["code"],
        "invalid_frame"
    );
    a.raw(r#"{"type": "send", "id": "x3", "conversation_id": "c", "text": "x", "colour": 1}"#)
        .await;
    assert_eq!(
        a.expect(|f| f["id"] == "x3", "unknown field").await["code"],
        "invalid_frame"
    );
    let r = a
        .request(json!({"type": "send", "conversation_id": cid, "text": "x".repeat(2000)}))
        .await;
    assert_eq!(
        r["code"], "payload_too_large",
        "quota max_message_bytes: {r}"
    );
    assert!(r["message"].as_str().unwrap().contains("1000"));
    let r = a
        .request(json!({"type": "send", "conversation_id": cid}))
        .await;
    assert_eq!(r["code"], "validation_failed");
    let r = a.request(json!({"type": "send", "conversation_id": cid, "text": "x", "client_msg_id": "y".repeat(65)})).await;
    assert_eq!(r["code"], "validation_failed");
    let r = a
        .request(json!({"type": "send", "conversation_id": "cnv_nope", "text": "x"}))
        .await;
    assert_eq!(r["code"], "not_found");
    // Still alive and well.
    assert_eq!(a.ok(json!({"type": "ping"})).await["pong"], true);
    a.ok(json!({"type": "send", "conversation_id": cid, "text": "still here"}))
        .await;
    assert_eq!(
        bob.event("message.new").await["message"]["text"],
        "still here"
    );

    // A frame over the size limit closes that connection (1009) and only that one.
    a.raw(&format!(
        r#"{{"type": "ping", "pad": "{}"}}"#,
        "p".repeat(8000)
    ))
    .await;
    let closed = a.expect(|f| f["type"] == "__close", "close").await;
    assert!(closed["code"] == 1009 || closed["code"] == 1006, "{closed}");
    assert_eq!(bob.ok(json!({"type": "ping"})).await["pong"], true);
    let mut a2 = cell.ws(&app, "alice").await;
    a2.ok(json!({"type": "send", "conversation_id": cid, "text": "reconnected"}))
        .await;

    // REST: bad JSON and bad fields are named.
    let (st, v) = cell
        .api(
            &app,
            Method::POST,
            "/v1/conversations",
            Some(json!({"kind": "triangle"})),
        )
        .await;
    assert_eq!((st.as_u16(), v["field"].as_str()), (422, Some("kind")));
    let (st, v) = cell
        .api(
            &app,
            Method::POST,
            "/v1/conversations",
            Some(json!({"kind": "direct", "members": ["alice", "ghost"]})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["field"].as_str()),
        (422, Some("members[1]"))
    );
    let (st, v) = cell
        .api(&app, Method::PUT, "/v1/users/bad%20id", Some(json!({})))
        .await;
    assert_eq!((st.as_u16(), v["field"].as_str()), (422, Some("id")));
    let (st, v) = cell
        .api(
            &app,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages?limit=500"),
            None,
        )
        .await;
    assert_eq!((st.as_u16(), v["field"].as_str()), (400, Some("limit")));
}

async fn users_groups_rooms_and_limits(b: Backend) {
    let cell = Cell::start(b).await;
    let app = cell
        .app(Limits {
            max_group_members: Some(3),
            concurrent_connections: Some(3),
            ..Default::default()
        })
        .await;
    for u in ["u1", "u2", "u3", "u4"] {
        cell.user(&app, u).await;
    }
    // Users: upsert semantics, list, deactivate, ban.
    let (st, u) = cell
        .api(
            &app,
            Method::PUT,
            "/v1/users/u1",
            Some(json!({"name": "One", "metadata": {"plan": "gold"}})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(u["metadata"]["plan"], "gold");
    let page = cell.ok(&app, Method::GET, "/v1/users?limit=2", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/users?limit=2&cursor={next}"),
            None,
        )
        .await;
    assert_eq!(page2["data"][0]["id"], "u3");

    // Group size from the plan.
    let (st, v) = cell
        .api(
            &app,
            Method::POST,
            "/v1/conversations",
            Some(json!({"kind": "group", "created_by": "u1", "members": ["u2", "u3", "u4"]})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (429, Some("quota_exceeded"))
    );
    let g = cell
        .conversation(
            &app,
            json!({"kind": "group", "created_by": "u1", "members": ["u2", "u3"]}),
        )
        .await;
    let (st, v) = cell
        .api(
            &app,
            Method::POST,
            &format!("/v1/conversations/{g}/members"),
            Some(json!({"user_ids": ["u4"]})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (429, Some("quota_exceeded"))
    );
    let members = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{g}/members"),
            None,
        )
        .await;
    let owner = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "u1")
        .unwrap();
    assert_eq!(owner["role"], "owner");

    // Mute, then the muted member cannot post.
    let mut u2 = cell.ws(&app, "u2").await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    cell.ok(
        &app,
        Method::PATCH,
        &format!("/v1/conversations/{g}/members/u2"),
        Some(json!({"muted_until": until})),
    )
    .await;
    let r = u2
        .request(json!({"type": "send", "conversation_id": g, "text": "hi"}))
        .await;
    assert_eq!(r["code"], "forbidden");
    assert!(r["message"].as_str().unwrap().contains("muted"));

    // Rooms: anyone joins; an announcement room lets only admins post.
    let room = cell
        .conversation(
            &app,
            json!({"kind": "room", "created_by": "u1", "name": "news", "post_policy": "admins"}),
        )
        .await;
    let mut u3 = cell.ws(&app, "u3").await;
    u3.ok(json!({"type": "subscribe", "conversation_id": room}))
        .await;
    let r = u3
        .request(json!({"type": "send", "conversation_id": room, "text": "me too"}))
        .await;
    assert_eq!(r["code"], "forbidden");
    let mut u1 = cell.ws(&app, "u1").await;
    u1.ok(json!({"type": "send", "conversation_id": room, "text": "announcement"}))
        .await;
    assert_eq!(
        u3.event("message.new").await["message"]["text"],
        "announcement"
    );
    u3.ok(json!({"type": "unsubscribe", "conversation_id": room}))
        .await;
    u1.ok(json!({"type": "send", "conversation_id": room, "text": "second"}))
        .await;
    u3.none(
        |f| f["type"] == "message.new" && f["message"]["text"] == "second",
        Duration::from_millis(300),
    )
    .await;
    let r = u3
        .request(json!({"type": "subscribe", "conversation_id": g}))
        .await;
    assert_eq!(r["code"], "forbidden", "groups are not joined freely");

    // The app's connection quota: 3 open now (u2, u3, u1); a fourth is refused with 429.
    match cell.ws_with_token(&cell.token(&app, "u4").await).await {
        Err((st, body)) => {
            assert_eq!(st, 429, "{body}");
            assert!(body.contains("quota_exceeded"));
        }
        Ok(_) => panic!("a fourth connection was accepted"),
    }

    // Deactivated and banned users cannot connect; GDPR delete erases their messages.
    u1.ok(json!({"type": "send", "conversation_id": g, "text": "personal data"}))
        .await;
    cell.ok(&app, Method::POST, "/v1/users/u3/deactivate", None)
        .await;
    assert_eq!(
        cell.ws_with_token(&cell.token(&app, "u3").await)
            .await
            .err()
            .map(|e| e.0),
        Some(403)
    );
    cell.ok(&app, Method::POST, "/v1/users/u3/reactivate", None)
        .await;
    cell.ok(
        &app,
        Method::POST,
        "/v1/users/u4/ban",
        Some(json!({"reason": "spam"})),
    )
    .await;
    let (st, v) = cell.api(&app, Method::GET, "/v1/users/u4", None).await;
    assert_eq!((st.as_u16(), v["banned"].as_bool()), (200, Some(true)));
    u2.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        cell.ws_with_token(&cell.token(&app, "u4").await)
            .await
            .err()
            .map(|e| e.0),
        Some(403)
    );
    cell.ok(&app, Method::DELETE, "/v1/users/u4/ban", None)
        .await;

    let (st, _) = cell.api(&app, Method::DELETE, "/v1/users/u1", None).await;
    assert_eq!(st, 204);
    let hist = cell
        .ok(
            &app,
            Method::GET,
            &format!("/v1/conversations/{g}/messages"),
            None,
        )
        .await;
    let m = &hist["messages"][0];
    assert_eq!(
        (m["deleted"].as_bool(), m["text"].is_null()),
        (Some(true), true),
        "{m}"
    );
    let (st, _) = cell.api(&app, Method::GET, "/v1/users/u1", None).await;
    assert_eq!(st, 404);
}

backend_tests!(a_user_may_hold_only_so_many_connections);

async fn a_user_may_hold_only_so_many_connections(b: Backend) {
    let cell = Cell::start_with(b, |g| g.max_connections_per_user = 2).await;
    let app = cell.app(Limits::default()).await;
    cell.user(&app, "alice").await;
    let first = cell.ws(&app, "alice").await;
    let _second = cell.ws(&app, "alice").await;
    match cell.ws_with_token(&cell.token(&app, "alice").await).await {
        Err((st, body)) => assert_eq!(st, 429, "{body}"),
        Ok(_) => panic!("a third device was accepted"),
    }
    first.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cell.ws_with_token(&cell.token(&app, "alice").await)
            .await
            .is_ok(),
        "a freed slot is usable again"
    );
}

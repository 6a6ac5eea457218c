//! Tenancy and authentication: another app's keys, tokens and ids are refused; bad tokens are
//! refused; revocation and suspension take effect at once; read-only keys and rate limits hold.
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::json;
use starling_core::limits::Limits;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

backend_tests!(
    another_apps_ids_keys_and_tokens_are_refused,
    bad_tokens_are_refused,
    revocation_suspension_scopes_and_rate_limits
);

async fn another_apps_ids_keys_and_tokens_are_refused(b: Backend) {
    let cell = Cell::start(b).await;
    let a = cell.app(Limits::default()).await;
    let other = cell.app(Limits::default()).await;
    for u in ["alice", "bob"] {
        cell.user(&a, u).await;
        cell.user(&other, u).await; // same user ids in another app are other people
    }
    let cid = cell
        .conversation(&a, json!({"kind": "direct", "members": ["alice", "bob"]}))
        .await;
    let m = cell
        .ok(
            &a,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({"sender_id": "alice", "text": "secret"})),
        )
        .await;
    let mid = m["message"]["id"].as_str().unwrap();

    for (method, path, body) in [
        (Method::GET, format!("/v1/conversations/{cid}"), None),
        (
            Method::GET,
            format!("/v1/conversations/{cid}/messages"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{cid}/members"),
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/conversations/{cid}"),
            Some(json!({"name": "pwned"})),
        ),
        (
            Method::POST,
            format!("/v1/conversations/{cid}/messages"),
            Some(json!({"sender_id": "alice", "text": "x"})),
        ),
        (
            Method::POST,
            format!("/v1/conversations/{cid}/members"),
            Some(json!({"user_ids": ["bob"]})),
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{cid}/messages/{mid}"),
            None,
        ),
        (Method::DELETE, format!("/v1/conversations/{cid}"), None),
    ] {
        let (st, v) = cell.api(&other, method.clone(), &path, body).await;
        assert_eq!(st, 404, "{method} {path} with another app's key: {v}");
        assert_eq!(v["code"], "not_found");
    }
    let still = cell
        .ok(
            &a,
            Method::GET,
            &format!("/v1/conversations/{cid}/messages"),
            None,
        )
        .await;
    assert_eq!(still["messages"][0]["text"], "secret", "nothing changed");
    let list = cell
        .ok(&other, Method::GET, "/v1/users/alice/conversations", None)
        .await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "the other app's alice sees nothing"
    );

    // The other app's user, over the socket, cannot touch the conversation either.
    let mut ws = cell.ws(&other, "alice").await;
    for f in [
        json!({"type": "send", "conversation_id": cid, "text": "x"}),
        json!({"type": "sync", "conversation_id": cid, "after_seq": 0}),
        json!({"type": "read", "conversation_id": cid, "seq": 1}),
        json!({"type": "react", "conversation_id": cid, "message_id": mid, "emoji": "x"}),
    ] {
        let r = ws.request(f.clone()).await;
        assert_eq!(r["type"], "error", "{f} → {r}");
        assert!(r["code"] == "not_found" || r["code"] == "forbidden", "{r}");
    }
    // A's real members hear nothing from it.
    let mut bob = cell.ws(&a, "bob").await;
    bob.none(|f| f["type"] == "message.new", Duration::from_millis(200))
        .await;
}

async fn bad_tokens_are_refused(b: Backend) {
    let cell = Cell::start(b).await;
    let a = cell.app(Limits::default()).await;
    cell.user(&a, "alice").await;
    let good = cell.token(&a, "alice").await;
    assert!(cell.ws_with_token(&good).await.is_ok());

    let secret = &a.cfg.token_secrets[0];
    let sign = |claims: serde_json::Value, key: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(secret.kid.clone());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let app_id = a.cfg.app_id.as_str();
    let expired = sign(
        json!({"sub": "alice", "app_id": app_id, "exp": now - 3600, "iat": now - 7200}),
        &secret.secret,
    );
    let wrong_key = sign(
        json!({"sub": "alice", "app_id": app_id, "exp": now + 3600, "iat": now}),
        "not-the-secret",
    );
    let other = cell.app(Limits::default()).await;
    let wrong_app = sign(
        json!({"sub": "alice", "app_id": other.cfg.app_id.as_str(), "exp": now + 3600, "iat": now}),
        &secret.secret,
    );
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": secret.kid}).to_string());
    let body = URL_SAFE_NO_PAD.encode(
        json!({"sub": "alice", "app_id": app_id, "exp": now + 3600, "iat": now}).to_string(),
    );
    let alg_none = format!("{header}.{body}.");
    let unknown_user = sign(
        json!({"sub": "mallory", "app_id": app_id, "exp": now + 3600, "iat": now}),
        &secret.secret,
    );

    for (what, token, status) in [
        ("expired", expired, 401),
        ("wrong signature", wrong_key, 401),
        ("another app's claim", wrong_app, 401),
        ("alg none", alg_none, 401),
        ("garbage", "not.a.jwt".to_owned(), 401),
        ("unknown user", unknown_user, 404),
    ] {
        match cell.ws_with_token(&token).await {
            Ok(_) => panic!("{what} token was accepted"),
            Err((st, body)) => {
                assert_eq!(st, status, "{what}: {body}");
                assert!(body.contains("\"code\""), "{what}: a JSON error: {body}");
            }
        }
    }
    match cell.ws_with_token("").await {
        Err((st, _)) => assert_eq!(st, 401),
        Ok(_) => panic!("empty token accepted"),
    }
    // Tokens are not API keys, and API keys are not tokens.
    let (st, _, _) = cell.api_h(&good, Method::GET, "/v1/users", None).await;
    assert_eq!(st, 401);
    assert!(cell.ws_with_token(&a.key).await.is_err());
    let r = cell
        .api(
            &a,
            Method::POST,
            "/v1/users/alice/tokens",
            Some(json!({"expires_in_seconds": 10})),
        )
        .await;
    assert_eq!(
        (r.0.as_u16(), r.1["field"].as_str()),
        (422, Some("expires_in_seconds"))
    );
}

async fn revocation_suspension_scopes_and_rate_limits(b: Backend) {
    let cell = Cell::start(b).await;
    let a = cell
        .app(Limits {
            api_requests_per_second: Some(5),
            ..Default::default()
        })
        .await;
    let cid = cell.alice_and_bob(&a).await;

    // Rate limit: the burst allows 5, then 429 with Retry-After and X-RateLimit-*.
    // The requests go out at once: sequential ones on a slow, loaded machine could each wait
    // long enough for a token to refill. Whatever refilled while they ran is allowed for.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    let replies = futures::future::join_all(
        (0..12).map(|_| cell.api_h(&a.key, Method::GET, "/v1/users", None)),
    )
    .await;
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let statuses: Vec<u16> = replies.iter().map(|(st, _, _)| st.as_u16()).collect();
    for (st, _, h) in &replies {
        if *st == 200 {
            assert_eq!(h["x-ratelimit-limit"], "5");
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 5 + refilled,
        "{statuses:?} ({refilled} tokens refilled meanwhile)"
    );
    let (_, _, h) = replies
        .iter()
        .find(|(st, _, _)| st.as_u16() == 429)
        .unwrap_or_else(|| panic!("no 429 among {statuses:?}"));
    assert!(h.get("retry-after").is_some());
    assert_eq!(h["x-ratelimit-remaining"], "0");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A read-only key reads but does not write.
    let mut cfg = a.cfg.clone();
    let hasher = starling_core::secret::KeyHasher::new("dp-test-key-hash-secret-0123456789abcdef");
    let ro = starling_core::secret::generate_api_key();
    cfg.keys.push(starling_core::appconfig::KeyConfig {
        id: ro.id.clone(),
        secret_hash: hasher.hash(&ro.secret),
        scopes: vec!["read_only".into()],
        expires_at: None,
        revoked: false,
    });
    cfg.limits = Limits::default();
    let cfg = cell.publish(cfg).await;
    let (st, _, _) = cell
        .api_h(
            &ro.token,
            Method::GET,
            &format!("/v1/conversations/{cid}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, v, _) = cell
        .api_h(&ro.token, Method::PUT, "/v1/users/zed", Some(json!({})))
        .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (403, Some("forbidden")));

    // Revocation takes effect with the next config update: at once.
    let alice = cell.token(&a, "alice").await;
    let mut ws = cell.ws_with_token(&alice).await.expect("connect");
    let mut revoked = cfg.clone();
    revoked.keys[0].revoked = true;
    let cfg = cell.publish(revoked).await;
    let (st, v) = cell.api(&a, Method::GET, "/v1/users", None).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("revoked"), "{v}");

    // Suspension: REST gets app_suspended; open sockets close with 4003 (access ended); new
    // connections are refused until the app is back.
    let mut suspended = cfg.clone();
    suspended.suspended = Some("app_suspended".into());
    cell.publish(suspended.clone()).await;
    let (st, v, _) = cell.api_h(&ro.token, Method::GET, "/v1/users", None).await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (403, Some("app_suspended"))
    );
    assert_eq!(ws.closed_within(Duration::from_secs(2)).await, Some(4003));
    let mut back = suspended;
    back.suspended = None;
    cell.publish(back).await;
    let mut ws = cell.ws_with_token(&alice).await.expect("connect");
    let r = ws
        .request(json!({"type": "send", "conversation_id": cid, "text": "back"}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
}

//! `Idempotency-Key` on POST (Redis on the PostgreSQL runs, in-process on SQLite).
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Server, assert_error, unique};

backend_tests!(idempotent_retries_act_once);

async fn idempotent_retries_act_once(s: Server) {
    let key = unique("idem");
    let body = json!({"name": unique("Once")});
    let (st1, v1, h1) = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(body.clone()),
            &[("Idempotency-Key", &key)],
        )
        .await;
    assert_eq!(st1, 201, "{v1}");
    assert!(h1.get("idempotent-replayed").is_none());
    let (st2, v2, h2) = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(body.clone()),
            &[("Idempotency-Key", &key)],
        )
        .await;
    assert_eq!(st2, 201);
    assert_eq!(v2, v1, "the retry returns the first result");
    assert_eq!(h2["idempotent-replayed"], "true");
    let all = s
        .ok(
            Method::GET,
            "/admin/v1/tenants?limit=200&status=active",
            None,
        )
        .await;
    let mut n = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == body["name"])
        .count();
    let mut cursor = all["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let p = s
            .ok(
                Method::GET,
                &format!("/admin/v1/tenants?limit=200&status=active&cursor={c}"),
                None,
            )
            .await;
        n += p["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == body["name"])
            .count();
        cursor = p["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(n, 1, "one tenant was created");

    let r = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "Other"})),
            &[("Idempotency-Key", &key)],
        )
        .await;
    assert_error(&(r.0, r.1), 422, "idempotency_key_reused", None);

    // A refused request is not kept: the client can fix it and retry with the same key.
    let key2 = unique("idem");
    let r = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": ""})),
            &[("Idempotency-Key", &key2)],
        )
        .await;
    assert_eq!(r.0, 422);
    let r = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "Fixed"})),
            &[("Idempotency-Key", &key2)],
        )
        .await;
    assert_eq!(r.0, 201, "{}", r.1);

    let long = "x".repeat(300);
    let r = s
        .call_with(
            Method::POST,
            "/admin/v1/tenants",
            Some(body),
            &[("Idempotency-Key", &long)],
        )
        .await;
    assert_error(&(r.0, r.1), 400, "invalid_request", Some("Idempotency-Key"));
}

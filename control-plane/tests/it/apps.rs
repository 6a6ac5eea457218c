//! Apps: CRUD, names, pagination.
use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Server, assert_error};

backend_tests!(app_crud, app_pagination_walks_every_item_once);

async fn app_crud(s: Server) {
    let t = s.tenant().await;
    let (st, a) = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "Chat", "environment": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{a}");
    let id = a["id"].as_str().unwrap();
    assert!(id.starts_with("app_"));
    assert_eq!(a["tenant_id"], t);
    assert_eq!(a["environment"], "production");
    assert!(
        a["cluster_id"].as_str().unwrap().starts_with("cls_"),
        "placed: {a}"
    );

    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "Chat"})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "X", "environment": "prod"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("environment"));

    let u = s
        .ok(
            Method::PATCH,
            &format!("/admin/v1/tenants/{t}/apps/{id}"),
            Some(json!({"status": "suspended", "name": "Chat 2"})),
        )
        .await;
    assert_eq!(u["status"], "suspended");
    assert_eq!(u["name"], "Chat 2");
    let got = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{id}"),
            None,
        )
        .await;
    assert_eq!(got, u);

    let key = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps/{id}/api-keys"),
            Some(json!({"name": "k"})),
        )
        .await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/admin/v1/tenants/{t}/apps/{id}"),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let r = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{id}"),
            None,
        )
        .await;
    assert_error(&r, 404, "not_found", None);
    let v = s
        .ok(
            Method::POST,
            "/admin/v1/api-keys/introspect",
            Some(json!({"key": key["secret"]})),
        )
        .await;
    assert_eq!(v["active"], false, "the app's keys went with it: {v}");
}

async fn app_pagination_walks_every_item_once(s: Server) {
    let t = s.tenant().await;
    let mut made = Vec::new();
    for _ in 0..7 {
        made.push(s.app(&t).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/tenants/{t}/apps?limit=3&cursor={c}"),
            None => format!("/admin/v1/tenants/{t}/apps?limit=3"),
        };
        let page = s.ok(Method::GET, &path, None).await;
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination must end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "every app once, in creation order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
}

//! Webhook endpoints and the pre-send hook: CRUD with validation, secrets with rotation
//! overlap, tenant isolation, and what the app-config feed carries to the cells.
use reqwest::Method;
use serde_json::json;
use starling_control_plane::service::ControlPlane;
use starling_core::secret::KeyHasher;

use crate::backend_tests;
use crate::harness::{Server, assert_error};

backend_tests!(
    endpoint_lifecycle,
    pre_send_hook_lifecycle,
    internal_routes_for_cell_nodes
);

async fn endpoint_lifecycle(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let base = format!("/admin/v1/tenants/{t}/apps/{a}/webhook-endpoints");

    // Bad input names the field.
    let got = s
        .call(Method::POST, &base, Some(json!({"url": "ftp://x"})))
        .await;
    assert_error(&got, 422, "validation_failed", Some("url"));
    let got = s
        .call(
            Method::POST,
            &base,
            Some(
                json!({"url": "https://example.com/h", "event_types": ["message.created", "nope"]}),
            ),
        )
        .await;
    assert_error(&got, 422, "validation_failed", Some("event_types[1]"));
    let got = s
        .call(
            Method::POST,
            &base,
            Some(json!({"url": "https://example.com/h", "rate_limit_per_second": 0})),
        )
        .await;
    assert_error(
        &got,
        422,
        "validation_failed",
        Some("rate_limit_per_second"),
    );

    let (st, e) = s
        .call(
            Method::POST,
            &base,
            Some(json!({"url": "https://example.com/h", "event_types": ["message.created"], "ordered": true, "rate_limit_per_second": 50})),
        )
        .await;
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ep_"));
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(e["enabled"], true);
    let got = s.ok(Method::GET, &format!("{base}/{id}"), None).await;
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["ordered"], true);

    // Another tenant's path to it is a 404.
    let t2 = s.tenant().await;
    let a2 = s.app(&t2).await;
    let got = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t2}/apps/{a2}/webhook-endpoints/{id}"),
            None,
        )
        .await;
    assert_error(&got, 404, "not_found", None);
    let got = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t2}/apps/{a}/webhook-endpoints/{id}"),
            None,
        )
        .await;
    assert_error(&got, 404, "not_found", None);

    // Patch; a null rate limit removes it.
    let got = s
        .ok(
            Method::PATCH,
            &format!("{base}/{id}"),
            Some(json!({"enabled": false, "rate_limit_per_second": null, "event_types": []})),
        )
        .await;
    assert_eq!(got["enabled"], false);
    assert!(got["rate_limit_per_second"].is_null());

    // Rotation: a new secret, the old one still signs for the overlap.
    let r = s
        .ok(
            Method::POST,
            &format!("{base}/{id}/secret/rotate"),
            Some(json!({"overlap_seconds": 3600})),
        )
        .await;
    let new = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, secret);
    assert!(r["previous_expires_at"].is_string());
    let got = s
        .ok(Method::GET, &format!("{base}/{id}/secret"), None)
        .await;
    assert_eq!(got["secret"], new.as_str());
    let got = s
        .call(
            Method::POST,
            &format!("{base}/{id}/secret/rotate"),
            Some(json!({"overlap_seconds": 99999999})),
        )
        .await;
    assert_error(&got, 422, "validation_failed", Some("overlap_seconds"));

    // What the cells get: both secrets, newest first.
    let cp = ControlPlane::new(
        s.db.clone(),
        KeyHasher::new("any-secret-for-reading-config-0123456789"),
        crate::harness::sealer(),
    );
    let cfg = cp.app_config(&t, &a).await.unwrap().unwrap();
    assert_eq!(cfg.webhooks.len(), 1);
    let w = &cfg.webhooks[0];
    assert_eq!(w.id, id);
    assert!(!w.enabled);
    assert_eq!(w.secrets.len(), 2);
    assert_eq!(w.secrets[0].secret, new);
    assert_eq!(w.secrets[1].secret, secret);
    let list = s.ok(Method::GET, &base, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    s.ok(Method::DELETE, &format!("{base}/{id}"), None).await;
    let got = s.call(Method::GET, &format!("{base}/{id}"), None).await;
    assert_error(&got, 404, "not_found", None);
}

async fn pre_send_hook_lifecycle(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let path = format!("/admin/v1/tenants/{t}/apps/{a}/pre-send-hook");
    let got = s.call(Method::GET, &path, None).await;
    assert_error(&got, 404, "not_found", None);
    // fail_open must be chosen on purpose.
    let got = s
        .call(
            Method::PUT,
            &path,
            Some(json!({"url": "https://example.com/pre"})),
        )
        .await;
    assert_eq!(got.0, 422, "{}", got.1);
    let got = s
        .call(
            Method::PUT,
            &path,
            Some(
                json!({"url": "https://example.com/pre", "fail_open": false, "timeout_ms": 60000}),
            ),
        )
        .await;
    assert_error(&got, 422, "validation_failed", Some("timeout_ms"));
    let h = s
        .ok(
            Method::PUT,
            &path,
            Some(json!({"url": "https://example.com/pre", "fail_open": false, "timeout_ms": 200})),
        )
        .await;
    assert_eq!(h["timeout_ms"], 200);
    let secret = h["secret"].as_str().unwrap().to_owned();
    // Replacing keeps the secret.
    let h = s
        .ok(
            Method::PUT,
            &path,
            Some(json!({"url": "https://example.com/pre2", "fail_open": true})),
        )
        .await;
    assert_eq!(h["secret"], secret.as_str());
    assert_eq!(h["fail_open"], true);
    let cp = ControlPlane::new(
        s.db.clone(),
        KeyHasher::new("any-secret-for-reading-config-0123456789"),
        crate::harness::sealer(),
    );
    let cfg = cp.app_config(&t, &a).await.unwrap().unwrap();
    let hook = cfg.pre_send_hook.unwrap();
    assert_eq!(hook.url, "https://example.com/pre2");
    assert!(hook.fail_open);
    // Another tenant cannot see it.
    let t2 = s.tenant().await;
    let got = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t2}/apps/{a}/pre-send-hook"),
            None,
        )
        .await;
    assert_error(&got, 404, "not_found", None);
    s.ok(Method::DELETE, &path, None).await;
    let got = s.call(Method::GET, &path, None).await;
    assert_error(&got, 404, "not_found", None);
}

/// What a cell node calls for its server API (`/internal/v1/tenants/{t}/apps/{a}/webhook-
/// endpoints…`): only with its cell's credential, every function scoped by tenant and app.
async fn internal_routes_for_cell_nodes(s: Server) {
    use reqwest::StatusCode;
    use serde_json::Value;
    let (t1, t2) = (s.tenant().await, s.tenant().await);
    let c1 = crate::cell_identity::cluster(&s).await;
    let a1 = crate::cell_identity::app_on(&s, &t1, &c1).await;
    let a2 = s.app(&t2).await;
    let token = crate::cell_identity::credential(&s, &c1).await;
    let call = |m: Method, path: String, bearer: Option<String>, body: Option<Value>| {
        let c = s.client.clone();
        let url = format!("{}/internal/v1/tenants{path}", s.base);
        async move {
            let mut r = c.request(m, url);
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            let st = r.status();
            let text = r.text().await.unwrap();
            (
                st,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        }
    };
    let base1 = format!("/{t1}/apps/{a1}/webhook-endpoints");
    let ok = Some(json!({"url": "https://example.com/h", "event_types": ["message.created"]}));

    // No token, a wrong one, the operator's, the old shared one derived from
    // auth.key_hash_secret (every gateway holds that secret): refused, nothing made.
    let old_shared = format!(
        "sin_{}",
        KeyHasher::new(crate::harness::KEY_HASH_SECRET).hash("starling-internal-api-v1")
    );
    for bearer in [
        None,
        Some("sin_wrong".to_owned()),
        Some(crate::harness::TOKEN.to_owned()),
        Some(old_shared),
    ] {
        let got = call(Method::POST, base1.clone(), bearer.clone(), ok.clone()).await;
        assert_error(&got, 401, "unauthorized", None);
    }
    let listed = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t1}/apps/{a1}/webhook-endpoints"),
            None,
        )
        .await;
    assert_eq!(listed["data"], json!([]), "{listed}");

    let tok = || Some(token.clone());
    // Bad input names its field, as on the admin API.
    let got = call(
        Method::POST,
        base1.clone(),
        tok(),
        Some(json!({"url": "ftp://x"})),
    )
    .await;
    assert_error(&got, 422, "validation_failed", Some("url"));
    let (st, e) = call(Method::POST, base1.clone(), tok(), ok.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    assert!(e["secret"].as_str().unwrap().starts_with("whsec_"), "{e}");
    assert_eq!(e["app_id"], a1.as_str());
    // The admin API sees the same endpoint.
    let got = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t1}/apps/{a1}/webhook-endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(got["url"], "https://example.com/h");

    let one = format!("{base1}/{id}");
    let (st, u) = call(
        Method::PATCH,
        one.clone(),
        tok(),
        Some(json!({"rate_limit_per_second": 5, "enabled": false})),
    )
    .await;
    assert_eq!(
        (st, u["rate_limit_per_second"].clone(), u["enabled"].clone()),
        (StatusCode::OK, json!(5), json!(false)),
        "{u}"
    );
    let (st, u) = call(
        Method::PATCH,
        one.clone(),
        tok(),
        Some(json!({"rate_limit_per_second": null})),
    )
    .await;
    assert_eq!(
        (st, u["rate_limit_per_second"].clone()),
        (StatusCode::OK, Value::Null),
        "{u}"
    );
    let (st, sec) = call(Method::GET, format!("{one}/secret"), tok(), None).await;
    assert_eq!(st, StatusCode::OK, "{sec}");
    let (st, r) = call(
        Method::POST,
        format!("{one}/secret/rotate"),
        tok(),
        Some(json!({"overlap_seconds": 60})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_ne!(r["secret"], sec["secret"]);
    assert!(r["previous_expires_at"].is_string(), "{r}");

    // Another tenant, or another tenant's app, or this app under another tenant: not found.
    for prefix in [
        format!("/{t2}/apps/{a2}/webhook-endpoints"),
        format!("/{t2}/apps/{a1}/webhook-endpoints"),
        format!("/{t1}/apps/{a2}/webhook-endpoints"),
    ] {
        let other = format!("{prefix}/{id}");
        for (m, path, body) in [
            (Method::GET, other.clone(), None),
            (Method::PATCH, other.clone(), Some(json!({"enabled": true}))),
            (Method::DELETE, other.clone(), None),
            (Method::GET, format!("{other}/secret"), None),
            (
                Method::POST,
                format!("{other}/secret/rotate"),
                Some(json!({})),
            ),
        ] {
            let got = call(m.clone(), path.clone(), tok(), body).await;
            assert_error(&got, 404, "not_found", None);
        }
    }
    let got = call(
        Method::POST,
        format!("/{t2}/apps/{a1}/webhook-endpoints"),
        tok(),
        ok.clone(),
    )
    .await;
    assert_error(&got, 404, "not_found", None);
    // Nothing changed.
    let (_, g) = call(Method::GET, one.clone(), tok(), None).await;
    assert_eq!(g["enabled"], false, "{g}");

    let (st, _) = call(Method::DELETE, one.clone(), tok(), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let got = call(Method::GET, one.clone(), tok(), None).await;
    assert_error(&got, 404, "not_found", None);
    // Not part of the operator's API document.
    let doc = s.ok(Method::GET, "/admin/v1/openapi.json", None).await;
    assert!(
        !doc.to_string().contains("/internal/"),
        "internal routes in the admin OpenAPI"
    );
}

//! Webhook endpoints and the pre-send hook: CRUD with validation, secrets with rotation
//! overlap, tenant isolation, and what the app-config feed carries to the cells.
use reqwest::Method;
use serde_json::json;
use starling_control_plane::service::ControlPlane;
use starling_core::secret::KeyHasher;

use crate::backend_tests;
use crate::harness::{Server, assert_error};

backend_tests!(endpoint_lifecycle, pre_send_hook_lifecycle);

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

//! API keys: shown once, stored hashed, revoked, rotated with overlap, refused when suspended.
use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Server, assert_error};

backend_tests!(
    key_lifecycle,
    rotation_keeps_the_old_key_for_the_overlap,
    suspension_stops_keys
);

async fn introspect(s: &Server, key: &Value) -> Value {
    s.ok(
        Method::POST,
        "/admin/v1/api-keys/introspect",
        Some(json!({"key": key})),
    )
    .await
}

async fn key_lifecycle(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let base = format!("/admin/v1/tenants/{t}/apps/{a}/api-keys");
    let (st, k) = s
        .call(
            Method::POST,
            &base,
            Some(json!({"name": "backend", "scopes": ["read_only"]})),
        )
        .await;
    assert_eq!(st, 201, "{k}");
    let id = k["id"].as_str().unwrap();
    let secret = k["secret"].as_str().unwrap();
    assert!(
        secret.starts_with(&format!("{id}.")),
        "the key is id.secret: {secret}"
    );
    assert!(secret.len() >= id.len() + 40, "high-entropy secret");
    assert_eq!(k["scopes"], json!(["read_only"]));
    assert_eq!(k["status"], "active");

    // The secret is never shown again, and not stored in plain.
    let got = s.ok(Method::GET, &format!("{base}/{id}"), None).await;
    assert!(got.get("secret").is_none(), "{got}");
    let list = s.ok(Method::GET, &base, None).await;
    assert!(list["data"][0].get("secret").is_none());
    let secret_part = secret.split_once('.').unwrap().1;
    let row =
        s.db.query_one_raw(Statement::from_string(
            s.db.get_database_backend(),
            format!("SELECT secret_hash FROM api_key WHERE id = '{id}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: String = row.try_get("", "secret_hash").unwrap();
    assert_eq!(stored.len(), 64, "an HMAC-SHA256 in hex");
    assert!(!stored.contains(secret_part));

    let v = introspect(&s, &json!(secret)).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["app_id"], a);
    assert_eq!(v["tenant_id"], t);
    assert_eq!(v["scopes"], json!(["read_only"]));
    let used = s.ok(Method::GET, &format!("{base}/{id}"), None).await;
    assert!(
        used["last_used_at"].is_string(),
        "last use recorded: {used}"
    );

    // A wrong secret for a real key id, a garbled key: unknown.
    let forged = format!("{id}.{}", "A".repeat(43));
    assert_eq!(
        introspect(&s, &json!(forged)).await["reason"],
        "unknown_key"
    );
    assert_eq!(
        introspect(&s, &json!("garbage")).await["reason"],
        "unknown_key"
    );

    let r = s
        .call(
            Method::POST,
            &base,
            Some(json!({"name": "x", "scopes": []})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("scopes"));
    let r = s
        .call(
            Method::POST,
            &base,
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("scopes[0]"));
    let r = s
        .call(
            Method::POST,
            &base,
            Some(json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("expires_at"));
    let r = s
        .call(
            Method::POST,
            &base,
            Some(json!({"name": "x", "expires_at": "tomorrow"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("expires_at"));

    let rev = s
        .ok(Method::POST, &format!("{base}/{id}/revoke"), None)
        .await;
    assert_eq!(rev["status"], "revoked");
    assert!(rev["revoked_at"].is_string());
    let again = s
        .ok(Method::POST, &format!("{base}/{id}/revoke"), None)
        .await;
    assert_eq!(
        again["revoked_at"], rev["revoked_at"],
        "revoking twice changes nothing"
    );
    assert_eq!(introspect(&s, &json!(secret)).await["reason"], "revoked");
    let r = s
        .call(
            Method::POST,
            &format!("{base}/{id}/rotate"),
            Some(json!({})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
}

async fn rotation_keeps_the_old_key_for_the_overlap(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let base = format!("/admin/v1/tenants/{t}/apps/{a}/api-keys");
    let old = s
        .ok(Method::POST, &base, Some(json!({"name": "backend"})))
        .await;
    let old_id = old["id"].as_str().unwrap();

    let (st, new) = s
        .call(
            Method::POST,
            &format!("{base}/{old_id}/rotate"),
            Some(json!({"overlap_seconds": 3600})),
        )
        .await;
    assert_eq!(st, 201, "{new}");
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["rotated_from"], old["id"]);
    assert_eq!(new["name"], "backend");
    assert_eq!(
        introspect(&s, &old["secret"]).await["active"],
        true,
        "old key works during the overlap"
    );
    assert_eq!(
        introspect(&s, &new["secret"]).await["active"],
        true,
        "new key works"
    );
    let o = s.ok(Method::GET, &format!("{base}/{old_id}"), None).await;
    assert_eq!(o["replaced_by"], new["id"]);
    let exp = chrono::DateTime::parse_from_rfc3339(o["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!(
        (3500..=3600).contains(&left),
        "old key expires after the overlap, {left}s left"
    );

    let r = s
        .call(
            Method::POST,
            &format!("{base}/{old_id}/rotate"),
            Some(json!({})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    let r = s
        .call(
            Method::POST,
            &format!("{base}/{}/rotate", new["id"].as_str().unwrap()),
            Some(json!({"overlap_seconds": 99999999})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("overlap_seconds"));

    // With no overlap, the old key stops at once.
    let newer = s
        .ok(
            Method::POST,
            &format!("{base}/{}/rotate", new["id"].as_str().unwrap()),
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(introspect(&s, &new["secret"]).await["reason"], "expired");
    assert_eq!(introspect(&s, &newer["secret"]).await["active"], true);
    let listed = s.ok(Method::GET, &base, None).await;
    let statuses: Vec<_> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["active", "expired", "active"]);
}

async fn suspension_stops_keys(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let k = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps/{a}/api-keys"),
            Some(json!({"name": "k"})),
        )
        .await;
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/tenants/{t}/apps/{a}"),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(
        introspect(&s, &k["secret"]).await["reason"],
        "app_suspended"
    );
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/tenants/{t}/apps/{a}"),
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(introspect(&s, &k["secret"]).await["active"], true);
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/tenants/{t}"),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(
        introspect(&s, &k["secret"]).await["reason"],
        "tenant_suspended"
    );
}

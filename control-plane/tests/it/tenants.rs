//! Tenants: CRUD, pagination, and refusal of another tenant's resources.
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Server, assert_error, unique};

backend_tests!(tenant_crud, cross_tenant_access_is_refused);

async fn tenant_crud(s: Server) {
    let name = unique("Acme");
    let (st, t) = s
        .call(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap();
    assert!(id.starts_with("tnt_"));
    assert_eq!(t["status"], "active");
    assert!(
        t["plan_id"].as_str().unwrap().starts_with("pln_"),
        "default plan applied: {t}"
    );

    let got = s
        .ok(Method::GET, &format!("/admin/v1/tenants/{id}"), None)
        .await;
    assert_eq!(got, t, "read back equals what was returned on create");

    let upd = s
        .ok(
            Method::PATCH,
            &format!("/admin/v1/tenants/{id}"),
            Some(json!({"name": "Renamed", "status": "suspended"})),
        )
        .await;
    assert_eq!(upd["name"], "Renamed");
    assert_eq!(upd["status"], "suspended");
    let r = s
        .call(
            Method::PATCH,
            &format!("/admin/v1/tenants/{id}"),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("status"));
    let after = s
        .ok(Method::GET, &format!("/admin/v1/tenants/{id}"), None)
        .await;
    assert_eq!(after["name"], "Renamed", "a refused patch changed nothing");

    let suspended = s
        .ok(
            Method::GET,
            "/admin/v1/tenants?status=suspended&limit=200",
            None,
        )
        .await;
    assert!(
        suspended["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id)
    );
    assert!(
        suspended["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "suspended")
    );

    let app = s.app(id).await;
    let r = s
        .call(Method::DELETE, &format!("/admin/v1/tenants/{id}"), None)
        .await;
    assert_error(&r, 409, "conflict", None);
    s.ok(
        Method::DELETE,
        &format!("/admin/v1/tenants/{id}/apps/{app}"),
        None,
    )
    .await;
    let (st, _) = s
        .call(Method::DELETE, &format!("/admin/v1/tenants/{id}"), None)
        .await;
    assert_eq!(st, 204);
    let r = s
        .call(Method::GET, &format!("/admin/v1/tenants/{id}"), None)
        .await;
    assert_error(&r, 404, "not_found", None);
}

async fn cross_tenant_access_is_refused(s: Server) {
    let a = s.tenant().await;
    let b = s.tenant().await;
    let app_a = s.app(&a).await;
    let key = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{a}/apps/{app_a}/api-keys"),
            Some(json!({"name": "k"})),
        )
        .await;
    let key_id = key["id"].as_str().unwrap();

    // Every route that names A's app or key under B's id answers 404, and changes nothing.
    for (m, path, body) in [
        (
            Method::GET,
            format!("/admin/v1/tenants/{b}/apps/{app_a}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/{b}/apps/{app_a}"),
            Some(json!({"status": "suspended"})),
        ),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/{b}/apps/{app_a}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/quotas"),
            None,
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/quotas"),
            Some(json!({"max_group_members": 5})),
        ),
        (
            Method::GET,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/api-keys"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/api-keys"),
            Some(json!({"name": "stolen"})),
        ),
        (
            Method::GET,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/api-keys/{key_id}"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/api-keys/{key_id}/revoke"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{b}/apps/{app_a}/api-keys/{key_id}/rotate"),
            Some(json!({})),
        ),
    ] {
        let r = s.call(m.clone(), &path, body).await;
        assert_eq!(r.0, 404, "{m} {path} must be refused: {}", r.1);
        assert_eq!(r.1["code"], "not_found");
    }
    // A key of another app of the same tenant is not reachable through the wrong app either.
    let app_a2 = s.app(&a).await;
    let r = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{a}/apps/{app_a2}/api-keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(r.0, 404);

    let list_b = s
        .ok(Method::GET, &format!("/admin/v1/tenants/{b}/apps"), None)
        .await;
    assert_eq!(
        list_b["data"].as_array().unwrap().len(),
        0,
        "B sees none of A's apps"
    );
    let app = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{a}/apps/{app_a}"),
            None,
        )
        .await;
    assert_eq!(app["status"], "active", "A's app untouched");
    let k = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{a}/apps/{app_a}/api-keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(k["status"], "active", "A's key untouched");
    let keys = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{a}/apps/{app_a}/api-keys"),
            None,
        )
        .await;
    assert_eq!(
        keys["data"].as_array().unwrap().len(),
        1,
        "no key was added to A's app"
    );
}

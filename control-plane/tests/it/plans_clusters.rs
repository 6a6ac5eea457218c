//! Plans, quota overrides, clusters and placement.
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Server, assert_error, unique};

backend_tests!(plans_and_quota_overrides, clusters_and_placement);

async fn plans_and_quota_overrides(s: Server) {
    let code = unique("pro");
    let (st, p) = s
        .call(Method::POST, "/admin/v1/plans", Some(json!({
            "code": code, "name": "Pro",
            "limits": {"monthly_active_users": 10000, "max_message_bytes": 8192, "max_group_members": 500}
        })))
        .await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap();
    let r = s
        .call(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": code, "name": "Again"})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    let r = s
        .call(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": "Bad Code", "name": "x"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("code"));
    let r = s
        .call(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("p"), "name": "x", "limits": {"max_group_members": 0}})),
        )
        .await;
    assert_error(
        &r,
        422,
        "validation_failed",
        Some("limits.max_group_members"),
    );
    let r = s
        .call(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("p"), "name": "x", "limits": {"max_members": 5}})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("limits.max_members"));

    let t = s
        .ok(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "On Pro", "plan_id": pid})),
        )
        .await;
    let tid = t["id"].as_str().unwrap();
    assert_eq!(t["plan_id"], pid);
    let a = s.app(tid).await;
    let q = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            None,
        )
        .await;
    assert_eq!(q["plan_code"], code);
    assert_eq!(
        q["effective"],
        json!({"monthly_active_users": 10000, "max_message_bytes": 8192, "max_group_members": 500})
    );
    assert_eq!(q["overrides"], json!({}));

    let q = s
        .ok(
            Method::PATCH,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            Some(json!({"max_message_bytes": 65536, "api_requests_per_second": 50})),
        )
        .await;
    assert_eq!(
        q["effective"]["max_message_bytes"], 65536,
        "override wins: {q}"
    );
    assert_eq!(q["effective"]["api_requests_per_second"], 50);
    assert_eq!(
        q["effective"]["monthly_active_users"], 10000,
        "plan limit still applies"
    );
    let q = s
        .ok(
            Method::PATCH,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            Some(json!({"max_message_bytes": null})),
        )
        .await;
    assert_eq!(
        q["effective"]["max_message_bytes"], 8192,
        "null removes the override: {q}"
    );
    assert_eq!(q["overrides"], json!({"api_requests_per_second": 50}));
    let r = s
        .call(
            Method::PATCH,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            Some(json!({"max_message_bytes": 0})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("max_message_bytes"));
    let r = s
        .call(
            Method::PATCH,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            Some(json!({"max_message_bytes": -5})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("max_message_bytes"));

    // Plan changes reach the app's effective limits.
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/plans/{pid}"),
        Some(json!({"limits": {"monthly_active_users": 20000}})),
    )
    .await;
    let q = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{tid}/apps/{a}/quotas"),
            None,
        )
        .await;
    assert_eq!(
        q["effective"],
        json!({"monthly_active_users": 20000, "api_requests_per_second": 50})
    );

    let r = s
        .call(Method::DELETE, &format!("/admin/v1/plans/{pid}"), None)
        .await;
    assert_error(&r, 409, "conflict", None);
    let spare = s
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("spare"), "name": "Spare"})),
        )
        .await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/admin/v1/plans/{}", spare["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(st, 204);

    if s.backend == crate::harness::Backend::Sqlite {
        // Switching the default plan (only on the private SQLite database: the default is global).
        let d = s
            .ok(
                Method::POST,
                "/admin/v1/plans",
                Some(json!({"code": unique("def"), "name": "Def", "is_default": true})),
            )
            .await;
        let plans = s.ok(Method::GET, "/admin/v1/plans", None).await;
        let defaults: Vec<_> = plans["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["is_default"] == true)
            .collect();
        assert_eq!(defaults.len(), 1, "exactly one default: {plans}");
        assert_eq!(defaults[0]["id"], d["id"]);
        let t = s
            .ok(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"name": "Defaulted"})),
            )
            .await;
        assert_eq!(t["plan_id"], d["id"]);
        let r = s
            .call(
                Method::PATCH,
                &format!("/admin/v1/plans/{}", d["id"].as_str().unwrap()),
                Some(json!({"is_default": false})),
            )
            .await;
        assert_error(&r, 422, "validation_failed", Some("is_default"));
        let r = s
            .call(
                Method::DELETE,
                &format!("/admin/v1/plans/{}", d["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_error(&r, 409, "conflict", None);
    }
}

async fn clusters_and_placement(s: Server) {
    let region = unique("r").replace('-', "");
    let (st, c1) = s
        .call(Method::POST, "/admin/v1/clusters", Some(json!({"name": unique("c1"), "region": region, "capacity_apps": 1, "endpoint": "wss://c1.example.com"})))
        .await;
    assert_eq!(st, 201, "{c1}");
    assert_eq!(c1["apps"], 0);
    let c1_id = c1["id"].as_str().unwrap();
    let r = s
        .call(
            Method::POST,
            "/admin/v1/clusters",
            Some(json!({"name": c1["name"], "region": region, "capacity_apps": 1})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    let r = s
        .call(
            Method::POST,
            "/admin/v1/clusters",
            Some(json!({"name": unique("c"), "region": region, "capacity_apps": 0})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("capacity_apps"));
    let r = s.call(Method::POST, "/admin/v1/clusters", Some(json!({"name": unique("c"), "region": region, "capacity_apps": 1, "endpoint": "ftp://x"}))).await;
    assert_error(&r, 422, "validation_failed", Some("endpoint"));

    let t = s.tenant().await;
    let a1 = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a1", "region": region})),
        )
        .await;
    assert_eq!(a1["cluster_id"], c1_id, "placed in the asked region");
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a2", "region": region})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    assert!(
        r.1["message"].as_str().unwrap().contains(&region),
        "{}",
        r.1
    );
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a2", "cluster_id": c1_id})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a2", "cluster_id": "cls_01jdq3v9k6b2c8x4m7n5p0r1st"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("cluster_id"));

    // A second cluster; draining ones take no new apps.
    let c2 = s.ok(Method::POST, "/admin/v1/clusters", Some(json!({"name": unique("c2"), "region": region, "capacity_apps": 5, "status": "draining"}))).await;
    let c2_id = c2["id"].as_str().unwrap();
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a2", "region": region})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/clusters/{c2_id}"),
        Some(json!({"status": "active"})),
    )
    .await;
    let a2 = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "a2", "region": region})),
        )
        .await;
    assert_eq!(a2["cluster_id"], c2_id);

    // Move a1 to c2; c1 is then empty and can go.
    let a1_id = a1["id"].as_str().unwrap();
    let moved = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps/{a1_id}/placement"),
            Some(json!({"cluster_id": c2_id})),
        )
        .await;
    assert_eq!(moved["cluster_id"], c2_id);
    let c2 = s
        .ok(Method::GET, &format!("/admin/v1/clusters/{c2_id}"), None)
        .await;
    assert_eq!(c2["apps"], 2);
    let r = s
        .call(
            Method::PATCH,
            &format!("/admin/v1/clusters/{c2_id}"),
            Some(json!({"capacity_apps": 1})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("capacity_apps"));
    let r = s
        .call(Method::DELETE, &format!("/admin/v1/clusters/{c2_id}"), None)
        .await;
    assert_error(&r, 409, "conflict", None);
    let (st, _) = s
        .call(Method::DELETE, &format!("/admin/v1/clusters/{c1_id}"), None)
        .await;
    assert_eq!(st, 204);
    let r = s
        .call(Method::GET, &format!("/admin/v1/clusters/{c1_id}"), None)
        .await;
    assert_error(&r, 404, "not_found", None);
}

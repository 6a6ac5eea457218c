//! Cells' identities at the control plane: per-cluster credentials (issued once, listed without
//! secrets, several active during a rotation, refused once revoked), a cell acting only on apps
//! placed on it, and internal endpoints that must be https unless the cluster is development.
use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Server, assert_error, unique};

backend_tests!(
    a_cell_acts_only_on_its_own_apps,
    credentials_rotate_with_an_overlap_and_stop_after_revoke,
    internal_endpoints_are_https_unless_development
);

/// A new active cluster; its id.
pub async fn cluster(s: &Server) -> String {
    let c = s
        .ok(
            Method::POST,
            "/admin/v1/clusters",
            Some(json!({"name": unique("cell"), "region": "test", "capacity_apps": 100})),
        )
        .await;
    c["id"].as_str().unwrap().to_owned()
}

/// A new app of `tenant` placed on `cluster`; its id.
pub async fn app_on(s: &Server, tenant: &str, cluster: &str) -> String {
    let a = s
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{tenant}/apps"),
            Some(json!({"name": unique("app"), "cluster_id": cluster})),
        )
        .await;
    assert_eq!(a["cluster_id"], cluster, "{a}");
    a["id"].as_str().unwrap().to_owned()
}

/// A new credential of `cluster` (`scc_….…`).
pub async fn credential(s: &Server, cluster: &str) -> String {
    let got = s
        .call(
            Method::POST,
            &format!("/admin/v1/clusters/{cluster}/credentials"),
            None,
        )
        .await;
    assert_eq!(got.0, 201, "{}", got.1);
    let secret = got.1["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("scc_"), "{secret}");
    assert!(
        secret.starts_with(&format!("{}.", got.1["id"].as_str().unwrap())),
        "{secret}"
    );
    assert_eq!(got.1["cluster_id"], cluster);
    secret
}

/// Calls the control plane's internal route `path` (under `/internal/v1/tenants`) as a cell.
async fn internal(
    s: &Server,
    m: Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut r = s
        .client
        .request(m, format!("{}/internal/v1/tenants{path}", s.base))
        .bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn endpoint() -> Option<Value> {
    Some(json!({"url": "https://example.com/h"}))
}

async fn a_cell_acts_only_on_its_own_apps(s: Server) {
    let t = s.tenant().await;
    let (cx, cy) = (cluster(&s).await, cluster(&s).await);
    // One tenant, one app on each cell: the tenant matches, only the placement differs.
    let (ax, ay) = (app_on(&s, &t, &cx).await, app_on(&s, &t, &cy).await);
    let (kx, ky) = (credential(&s, &cx).await, credential(&s, &cy).await);
    let on = |a: &str| format!("/{t}/apps/{a}/webhook-endpoints");

    let (st, ex) = internal(&s, Method::POST, &on(&ax), &kx, endpoint()).await;
    assert_eq!(st, 201, "{ex}");
    let ex = ex["id"].as_str().unwrap().to_owned();
    let (st, ey) = internal(&s, Method::POST, &on(&ay), &ky, endpoint()).await;
    assert_eq!(st, 201, "{ey}");
    let ey = ey["id"].as_str().unwrap().to_owned();

    // Cell X on cell Y's app (and Y on X's): not found, for every function, nothing changed.
    for (key, app, id) in [(&kx, &ay, &ey), (&ky, &ax, &ex)] {
        let one = format!("{}/{id}", on(app));
        for (m, path, body) in [
            (Method::POST, on(app), endpoint()),
            (Method::GET, one.clone(), None),
            (Method::PATCH, one.clone(), Some(json!({"enabled": false}))),
            (Method::GET, format!("{one}/secret"), None),
            (
                Method::POST,
                format!("{one}/secret/rotate"),
                Some(json!({})),
            ),
            (Method::DELETE, one.clone(), None),
        ] {
            let got = internal(&s, m.clone(), &path, key, body).await;
            assert_error(&got, 404, "not_found", None);
        }
    }
    for (app, id) in [(&ax, &ex), (&ay, &ey)] {
        let got = s
            .ok(
                Method::GET,
                &format!("/admin/v1/tenants/{t}/apps/{app}/webhook-endpoints"),
                None,
            )
            .await;
        let data = got["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{got}");
        assert_eq!(data[0]["id"], id.as_str());
        assert_eq!(data[0]["enabled"], true, "{got}");
    }

    // The app moves to cell Y: X loses it, Y gains it.
    s.ok(
        Method::POST,
        &format!("/admin/v1/tenants/{t}/apps/{ax}/placement"),
        Some(json!({"cluster_id": cy})),
    )
    .await;
    let one = format!("{}/{ex}", on(&ax));
    let got = internal(&s, Method::GET, &one, &kx, None).await;
    assert_error(&got, 404, "not_found", None);
    let (st, got) = internal(&s, Method::GET, &one, &ky, None).await;
    assert_eq!(st, 200, "{got}");
}

async fn credentials_rotate_with_an_overlap_and_stop_after_revoke(s: Server) {
    let t = s.tenant().await;
    let c = cluster(&s).await;
    let a = app_on(&s, &t, &c).await;
    let path = format!("/{t}/apps/{a}/webhook-endpoints");
    let (st, e) = internal(&s, Method::POST, &path, "", endpoint()).await;
    assert_eq!(st, 401, "{e}");
    let old = credential(&s, &c).await;
    let (st, e) = internal(&s, Method::POST, &path, &old, endpoint()).await;
    assert_eq!(st, 201, "{e}");
    let one = format!("{path}/{}", e["id"].as_str().unwrap());

    // Rotation: a second credential; both work during the overlap.
    let new = credential(&s, &c).await;
    for k in [&old, &new] {
        let (st, e) = internal(&s, Method::GET, &one, k, None).await;
        assert_eq!(st, 200, "{e}");
    }
    let creds = format!("/admin/v1/clusters/{c}/credentials");
    let listed = s.ok(Method::GET, &creds, None).await;
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let text = serde_json::to_string(&listed).unwrap();
    for k in [&old, &new] {
        let (_, secret) = k.split_once('.').unwrap();
        assert!(!text.contains(secret), "a secret in the list: {text}");
    }
    assert!(
        listed.iter().all(|c| c["revoked_at"].is_null()),
        "{listed:?}"
    );
    assert!(
        listed[0]["last_used_at"].is_string(),
        "the old one was used: {listed:?}"
    );

    // Revoke the old one: refused from now on; the new one keeps working.
    let old_id = old.split_once('.').unwrap().0;
    let r = s
        .ok(Method::POST, &format!("{creds}/{old_id}/revoke"), None)
        .await;
    assert!(r["revoked_at"].is_string(), "{r}");
    let got = internal(&s, Method::GET, &one, &old, None).await;
    assert_error(&got, 401, "unauthorized", None);
    let (st, e) = internal(&s, Method::GET, &one, &new, None).await;
    assert_eq!(st, 200, "{e}");

    // A wrong secret under a good id; a credential of another cluster revoked through this one;
    // unknown ids: refused or not found.
    let new_id = new.split_once('.').unwrap().0;
    let forged = format!("{new_id}.{}", "A".repeat(43));
    let got = internal(&s, Method::GET, &one, &forged, None).await;
    assert_error(&got, 401, "unauthorized", None);
    let other = cluster(&s).await;
    let got = s
        .call(
            Method::POST,
            &format!("/admin/v1/clusters/{other}/credentials/{new_id}/revoke"),
            None,
        )
        .await;
    assert_error(&got, 404, "not_found", None);
    let got = s
        .call(Method::POST, &format!("{creds}/scc_nope/revoke"), None)
        .await;
    assert_error(&got, 404, "not_found", None);
    let got = s
        .call(
            Method::POST,
            "/admin/v1/clusters/cls_01jdq3v9k6b2c8x4m7n5p0r1st/credentials",
            None,
        )
        .await;
    assert_error(&got, 404, "not_found", None);
    let (st, e) = internal(&s, Method::GET, &one, &new, None).await;
    assert_eq!(st, 200, "still good: {e}");
}

async fn internal_endpoints_are_https_unless_development(s: Server) {
    let mk = |extra: Value| {
        let mut body = json!({"name": unique("cell"), "region": "test", "capacity_apps": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for bad in [
        json!({"internal_endpoint": "http://cell.internal:7401"}),
        json!({"internal_endpoint": "http://cell.internal:7401", "development": false}),
    ] {
        let got = s
            .call(Method::POST, "/admin/v1/clusters", Some(mk(bad)))
            .await;
        assert_error(&got, 422, "validation_failed", Some("internal_endpoint"));
    }
    for bad in [
        "https://cell.internal:7401/prefix",
        "https://u:p@cell.internal",
        "https://cell.internal/?q=1",
        "ftp://cell.internal",
        "cell.internal:7401",
    ] {
        let got = s
            .call(
                Method::POST,
                "/admin/v1/clusters",
                Some(mk(json!({"internal_endpoint": bad, "development": true}))),
            )
            .await;
        assert_error(&got, 422, "validation_failed", Some("internal_endpoint"));
    }
    let c = s
        .ok(
            Method::POST,
            "/admin/v1/clusters",
            Some(mk(
                json!({"internal_endpoint": "https://cell.internal:7401/"}),
            )),
        )
        .await;
    assert_eq!(c["internal_endpoint"], "https://cell.internal:7401");
    assert_eq!(c["development"], false);
    let id = c["id"].as_str().unwrap();
    let path = format!("/admin/v1/clusters/{id}");
    let got = s
        .call(
            Method::PATCH,
            &path,
            Some(json!({"internal_endpoint": "http://cell.internal:7401"})),
        )
        .await;
    assert_error(&got, 422, "validation_failed", Some("internal_endpoint"));
    // Marked development, plain http is accepted; unmarking it then is refused, naming the field.
    let d = s
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"internal_endpoint": "http://127.0.0.1:7401", "development": true})),
        )
        .await;
    assert_eq!(
        (d["internal_endpoint"].as_str(), d["development"].as_bool()),
        (Some("http://127.0.0.1:7401"), Some(true))
    );
    let got = s
        .call(Method::PATCH, &path, Some(json!({"development": false})))
        .await;
    assert_error(&got, 422, "validation_failed", Some("development"));
    let d = s
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"internal_endpoint": null, "development": false})),
        )
        .await;
    assert!(d["internal_endpoint"].is_null(), "{d}");
}

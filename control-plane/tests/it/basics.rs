//! Authentication, error shapes, unknown routes, health and metrics.
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Server, assert_error};

backend_tests!(
    auth_is_required,
    malformed_requests_get_clear_errors,
    ops_endpoints_answer,
    a_path_parameter_that_is_not_utf8_is_a_json_400_naming_it
);

async fn auth_is_required(s: Server) {
    let url = format!("{}/admin/v1/tenants", s.base);
    let res = s.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["code"], "unauthorized");
    assert!(
        v["message"].as_str().unwrap().contains("Authorization"),
        "{v}"
    );

    let res = s
        .client
        .get(&url)
        .bearer_auth("sop_wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = s
        .client
        .get(&url)
        .basic_auth("operator", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Nothing was created by a refused POST.
    let res = s
        .client
        .post(&url)
        .bearer_auth("sop_wrong-token")
        .json(&json!({"name": "intruder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The spec is public.
    let res = s
        .client
        .get(format!("{}/admin/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn malformed_requests_get_clear_errors(s: Server) {
    let r = s
        .raw(
            Method::POST,
            "/admin/v1/tenants",
            "application/json",
            "{\"name\": ",
        )
        .await;
    assert_error(&r, 400, "invalid_json", None);
    let r = s
        .raw(Method::POST, "/admin/v1/tenants", "text/plain", "name=x")
        .await;
    assert_error(&r, 415, "unsupported_media_type", None);
    let r = s
        .call(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "x", "colour": "red"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("colour"));
    let r = s
        .call(Method::POST, "/admin/v1/tenants", Some(json!({"name": 42})))
        .await;
    assert_error(&r, 422, "validation_failed", Some("name"));
    let r = s
        .call(Method::POST, "/admin/v1/tenants", Some(json!({})))
        .await;
    assert_error(&r, 422, "validation_failed", Some("name"));
    let r = s
        .call(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "   "})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("name"));
    let r = s
        .call(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "x", "plan_id": "app_01jdq3v9k6b2c8x4m7n5p0r1st"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("plan_id"));
    let r = s.call(Method::GET, "/admin/v1/tenants?limit=0", None).await;
    assert_error(&r, 400, "invalid_request", Some("limit"));
    let r = s
        .call(Method::GET, "/admin/v1/tenants?limit=abc", None)
        .await;
    assert_error(&r, 400, "invalid_request", Some("limit"));
    let r = s
        .call(Method::GET, "/admin/v1/tenants?cursor=garbage", None)
        .await;
    assert_error(&r, 400, "invalid_request", Some("cursor"));
    let r = s.call(Method::GET, "/admin/v1/nope", None).await;
    assert_error(&r, 404, "not_found", None);
    let r = s.call(Method::PUT, "/admin/v1/tenants", None).await;
    assert_error(&r, 405, "method_not_allowed", None);
    let r = s
        .call(Method::GET, "/admin/v1/tenants/not-an-id", None)
        .await;
    assert_error(&r, 404, "not_found", None);
    let r = s
        .call(
            Method::GET,
            "/admin/v1/tenants/tnt_01jdq3v9k6b2c8x4m7n5p0r1st",
            None,
        )
        .await;
    assert_error(&r, 404, "not_found", None);
}

async fn ops_endpoints_answer(s: Server) {
    let v: serde_json::Value = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");
    let res = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["checks"]["database"], "ok");
    assert_eq!(v["checks"]["cache"], "ok");
    let res = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"],
        "trace-me-42",
        "a sane client request id is kept"
    );
    let res = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let (_, v, h) = s
        .call_with(
            Method::GET,
            "/admin/v1/tenants/x",
            None,
            &[("x-request-id", "abc-1")],
        )
        .await;
    assert_eq!(
        v["request_id"], "abc-1",
        "error bodies carry the request id"
    );
    assert_eq!(h["x-request-id"], "abc-1");
    let res = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

/// `%FF%FE` decodes to bytes that are not UTF-8: the JSON error body naming the parameter, on
/// the admin API and on the internal routes the cells call (axum's own answer is plain text).
async fn a_path_parameter_that_is_not_utf8_is_a_json_400_naming_it(s: Server) {
    let got = s.call(Method::GET, "/admin/v1/tenants/%FF%FE", None).await;
    assert_error(&got, 400, "invalid_request", Some("tenant_id"));
    let t = s.tenant().await;
    let got = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/%C3%28"),
            None,
        )
        .await;
    assert_error(&got, 400, "invalid_request", Some("app_id"));
    // A cell, with its genuine credential, on the internal routes.
    let cluster = crate::cell_identity::cluster(&s).await;
    let app = crate::cell_identity::app_on(&s, &t, &cluster).await;
    let key = crate::cell_identity::credential(&s, &cluster).await;
    let res = s
        .client
        .get(format!(
            "{}/internal/v1/tenants/{t}/apps/{app}/webhook-endpoints/%FF%FE",
            s.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let st = res.status();
    let text = res.text().await.unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{st}, not JSON: {text}"));
    assert_error(&(st, v), 400, "invalid_request", Some("endpoint_id"));
}

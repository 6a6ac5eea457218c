//! Webhook endpoints managed through the server API of `standalone` (where the node runs in
//! the control plane's process): create, read, change, rotate the secret, delete; other apps'
//! endpoints are not found, read-only keys cannot write nor read a secret, bad input names its
//! field.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, wait_healthy};

use super::{START, token_from};

async fn call(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    loop {
        let mut r = c.request(method.clone(), url).bearer_auth(token);
        if let Some(b) = &body {
            r = r.json(b);
        }
        let r = r.send().await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        // The default plan allows 10 server API requests a second.
        if st == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return (st, serde_json::from_str(&text).unwrap_or(Value::Null));
    }
}

#[tokio::test]
async fn server_api_manages_webhook_endpoints_within_its_app() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        &[],
        dir.path(),
    );
    let op = token_from(&p.wait_for_line("Press Ctrl-C", START).unwrap());
    wait_healthy(&format!("{base}/healthz"), START)
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let (st, t) = call(
        &c,
        Method::POST,
        &format!("{base}/admin/v1/tenants"),
        &op,
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let t = t["id"].as_str().unwrap().to_owned();
    let mut keys: Vec<(String, String)> = Vec::new();
    for (name, scopes) in [
        ("one", json!(["server_full"])),
        ("two", json!(["server_full"])),
        ("one-ro", json!(["read_only"])),
    ] {
        let app = if name == "one-ro" {
            keys[0].0.clone()
        } else {
            let (st, a) = call(
                &c,
                Method::POST,
                &format!("{base}/admin/v1/tenants/{t}/apps"),
                &op,
                Some(json!({"name": name, "environment": "production"})),
            )
            .await;
            assert_eq!(st, 201, "{a}");
            a["id"].as_str().unwrap().to_owned()
        };
        let (st, k) = call(
            &c,
            Method::POST,
            &format!("{base}/admin/v1/tenants/{t}/apps/{app}/api-keys"),
            &op,
            Some(json!({"name": name, "scopes": scopes})),
        )
        .await;
        assert_eq!(st, 201, "{k}");
        keys.push((app, k["secret"].as_str().unwrap().to_owned()));
    }
    let (app1, key1) = keys[0].clone();
    let (_, key2) = keys[1].clone();
    let ro = keys[2].1.clone();
    let v1 = format!("{base}/v1/webhooks/endpoints");

    // Bad input names its field; nothing is created.
    let (st, e) = call(
        &c,
        Method::POST,
        &v1,
        &key1,
        Some(json!({"url": "ftp://x"})),
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["field"], "url", "{e}");
    let (st, e) = call(
        &c,
        Method::POST,
        &v1,
        &key1,
        Some(json!({"url": "https://example.com/h", "event_types": ["nope"]})),
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["field"], "event_types[0]", "{e}");
    // A read-only key cannot create.
    let (st, e) = call(
        &c,
        Method::POST,
        &v1,
        &ro,
        Some(json!({"url": "https://example.com/h"})),
    )
    .await;
    assert_eq!(st, 403, "{e}");

    let (st, ep) = call(
        &c,
        Method::POST,
        &v1,
        &key1,
        Some(json!({"url": "https://example.com/h", "event_types": ["message.created"], "ordered": true})),
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let id = ep["id"].as_str().unwrap().to_owned();
    let secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{ep}");
    assert_eq!(ep["app_id"], app1.as_str());
    // The cell's view follows (the configuration is republished).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, l) = call(&c, Method::GET, &v1, &key1, None).await;
        if l.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["id"] == id.as_str() && e["ordered"] == true)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never saw the endpoint: {l}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The admin API sees the same endpoint.
    let (st, a) = call(
        &c,
        Method::GET,
        &format!("{base}/admin/v1/tenants/{t}/apps/{app1}/webhook-endpoints/{id}"),
        &op,
        None,
    )
    .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["url"], "https://example.com/h");

    let one = format!("{v1}/{id}");
    let (st, u) = call(
        &c,
        Method::PATCH,
        &one,
        &key1,
        Some(json!({"enabled": false, "url": "https://example.org/x"})),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(
        (u["enabled"].clone(), u["url"].clone()),
        (json!(false), json!("https://example.org/x"))
    );
    let (st, g) = call(&c, Method::GET, &one, &key1, None).await;
    assert_eq!(
        (st, g["enabled"].clone()),
        (StatusCode::OK, json!(false)),
        "{g}"
    );
    let (st, e) = call(
        &c,
        Method::PATCH,
        &one,
        &key1,
        Some(json!({"rate_limit_per_second": 0})),
    )
    .await;
    assert_eq!(
        (st, e["field"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("rate_limit_per_second")
        ),
        "{e}"
    );

    let (st, r) = call(
        &c,
        Method::POST,
        &format!("{one}/secret/rotate"),
        &key1,
        Some(json!({"overlap_seconds": 60})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let new = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, secret);
    assert!(r["previous_expires_at"].is_string(), "{r}");
    let (st, s) = call(&c, Method::GET, &format!("{one}/secret"), &key1, None).await;
    assert_eq!(
        (st, s["secret"].as_str()),
        (StatusCode::OK, Some(new.as_str())),
        "{s}"
    );

    // A read-only key of the same app reads the endpoint but not its secret, which would let it
    // sign webhooks as the platform (docs/SECURITY.md, "API key scopes").
    let (st, g) = call(&c, Method::GET, &one, &ro, None).await;
    assert_eq!(st, 200, "{g}");
    for (m, url, body) in [
        (Method::GET, format!("{one}/secret"), None),
        (
            Method::POST,
            format!("{one}/secret/rotate"),
            Some(json!({})),
        ),
    ] {
        let (st, e) = call(&c, m.clone(), &url, &ro, body).await;
        assert_eq!(st, 403, "{m} {url}: {e}");
        assert_eq!(e["code"], "forbidden", "{e}");
        assert!(e.to_string().contains("`secrets` permission"), "{e}");
        assert!(!e.to_string().contains(&new), "{e}");
    }

    // Another app's key: not found, whatever it tries; and nothing changed.
    for (m, url, body) in [
        (Method::GET, one.clone(), None),
        (Method::PATCH, one.clone(), Some(json!({"enabled": true}))),
        (Method::DELETE, one.clone(), None),
        (Method::GET, format!("{one}/secret"), None),
        (
            Method::POST,
            format!("{one}/secret/rotate"),
            Some(json!({})),
        ),
    ] {
        let (st, e) = call(&c, m.clone(), &url, &key2, body).await;
        assert_eq!(st, 404, "{m} {url}: {e}");
        assert_eq!(e["code"], "not_found", "{e}");
    }
    let (_, s) = call(&c, Method::GET, &format!("{one}/secret"), &key1, None).await;
    assert_eq!(s["secret"].as_str(), Some(new.as_str()), "{s}");
    let (_, g) = call(&c, Method::GET, &one, &key1, None).await;
    assert_eq!(g["enabled"], false, "{g}");
    let (st, e) = call(&c, Method::GET, &format!("{v1}/not-an-id"), &key1, None).await;
    assert_eq!(st, 404, "{e}");

    let (st, _) = call(&c, Method::DELETE, &one, &key1, None).await;
    assert_eq!(st, 204);
    let (st, _) = call(&c, Method::GET, &one, &key1, None).await;
    assert_eq!(st, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, l) = call(&c, Method::GET, &v1, &key1, None).await;
        if l.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node still has the endpoint: {l}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.terminate(Duration::from_secs(20)).unwrap();
}

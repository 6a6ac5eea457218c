//! Billing end to end on `starling standalone` with Stripe billing pointed at stripe-mock
//! (`TEST_STRIPE_MOCK_URL`): usage metered from real traffic; inbound Stripe webhooks signed by
//! Stripe's own Node library (`TEST_STRIPE_NODE_PATH`, installed by `scripts/test`), verified
//! (bad or stale signatures refused, nothing changed), replays and out-of-order events harmless;
//! a failed payment suspends the tenant's app after the grace period (the server API answers
//! `app_suspended`), a payment restores it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, wait_healthy};

const WHSEC: &str = "whsec_e2e_0123456789abcdef";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which provides it")
    })
}

/// A `Stripe-Signature` header made by Stripe's official library.
fn sign(payload: &str, secret: &str, timestamp: Option<i64>) -> String {
    let out = std::process::Command::new("node")
        .env("NODE_PATH", env("TEST_STRIPE_NODE_PATH"))
        .arg("-e")
        .arg(
            r#"const stripe = require("stripe")("sk_test_unused");
const [payload, secret, ts] = process.argv.slice(1);
const o = { payload, secret };
if (ts) o.timestamp = Number(ts);
process.stdout.write(stripe.webhooks.generateTestHeaderString(o));"#,
        )
        .arg(payload)
        .arg(secret)
        .arg(timestamp.map(|t| t.to_string()).unwrap_or_default())
        .output()
        .expect("run node (installed by scripts/test)");
    assert!(
        out.status.success(),
        "signing with the stripe library failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "data": {"object": object}})
    .to_string()
}

struct Api {
    c: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.call(method.clone(), path, body).await;
        assert!(st.is_success(), "{method} {path} → {st}: {v}");
        v
    }

    async fn webhook(&self, payload: &str, sig: Option<&str>) -> (StatusCode, Value) {
        let mut r = self
            .c
            .post(format!("{}/stripe/webhook", self.base))
            .header("content-type", "application/json")
            .body(payload.to_owned());
        if let Some(s) = sig {
            r = r.header("stripe-signature", s);
        }
        let r = r.send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 30 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failure_suspends_and_payment_restores_end_to_end() {
    let mock = env("TEST_STRIPE_MOCK_URL");
    env("TEST_STRIPE_NODE_PATH");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        &[
            ("STARLING_BILLING__STRIPE_SECRET_KEY", "sk_test_starlinge2e"),
            ("STARLING_BILLING__STRIPE_API_BASE", &mock),
            ("STARLING_BILLING__STRIPE_WEBHOOK_SECRET", WHSEC),
            ("STARLING_BILLING__GRACE_PERIOD_SECS", "4"),
            ("STARLING_BILLING__SYNC_INTERVAL_SECS", "1"),
            ("STARLING_GATEWAY__USAGE_FLUSH_MS", "200"),
        ],
        dir.path(),
    );
    let out = p
        .wait_for_line("Press Ctrl-C", Duration::from_secs(60))
        .unwrap();
    let token = out
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("sop_"))
                .map(str::to_owned)
        })
        .expect("operator token printed");
    wait_healthy(&format!("{base}/healthz"), Duration::from_secs(60))
        .await
        .unwrap();
    let admin = Api {
        c: reqwest::Client::new(),
        base: base.clone(),
        token,
    };
    use reqwest::Method;
    let pro = admin
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": "pro", "name": "Pro"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let team = admin
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": "team", "name": "Team"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .ok(
            Method::PUT,
            &format!("/admin/v1/plans/{pro}/price"),
            Some(json!({"price_id": "price_pro"})),
        )
        .await;
    admin
        .ok(
            Method::PUT,
            &format!("/admin/v1/plans/{team}/price"),
            Some(json!({"price_id": "price_team"})),
        )
        .await;
    let t = admin
        .ok(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "Acme"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = admin
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps"),
            Some(json!({"name": "chat"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = admin
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/apps/{a}/api-keys"),
            Some(json!({"name": "backend"})),
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = admin
        .ok(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": pro})),
        )
        .await;
    let customer = b["stripe_customer_id"].as_str().unwrap().to_owned();
    let sub = b["stripe_subscription_id"].as_str().unwrap().to_owned();

    // Traffic, metered by the node and aggregated by the control plane.
    let server = Api {
        c: reqwest::Client::new(),
        base: base.clone(),
        token: key,
    };
    server
        .ok(
            Method::PUT,
            "/v1/users/alice",
            Some(json!({"name": "Alice"})),
        )
        .await;
    let cid = server
        .ok(
            Method::POST,
            "/v1/conversations",
            Some(json!({"kind": "group", "created_by": "alice", "members": [], "name": "g"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..3 {
        server
            .ok(
                Method::POST,
                &format!("/v1/conversations/{cid}/messages"),
                Some(json!({"text": format!("hi {i}")})),
            )
            .await;
    }
    let usage_path = format!("/admin/v1/tenants/{t}/apps/{a}/usage");
    eventually("usage reaches the control plane", || async {
        admin.ok(Method::GET, &usage_path, None).await["usage"]["messages"] == 3
    })
    .await;
    let u = admin.ok(Method::GET, &usage_path, None).await;
    assert!(u["usage"]["api_calls"].as_u64().unwrap() >= 5, "{u}");
    assert!(u["usage"]["stored_bytes"].as_u64().unwrap() >= 12, "{u}");

    let billing_path = format!("/admin/v1/tenants/{t}/billing");
    let now = chrono::Utc::now().timestamp();
    let invoice =
        json!({"id": "in_1", "object": "invoice", "customer": customer, "subscription": sub});
    let failed = event(
        "evt_failed_1",
        "invoice.payment_failed",
        now,
        invoice.clone(),
    );

    // Bad, missing and stale signatures: 400, nothing changed.
    let (st, v) = admin
        .webhook(&failed, Some(&sign(&failed, "whsec_wrong", None)))
        .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (st, _) = admin.webhook(&failed, None).await;
    assert_eq!(st, 400);
    let (st, v) = admin
        .webhook(&failed, Some(&sign(&failed, WHSEC, Some(now - 3600))))
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("tolerance"), "{v}");
    let tampered = failed.replace("in_1", "in_2");
    let (st, _) = admin
        .webhook(&tampered, Some(&sign(&failed, WHSEC, None)))
        .await;
    assert_eq!(st, 400, "a signature covers the exact payload");
    let b = admin.ok(Method::GET, &billing_path, None).await;
    assert_eq!(b["payment_failed_at"], Value::Null, "nothing changed: {b}");

    // A failed payment: a grace period, then the app is suspended.
    let (st, v) = admin
        .webhook(&failed, Some(&sign(&failed, WHSEC, None)))
        .await;
    assert_eq!(
        (st.as_u16(), v["status"].as_str()),
        (200, Some("applied")),
        "{v}"
    );
    let (st, v) = admin
        .webhook(&failed, Some(&sign(&failed, WHSEC, None)))
        .await;
    assert_eq!(
        (st.as_u16(), v["status"].as_str()),
        (200, Some("duplicate")),
        "a replay: {v}"
    );
    let b = admin.ok(Method::GET, &billing_path, None).await;
    assert!(b["grace_until"].is_string(), "{b}");
    eventually("the app is suspended after the grace period", || async {
        let (st, v) = server.call(Method::GET, "/v1/users/alice", None).await;
        st == StatusCode::FORBIDDEN && v["code"] == "app_suspended"
    })
    .await;
    let b = admin.ok(Method::GET, &billing_path, None).await;
    assert_eq!(b["suspended_by_billing"], true, "{b}");

    // An older payment arriving late changes nothing.
    let old_paid = event("evt_paid_old", "invoice.paid", now - 100, invoice.clone());
    let (_, v) = admin
        .webhook(&old_paid, Some(&sign(&old_paid, WHSEC, None)))
        .await;
    assert_eq!(v["status"], "stale", "{v}");
    let (st, _) = server.call(Method::GET, "/v1/users/alice", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "still suspended");

    // Payment: restored.
    let paid = event("evt_paid_1", "invoice.paid", now + 1, invoice.clone());
    let (_, v) = admin.webhook(&paid, Some(&sign(&paid, WHSEC, None))).await;
    assert_eq!(v["status"], "applied", "{v}");
    eventually("the app serves again after payment", || async {
        server.call(Method::GET, "/v1/users/alice", None).await.0 == StatusCode::OK
    })
    .await;
    let b = admin.ok(Method::GET, &billing_path, None).await;
    assert_eq!(
        (b["suspended_by_billing"].as_bool(), &b["grace_until"]),
        (Some(false), &Value::Null),
        "{b}"
    );
    // The failure replayed after the payment stays a replay.
    let (_, v) = admin
        .webhook(&failed, Some(&sign(&failed, WHSEC, None)))
        .await;
    assert_eq!(v["status"], "duplicate");

    // Subscription events move the tenant's plan; an older one arriving late does not.
    let updated = event(
        "evt_sub_upd",
        "customer.subscription.updated",
        now + 2,
        json!({"id": sub, "object": "subscription", "customer": customer, "status": "active",
               "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_team"}}]}}),
    );
    let (_, v) = admin
        .webhook(&updated, Some(&sign(&updated, WHSEC, None)))
        .await;
    assert_eq!(v["status"], "applied", "{v}");
    let late = event(
        "evt_sub_del_old",
        "customer.subscription.deleted",
        now - 50,
        json!({"id": sub, "object": "subscription", "customer": customer, "status": "canceled",
               "items": {"object": "list", "data": []}}),
    );
    let (_, v) = admin.webhook(&late, Some(&sign(&late, WHSEC, None))).await;
    assert_eq!(v["status"], "stale", "{v}");
    let b = admin.ok(Method::GET, &billing_path, None).await;
    assert_eq!(b["plan_id"], team.as_str(), "{b}");
    assert_eq!(b["subscription_status"], "active");
    // An event about a customer that is no tenant here is acknowledged and ignored.
    let stranger = event(
        "evt_other",
        "invoice.payment_failed",
        now,
        json!({"customer": "cus_nobody"}),
    );
    let (st, v) = admin
        .webhook(&stranger, Some(&sign(&stranger, WHSEC, None)))
        .await;
    assert_eq!((st.as_u16(), v["status"].as_str()), (200, Some("ignored")));
    p.interrupt(Duration::from_secs(20)).unwrap();
}

//! Stripe billing against stripe-mock (`TEST_STRIPE_MOCK_URL`, started by `scripts/test`):
//! plan prices, subscriptions created/changed/cancelled through the admin API, metered usage
//! reported once per hour. stripe-mock is stateless (it validates requests against Stripe's API
//! and answers with fixtures), so these tests check our requests are accepted and our state
//! follows; inbound webhooks and suspension are in the black-box tests (`tests/e2e/billing.rs`).

use std::sync::Arc;

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;
use starling_control_plane::service::ControlPlane;
use starling_control_plane::service::billing::Billing;
use starling_core::clock::{Clock, ManualClock, hour_start};
use starling_core::id::{AppId, TenantId};
use starling_core::secret::KeyHasher;
use starling_core::usage::UsageReport;

use crate::harness::{Backend, KEY_HASH_SECRET, Server, assert_error, unique};

fn stripe_mock() -> String {
    std::env::var("TEST_STRIPE_MOCK_URL").expect(
        "TEST_STRIPE_MOCK_URL is not set: run the tests with scripts/test, which starts stripe-mock",
    )
}

fn billing() -> Billing {
    Billing::new(
        &stripe_mock(),
        "sk_test_starling",
        Some("whsec_test".into()),
        300,
        3600,
        "starling_messages",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_is_off_unless_configured() {
    let s = Server::start(Backend::Sqlite).await;
    let t = s.tenant().await;
    let plans = s.ok(Method::GET, "/admin/v1/plans", None).await;
    let plan = plans["data"][0]["id"].as_str().unwrap().to_owned();
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": plan})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("billing is not configured")
    );
    let (st, _) = s
        .call(Method::POST, "/stripe/webhook", Some(json!({})))
        .await;
    assert_eq!(st, 404, "no webhook endpoint without billing");
}

/// SQLite: stripe-mock answers every customer creation with the same fixture id, which a shared
/// database would (rightly) refuse to link to a second tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_metered_usage_against_stripe_mock() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let c2 = clock.clone();
    let s = Server::start_custom(Backend::Sqlite, move |cp| {
        cp.with_billing(billing()).with_clock(c2)
    })
    .await;
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let pro = s
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("pro"), "name": "Pro", "limits": {"messages_per_month": 1000}})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let team = s
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("team"), "name": "Team", "soft_limits": ["messages_per_month"]})),
        )
        .await;
    assert_eq!(team["soft_limits"], json!(["messages_per_month"]));
    let team = team["id"].as_str().unwrap().to_owned();

    // A plan without a price cannot be subscribed to.
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": pro})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("plan_id"));
    let r = s
        .call(
            Method::PUT,
            &format!("/admin/v1/plans/{pro}/price"),
            Some(json!({"price_id": "nope"})),
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("price_id"));
    s.ok(
        Method::PUT,
        &format!("/admin/v1/plans/{pro}/price"),
        Some(json!({"price_id": "price_pro", "metered_price_id": "price_messages"})),
    )
    .await;
    s.ok(
        Method::PUT,
        &format!("/admin/v1/plans/{team}/price"),
        Some(json!({"price_id": "price_team"})),
    )
    .await;

    // Subscribe: a Stripe customer and subscription, and the tenant is on the plan.
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": pro})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    assert!(
        b["stripe_customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cus_"),
        "{b}"
    );
    assert!(
        b["stripe_subscription_id"]
            .as_str()
            .unwrap()
            .starts_with("sub_"),
        "{b}"
    );
    assert_eq!(b["plan_id"], pro.as_str());
    let tenant = s
        .ok(Method::GET, &format!("/admin/v1/tenants/{t}"), None)
        .await;
    assert_eq!(tenant["plan_id"], pro.as_str());
    let r = s
        .call(
            Method::POST,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": pro})),
        )
        .await;
    assert_error(&r, 409, "conflict", None);

    // Metered usage: each finished hour once, under an idempotency key and meter identifier.
    let cp = ControlPlane::new(
        s.db.clone(),
        KeyHasher::new(KEY_HASH_SECRET),
        crate::harness::sealer(),
    )
    .with_billing(billing())
    .with_clock(clock.clone());
    let hour = hour_start(clock.now());
    cp.record_usage(&UsageReport {
        id: unique("rep"),
        app_id: AppId::parse(&a).unwrap(),
        node_id: "n1".into(),
        hour,
        messages: 42,
        api_calls: 0,
        active_users: vec![],
        peak_connections: 0,
        stored_bytes: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        cp.report_metered_usage(Duration::minutes(10))
            .await
            .unwrap(),
        0,
        "the hour has not ended"
    );
    clock.set(hour + Duration::minutes(75));
    assert_eq!(
        cp.report_metered_usage(Duration::minutes(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cp.report_metered_usage(Duration::minutes(10))
            .await
            .unwrap(),
        0,
        "an hour is reported once"
    );

    // Change plans, then cancel.
    let b = s
        .ok(
            Method::PATCH,
            &format!("/admin/v1/tenants/{t}/subscription"),
            Some(json!({"plan_id": team})),
        )
        .await;
    assert_eq!(b["plan_id"], team.as_str());
    let b = s
        .ok(
            Method::DELETE,
            &format!("/admin/v1/tenants/{t}/subscription"),
            None,
        )
        .await;
    assert_eq!(b["subscription_status"], "canceled");
    assert_ne!(b["plan_id"], team.as_str(), "back on the default plan");
    let r = s
        .call(
            Method::DELETE,
            &format!("/admin/v1/tenants/{t}/subscription"),
            None,
        )
        .await;
    assert_error(&r, 409, "conflict", None);
    // Another tenant's billing is its own.
    let other = s.tenant().await;
    let b = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{other}/billing"),
            None,
        )
        .await;
    assert_eq!(b["stripe_customer_id"], serde_json::Value::Null);
    let _ = TenantId::parse(&t).unwrap();
}

/// `Stripe-Signature` for `payload` with the tests' webhook secret.
fn stripe_signature(payload: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let t = Utc::now().timestamp();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A Stripe event whose plan change fails to apply (here: a trigger refuses the tenant's
/// update) is not recorded as processed: Stripe's redelivery applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_event_whose_plan_change_fails_is_applied_on_redelivery() {
    use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
    use starling_control_plane::entity::billing::{plan_price, tenant_billing};
    let s = Server::start_custom(Backend::Postgres, |cp| {
        // No Stripe call is made on this path: the API base is never reached.
        cp.with_billing(Billing::new(
            "http://127.0.0.1:9",
            "sk_test_starling",
            Some("whsec_test".into()),
            300,
            3600,
            "starling_messages",
        ))
    })
    .await;
    let t = s.tenant().await;
    let pro = s
        .ok(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"code": unique("pro"), "name": "Pro"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (customer, price) = (unique("cus"), unique("price"));
    let now = Utc::now();
    plan_price::ActiveModel {
        plan_id: Set(pro.clone()),
        stripe_price_id: Set(price.clone()),
        stripe_metered_price_id: Set(None),
        updated_at: Set(now),
    }
    .insert(&s.db)
    .await
    .unwrap();
    tenant_billing::ActiveModel {
        tenant_id: Set(t.clone()),
        stripe_customer_id: Set(customer.clone()),
        stripe_subscription_id: Set(None),
        subscription_status: Set(None),
        subscription_item_id: Set(None),
        metered_item_id: Set(None),
        subscription_event_at: Set(None),
        invoice_event_at: Set(None),
        payment_failed_at: Set(None),
        grace_until: Set(None),
        usage_reported_until: Set(None),
        suspended_by_billing: Set(false),
        updated_at: Set(now),
    }
    .insert(&s.db)
    .await
    .unwrap();
    // The fault: this tenant's row refuses every update for now.
    let trig = unique("fail").replace('-', "_");
    s.db.execute_unprepared(&format!(
        "CREATE FUNCTION {trig}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER {trig} BEFORE UPDATE ON tenant FOR EACH ROW \
         WHEN (OLD.id = '{t}') EXECUTE FUNCTION {trig}();"
    ))
    .await
    .unwrap();
    let event = json!({
        "id": unique("evt"), "type": "customer.subscription.updated",
        "created": now.timestamp(),
        "data": {"object": {"id": unique("sub"), "customer": customer, "status": "active",
            "items": {"data": [{"id": unique("si"), "price": {"id": price}}]}}}
    });
    let body = serde_json::to_vec(&event).unwrap();
    let post = || async {
        s.client
            .post(format!("{}/stripe/webhook", s.base))
            .header("stripe-signature", stripe_signature(&body))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap()
    };
    let r = post().await;
    assert!(
        r.status().is_server_error(),
        "the failed plan change is answered with an error, so Stripe retries: {}",
        r.status()
    );
    s.db.execute_unprepared(&format!(
        "DROP TRIGGER {trig} ON tenant; DROP FUNCTION {trig}();"
    ))
    .await
    .unwrap();
    let r = post().await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "applied", "the redelivery applies it: {v}");
    let tenant = s
        .ok(Method::GET, &format!("/admin/v1/tenants/{t}"), None)
        .await;
    assert_eq!(tenant["plan_id"], pro.as_str(), "{tenant}");
    let r = post().await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "duplicate", "applied once: {v}");
}

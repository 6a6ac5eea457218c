//! Usage aggregation (each report id once, also over Pulsar), the usage API, quota threshold
//! events, and tenancy of usage.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use starling_control_plane::service::ControlPlane;
use starling_core::clock::hour_start;
use starling_core::id::AppId;
use starling_core::secret::KeyHasher;
use starling_core::usage::{UsageFeed, UsageReport};

use crate::backend_tests;
use crate::harness::{Backend, KEY_HASH_SECRET, Server, assert_error, unique};

backend_tests!(
    usage_counts_each_report_once,
    quota_thresholds_raise_events_once_per_period,
    usage_api_validates_and_keeps_tenants_apart
);

fn report(app: &str, node: &str, messages: u64, users: &[&str]) -> UsageReport {
    UsageReport {
        id: unique("rep"),
        app_id: AppId::parse(app).unwrap(),
        node_id: node.into(),
        hour: hour_start(Utc::now()),
        messages,
        api_calls: 2,
        active_users: users.iter().map(|u| u.to_string()).collect(),
        peak_connections: 3,
        stored_bytes: 100,
    }
}

fn aggregator(s: &Server) -> ControlPlane {
    ControlPlane::new(
        s.db.clone(),
        KeyHasher::new(KEY_HASH_SECRET),
        crate::harness::sealer(),
    )
}

async fn usage_counts_each_report_once(s: Server) {
    let cp = aggregator(&s);
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let r1 = report(&a, "n1", 5, &["u1", "u2"]);
    assert!(cp.record_usage(&r1).await.unwrap(), "first delivery counts");
    // The node re-sends (it never heard back), the transport redelivers: counted once.
    for _ in 0..3 {
        assert!(
            !cp.record_usage(&r1).await.unwrap(),
            "a re-sent report is recognised"
        );
    }
    if s.backend == Backend::Postgres {
        // Concurrent deliveries of one report (two aggregators): still once.
        let r = report(&a, "n3", 0, &[]);
        let (x, y) = tokio::join!(cp.record_usage(&r), cp.record_usage(&r));
        assert_eq!(
            [x.unwrap(), y.unwrap()].iter().filter(|b| **b).count(),
            1,
            "exactly one of two concurrent deliveries counts"
        );
    }
    let mut r2 = report(&a, "n2", 3, &["u2", "u3"]);
    r2.peak_connections = 4;
    assert!(cp.record_usage(&r2).await.unwrap());
    assert!(!cp.record_usage(&r2).await.unwrap());

    let u = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage"),
            None,
        )
        .await;
    assert_eq!(u["usage"]["messages"], 8, "{u}");
    assert_eq!(
        u["usage"]["api_calls"],
        if s.backend == Backend::Postgres { 6 } else { 4 }
    );
    assert_eq!(u["usage"]["monthly_active_users"], 3, "distinct users: {u}");
    assert_eq!(
        u["usage"]["peak_connections"],
        if s.backend == Backend::Postgres {
            10
        } else {
            7
        },
        "summed over nodes within the hour: {u}"
    );
    assert_eq!(u["period"], starling_core::clock::period_of(Utc::now()));
    assert_eq!(u["history"].as_array().unwrap().len(), 6);
    // The default plan's limits are listed with their use.
    let q = u["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "messages_per_month")
        .unwrap();
    assert_eq!(q["used"], 8);
    assert_eq!(q["soft"], false);

    let h = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage/hourly"),
            None,
        )
        .await;
    assert_eq!(h["hours"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["hours"][0]["messages"], 8);
    let period = starling_core::clock::period_of(Utc::now());
    let m = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage/months/{period}"),
            None,
        )
        .await;
    assert_eq!(m["usage"]["messages"], 8);
}

async fn quota_thresholds_raise_events_once_per_period(s: Server) {
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let cp = aggregator(&s).with_quota_hook(Arc::new(move |_| {
        f.fetch_add(1, Ordering::SeqCst);
    }));
    let t = s.tenant().await;
    let a = s.app(&t).await;
    s.ok(
        Method::PATCH,
        &format!("/admin/v1/tenants/{t}/apps/{a}/quotas"),
        Some(json!({"messages_per_month": 10})),
    )
    .await;
    let events = || async {
        s.ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage/events"),
            None,
        )
        .await["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["limit_name"] == "messages_per_month")
            .map(|e| e["threshold"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    cp.record_usage(&report(&a, "n1", 7, &[])).await.unwrap();
    assert!(events().await.is_empty(), "70 % raises nothing");
    cp.record_usage(&report(&a, "n1", 1, &[])).await.unwrap();
    assert_eq!(events().await, vec![80]);
    cp.record_usage(&report(&a, "n1", 1, &[])).await.unwrap();
    assert_eq!(events().await, vec![80], "80 % is raised once");
    cp.record_usage(&report(&a, "n2", 5, &[])).await.unwrap();
    let mut got = events().await;
    got.sort();
    assert_eq!(got, vec![80, 100]);
    cp.record_usage(&report(&a, "n2", 5, &[])).await.unwrap();
    assert_eq!(events().await.len(), 2, "once per period");
    assert_eq!(
        fired.load(Ordering::SeqCst),
        2,
        "the hook ran once per event"
    );
    let u = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage"),
            None,
        )
        .await;
    let q = u["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "messages_per_month")
        .unwrap()
        .clone();
    assert_eq!(
        (
            q["used"].as_u64(),
            q["limit"].as_u64(),
            q["percent"].as_u64()
        ),
        (Some(19), Some(10), Some(190))
    );
}

async fn usage_api_validates_and_keeps_tenants_apart(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let other = s.tenant().await;
    for path in [
        format!("/admin/v1/tenants/{other}/apps/{a}/usage"),
        format!("/admin/v1/tenants/{other}/apps/{a}/usage/hourly"),
        format!("/admin/v1/tenants/{other}/apps/{a}/usage/events"),
        format!("/admin/v1/tenants/{other}/apps/{a}/usage/months/2026-11"),
    ] {
        let r = s.call(Method::GET, &path, None).await;
        assert_error(&r, 404, "not_found", None);
    }
    let r = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage?months=25"),
            None,
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("months"));
    let r = s
        .call(
            Method::GET,
            &format!(
                "/admin/v1/tenants/{t}/apps/{a}/usage/hourly?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"
            ),
            None,
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("from"));
    let r = s
        .call(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage/months/2026-13"),
            None,
        )
        .await;
    assert_error(&r, 422, "validation_failed", Some("period"));
    // Reports of an app that does not exist are dropped, not stored under some tenant.
    let cp = aggregator(&s);
    let ghost = AppId::generate();
    assert!(
        !cp.record_usage(&report(ghost.as_str(), "n1", 1, &[]))
            .await
            .unwrap()
    );
}

/// Reports over Pulsar: a report published several times (a node that never heard back) is
/// aggregated once, and the control plane acks only what it stored. Each cell reports on its own
/// topic; a report about an app that another cell sends is refused (a cell cannot bill an app
/// of another cell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_over_pulsar_counts_once() {
    let s = Server::start(Backend::Postgres).await;
    let url = std::env::var("TEST_PULSAR_URL")
        .expect("TEST_PULSAR_URL is not set: run the tests with scripts/test, which starts Pulsar");
    let var = |k: &str| {
        std::env::var(k)
            .unwrap_or_else(|_| panic!("{k} is not set: run the tests with scripts/test"))
    };
    let auth = starling_core::pulsar::PulsarAuth {
        token: Some(var("TEST_PULSAR_ADMIN_TOKEN")),
        ca_file: Some(var("TEST_PULSAR_CA_FILE").into()),
    };
    let client = starling_core::pulsar::connect(&url, &auth, Duration::from_secs(30))
        .await
        .expect("connect Pulsar");
    let prefix = format!(
        "persistent://public/default/test-{}-",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let app = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}"),
            None,
        )
        .await;
    let cell = app["cluster_id"].as_str().unwrap();
    let node_feed = |cluster: &str| -> Arc<dyn UsageFeed> {
        Arc::new(starling_core::pulsar::PulsarUsageFeed::new(
            client.clone(),
            &starling_core::pulsar::usage_topic(&prefix, cluster),
        ))
    };
    let feed = node_feed(cell);
    // Another cell's node: its topic exists before the control plane subscribes, as a cell's
    // would.
    let other = node_feed("cls_01JOTHERCE110000000000000");
    let stolen = report(&a, "intruder", 1000, &["mallory"]);
    other.publish(&stolen).await.unwrap();
    feed.publish(&report(&a, "n0", 0, &[])).await.unwrap();
    let cp = aggregator(&s);
    cp.consume_usage(Arc::new(starling_core::pulsar::PulsarUsageFeed::for_cells(
        client.clone(),
        &prefix,
    )))
    .await
    .unwrap();
    let r = report(&a, "n1", 5, &["u1"]);
    for _ in 0..3 {
        feed.publish(&r).await.unwrap();
    }
    feed.publish(&report(&a, "n1", 2, &["u1"])).await.unwrap();
    other
        .publish(&report(&a, "intruder", 1000, &["mallory"]))
        .await
        .unwrap();
    let tid = starling_core::id::TenantId::parse(&t).unwrap();
    let aid = AppId::parse(&a).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if cp.usage_report_count(&tid, &aid).await.unwrap() >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reports not aggregated in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give any redelivery, or the other cell's reports, time to (wrongly) count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cp.usage_report_count(&tid, &aid).await.unwrap(),
        3,
        "counted twice, or counted another cell's reports"
    );
    let u = s
        .ok(
            Method::GET,
            &format!("/admin/v1/tenants/{t}/apps/{a}/usage"),
            None,
        )
        .await;
    assert_eq!(u["usage"]["messages"], 7, "{u}");
    assert_eq!(u["usage"]["monthly_active_users"], 1);
}

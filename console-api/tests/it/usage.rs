//! Usage in the console: what the usage service aggregated from reports is what a viewer reads,
//! the month hour by hour (paged), quota threshold events (paged), earlier months, bad input.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use starling_control_plane::service::app::QuotaOverridesPatch;
use starling_control_plane::service::usage::{HourlyQuery, UsageQuery};
use starling_core::clock::{hour_start, month_start, next_month_start, period_of};
use starling_core::http::encode_cursor;
use starling_core::id::{AppId, TenantId};
use starling_core::usage::UsageReport;

use crate::backend_tests;
use crate::harness::{Server, code, unique};

backend_tests!(usage_matches_the_usage_service, usage_bad_input);

fn report(
    app: &AppId,
    node: &str,
    hour: chrono::DateTime<Utc>,
    messages: u64,
    users: &[&str],
) -> UsageReport {
    UsageReport {
        id: unique("rep"),
        app_id: app.clone(),
        node_id: node.into(),
        hour,
        messages,
        api_calls: messages * 2,
        active_users: users.iter().map(|u| u.to_string()).collect(),
        peak_connections: users.len() as u64,
        stored_bytes: messages * 100,
    }
}

const USAGE: &str = "query($t: ID!, $a: ID!, $p: String) { tenant(id: $t) { app(id: $a) { usage(period: $p) { period periodStart resetsAt isCurrent messages apiCalls monthlyActiveUsers peakConnections storedBytes quotas { name limit used percent soft } } } } }";

async fn usage_matches_the_usage_service(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let (_, viewer) = s.member(&t, "VIEWER").await;
    let (tid, aid) = (TenantId::parse(&t).unwrap(), AppId::parse(&a).unwrap());
    s.cp.update_quotas(
        &tid,
        &aid,
        QuotaOverridesPatch {
            messages_per_month: Some(Some(10)),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let now = Utc::now();
    let h0 = hour_start(now);
    // A second hour of this month when there is one (not in the month's first hour).
    let h1 = month_start(now);
    let before = month_start(now) - Duration::hours(1);
    let a1 = report(&aid, "node-1", h0, 5, &["alice", "bob"]);
    assert!(s.cp.record_usage(&a1).await.unwrap());
    assert!(
        !s.cp.record_usage(&a1).await.unwrap(),
        "a report sent twice counts once"
    );
    assert!(
        s.cp.record_usage(&report(&aid, "node-2", h0, 3, &["bob", "carol"]))
            .await
            .unwrap()
    );
    assert!(
        s.cp.record_usage(&report(&aid, "node-3", h1, 1, &["dave"]))
            .await
            .unwrap()
    );
    // Last month: counted there, not now.
    assert!(
        s.cp.record_usage(&report(&aid, "node-1", before, 7, &["erin"]))
            .await
            .unwrap()
    );

    let read = |p: Option<String>| {
        let (s, viewer, t, a) = (&s, &viewer, &t, &a);
        async move {
            s.ok(Some(viewer), USAGE, json!({"t": t, "a": a, "p": p}))
                .await["tenant"]["app"]["usage"]
                .clone()
        }
    };
    let u = read(None).await;
    let want =
        s.cp.app_usage(&tid, &aid, &UsageQuery { months: Some(0) })
            .await
            .unwrap();
    assert_eq!(u["period"], want.period);
    assert_eq!(u["period"], period_of(now));
    assert_eq!(u["isCurrent"], true);
    assert_eq!(u["messages"], 9);
    assert_eq!(u["messages"], want.usage.messages);
    assert_eq!(u["apiCalls"], 18);
    assert_eq!(u["apiCalls"], want.usage.api_calls);
    assert_eq!(u["monthlyActiveUsers"], 4, "alice, bob, carol, dave");
    assert_eq!(u["monthlyActiveUsers"], want.usage.monthly_active_users);
    assert_eq!(u["peakConnections"], want.usage.peak_connections);
    assert!(u["peakConnections"].as_u64().unwrap() >= 4);
    assert_eq!(u["storedBytes"], 900);
    assert_eq!(u["storedBytes"], want.usage.stored_bytes);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(u["resetsAt"].as_str().unwrap()).unwrap(),
        next_month_start(now)
    );
    let quotas: Vec<(String, u64, u64, u64, bool)> = u["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_owned(),
                q["limit"].as_u64().unwrap(),
                q["used"].as_u64().unwrap(),
                q["percent"].as_u64().unwrap(),
                q["soft"].as_bool().unwrap(),
            )
        })
        .collect();
    let wanted: Vec<(String, u64, u64, u64, bool)> = want
        .quotas
        .iter()
        .map(|q| (q.name.clone(), q.limit, q.used, q.percent, q.soft))
        .collect();
    assert_eq!(quotas, wanted);
    let m = quotas
        .iter()
        .find(|q| q.0 == "messages_per_month")
        .expect("the override is a quota");
    assert_eq!((m.1, m.2, m.3), (10, 9, 90));

    // Last month.
    let last = period_of(before);
    let u = read(Some(last.clone())).await;
    assert_eq!(u["period"], last);
    assert_eq!(u["isCurrent"], false);
    assert_eq!(u["messages"], 7);
    assert_eq!(u["monthlyActiveUsers"], 1);
    assert_eq!(u["quotas"], json!([]));
    // Asking for this month by name is the same as asking for none.
    assert_eq!(read(Some(period_of(now))).await, read(None).await);

    // Hour by hour, one hour per page, equals the service's hours of the month.
    let mut hours = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let d = s
            .ok(
                Some(&viewer),
                "query($t: ID!, $a: ID!, $after: String) { tenant(id: $t) { app(id: $a) { usage { hourly(first: 1, after: $after) { pageInfo { hasNextPage endCursor } edges { node { hour messages apiCalls peakConnections storedBytes } } } } } } }",
                json!({"t": t, "a": a, "after": after}),
            )
            .await;
        let c = &d["tenant"]["app"]["usage"]["hourly"];
        let edges = c["edges"].as_array().unwrap();
        assert!(edges.len() <= 1);
        hours.extend(edges.iter().map(|e| e["node"].clone()));
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = c["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        assert!(hours.len() < 10, "paging ends");
    }
    let want =
        s.cp.app_usage_hourly(
            &tid,
            &aid,
            &HourlyQuery {
                from: Some(month_start(now)),
                to: Some(next_month_start(now)),
            },
        )
        .await
        .unwrap()
        .hours;
    assert_eq!(hours.len(), if h1 == h0 { 1 } else { 2 });
    assert_eq!(hours.len(), want.len());
    for (g, w) in hours.iter().zip(&want) {
        let hour = chrono::DateTime::parse_from_rfc3339(g["hour"].as_str().unwrap()).unwrap();
        assert_eq!(hour, w.hour);
        assert_eq!(g["messages"], w.messages);
        assert_eq!(g["apiCalls"], w.api_calls);
        assert_eq!(g["peakConnections"], w.peak_connections);
        assert_eq!(g["storedBytes"], w.stored_bytes);
    }

    // A cursor from another month does not widen the range (the service allows 31 days).
    let d = s
        .ok(
            Some(&viewer),
            "query($t: ID!, $a: ID!, $after: String) { tenant(id: $t) { app(id: $a) { usage { hourly(first: 100, after: $after) { edges { node { hour } } } } } } }",
            json!({"t": t, "a": a, "after": encode_cursor(&(before - Duration::days(20)).to_rfc3339())}),
        )
        .await;
    assert_eq!(
        d["tenant"]["app"]["usage"]["hourly"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        want.len()
    );

    // Passing 80 % and then 100 % of messages_per_month: two events, paged oldest first.
    assert!(
        s.cp.record_usage(&report(&aid, "node-2", h0, 2, &[]))
            .await
            .unwrap()
    );
    let events = |after: Option<String>| {
        let (s, viewer, t, a) = (&s, &viewer, &t, &a);
        async move {
            s.ok(
                Some(viewer),
                "query($t: ID!, $a: ID!, $after: String) { tenant(id: $t) { app(id: $a) { quotaEvents(first: 1, after: $after) { pageInfo { hasNextPage endCursor } edges { node { id period limitName threshold used limit soft } } } } } }",
                json!({"t": t, "a": a, "after": after}),
            )
            .await["tenant"]["app"]["quotaEvents"]
                .clone()
        }
    };
    let p1 = events(None).await;
    assert_eq!(p1["pageInfo"]["hasNextPage"], true, "{p1}");
    let e1 = &p1["edges"][0]["node"];
    assert_eq!(e1["limitName"], "messages_per_month");
    assert_eq!(e1["threshold"], 80);
    assert_eq!(e1["used"], 8, "noticed with node-2's report: 5 + 3 of 10");
    assert_eq!(e1["limit"], 10);
    assert_eq!(e1["period"], period_of(now));
    let p2 = events(p1["pageInfo"]["endCursor"].as_str().map(str::to_owned)).await;
    assert_eq!(p2["pageInfo"]["hasNextPage"], false, "{p2}");
    let e2 = &p2["edges"][0]["node"];
    assert_eq!(e2["threshold"], 100);
    assert_eq!(e2["used"], 11);
    let mut ids = vec![
        e1["id"].as_str().unwrap().to_owned(),
        e2["id"].as_str().unwrap().to_owned(),
    ];
    let mut want: Vec<String> =
        s.cp.quota_events(&tid, &aid)
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|e| e.id)
            .collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "the same events as the usage service");
    assert_eq!(read(None).await["messages"], 11);

    // Another tenant's member sees nothing of it.
    let other = s.tenant().await;
    let (_, stranger) = s.member(&other, "OWNER").await;
    let v = s.gql(Some(&stranger), USAGE, json!({"t": t, "a": a})).await;
    assert_eq!(code(&v), "not_found", "{v}");
    let v = s
        .gql(Some(&stranger), USAGE, json!({"t": other, "a": a}))
        .await;
    assert_eq!(code(&v), "not_found", "{v}");
}

fn field(v: &Value) -> &str {
    v["errors"][0]["extensions"]["field"].as_str().unwrap_or("")
}

async fn usage_bad_input(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let (_, viewer) = s.member(&t, "VIEWER").await;
    for p in ["2026-13", "last month", ""] {
        let v = s
            .gql(Some(&viewer), USAGE, json!({"t": t, "a": a, "p": p}))
            .await;
        assert_eq!(code(&v), "validation_failed", "{p}: {v}");
        assert_eq!(field(&v), "period", "{v}");
    }
    for (q, f) in [
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { usage { hourly(first: 101) { edges { cursor } } } } } }",
            "first",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { usage { hourly(after: \"garbage\") { edges { cursor } } } } } }",
            "after",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { quotaEvents(first: 0) { edges { cursor } } } } }",
            "first",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { quotaEvents(after: \"garbage\") { edges { cursor } } } } }",
            "after",
        ),
    ] {
        let v = s.gql(Some(&viewer), q, json!({"t": t, "a": a})).await;
        assert!(
            ["validation_failed", "invalid_request"].contains(&code(&v).as_str()),
            "{q}: {v}"
        );
        assert_eq!(field(&v), f, "{q}: {v}");
    }
    // An app with no usage reads zeros, not an error.
    let d = s.ok(Some(&viewer), USAGE, json!({"t": t, "a": a})).await;
    let u = &d["tenant"]["app"]["usage"];
    assert_eq!(u["messages"], 0);
    assert_eq!(u["monthlyActiveUsers"], 0);
    assert_eq!(u["isCurrent"], true);
}

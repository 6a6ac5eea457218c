//! Query safety: cost and depth refused before execution, the budget, `first` bounds, production
//! settings (no introspection, no GraphiQL), error codes on GraphQL's own errors.

use serde_json::json;
use starling_console_api::Mode;

use crate::backend_tests;
use crate::harness::{Backend, OPERATOR, Server, code, test_config};

backend_tests!(cost_and_depth);

async fn cost_and_depth(s: Server) {
    let t = s.tenant().await;
    let app = s.app(&t).await;
    let (_, token) = s.member(&t, "ADMIN").await;

    // A small query runs and reports its cost and the budget left.
    let v = s
        .gql(
            Some(&token),
            "query($t: ID!) { tenant(id: $t) { name apps(first: 2) { edges { node { id } } } } }",
            json!({"t": t}),
        )
        .await;
    assert!(v.get("errors").is_none(), "{v}");
    let cost = &v["extensions"]["cost"];
    let requested = cost["requestedQueryCost"].as_u64().unwrap();
    assert!(requested >= 4, "{cost}");
    assert_eq!(cost["maxQueryCost"], 1000);
    assert_eq!(cost["budget"]["maximum"], 2000);
    let left = cost["budget"]["remaining"].as_u64().unwrap();
    assert!(left <= 2000 - requested, "{cost}");

    // 100 apps × 100 keys each: refused before it runs, with the cost reported.
    let expensive = "query($t: ID!) { tenant(id: $t) { apps(first: 100) { edges { node { id apiKeys(first: 100) { edges { node { id name } } } } } } } }";
    let v = s.gql(Some(&token), expensive, json!({"t": t})).await;
    assert_eq!(code(&v), "query_too_costly", "{v}");
    assert!(v["data"].is_null(), "nothing ran: {v}");
    assert!(
        v["extensions"]["cost"]["requestedQueryCost"]
            .as_u64()
            .unwrap()
            > 1000
    );

    // Too deep: nesting past max_depth (15) through memberships → tenant → apps → keys.
    let deep = "{ viewer { memberships(first: 2) { edges { node { tenant { apps(first: 2) { edges { node { apiKeys(first: 1) { edges { node { id } } } } } } } } } } } }";
    let v = s.gql(Some(&token), deep, json!({})).await;
    assert!(v.get("errors").is_none(), "13 levels pass: {v}");
    let cfg = starling_control_plane::config::ConsoleConfig {
        max_depth: 6,
        ..test_config()
    };
    let shallow = Server::start_with(Backend::Sqlite, cfg, Mode::Development).await;
    let v = shallow.gql(Some(OPERATOR), deep, json!({})).await;
    assert_eq!(code(&v), "query_too_deep", "{v}");
    assert!(v["data"].is_null());

    // `first` out of bounds names the argument.
    let v = s
        .gql(
            Some(&token),
            "query($t: ID!) { tenant(id: $t) { apps(first: 101) { edges { node { id } } } } }",
            json!({"t": t}),
        )
        .await;
    assert_eq!(code(&v), "validation_failed");
    assert_eq!(v["errors"][0]["extensions"]["field"], "first");
    // A made-up cursor names `after`.
    let v = s
        .gql(
            Some(&token),
            "query($t: ID!) { tenant(id: $t) { apps(after: \"nope\") { edges { node { id } } } } }",
            json!({"t": t}),
        )
        .await;
    assert_eq!(v["errors"][0]["extensions"]["field"], "after", "{v}");

    // Pages follow: two apps, one per page.
    s.app(&t).await;
    let page = "query($t: ID!, $c: String) { tenant(id: $t) { apps(first: 1, after: $c) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } } }";
    let d = s.ok(Some(&token), page, json!({"t": t})).await;
    assert_eq!(d["tenant"]["apps"]["edges"][0]["node"]["id"], app);
    assert_eq!(d["tenant"]["apps"]["pageInfo"]["hasNextPage"], true);
    let c = d["tenant"]["apps"]["pageInfo"]["endCursor"].clone();
    let d = s.ok(Some(&token), page, json!({"t": t, "c": c})).await;
    assert_ne!(d["tenant"]["apps"]["edges"][0]["node"]["id"], app);
    assert_eq!(d["tenant"]["apps"]["pageInfo"]["hasNextPage"], false);

    // GraphQL's own errors carry a code too.
    let v = s.gql(Some(&token), "{ nope }", json!({})).await;
    assert_eq!(code(&v), "graphql_invalid");
    let v = s.gql(Some(&token), "{ viewer { ", json!({})).await;
    assert_eq!(code(&v), "graphql_invalid");

    // The budget runs dry: a bucket of 300 points and queries of ~200.
    let cfg = starling_control_plane::config::ConsoleConfig {
        budget_points: 300,
        max_cost: 300,
        budget_restore_per_second: 1,
        ..test_config()
    };
    let small = Server::start_with(Backend::Sqlite, cfg, Mode::Development).await;
    let t2 = small.tenant().await;
    let q = "query($t: ID!) { tenant(id: $t) { apps(first: 50) { edges { node { id name } } } } }";
    let v = small.gql(Some(OPERATOR), q, json!({"t": t2})).await;
    assert!(v.get("errors").is_none(), "{v}");
    let v = small.gql(Some(OPERATOR), q, json!({"t": t2})).await;
    assert_eq!(code(&v), "rate_limited", "{v}");
    assert!(v["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() >= 1);
    assert!(
        v["extensions"]["cost"]["budget"]["remaining"]
            .as_u64()
            .unwrap()
            < 200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_has_no_introspection_and_no_graphiql() {
    let prod = Server::start_with(Backend::Sqlite, test_config(), Mode::Production).await;
    let v = prod
        .gql(None, "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(
        v["data"]["__schema"].is_null(),
        "introspection answers nothing: {v}"
    );
    assert!(
        !v.to_string().contains("Mutation"),
        "no type names leak: {v}"
    );
    let res = reqwest::get(format!("{}{}", prod.base, starling_console_api::PATH))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let dev = Server::start_with(Backend::Sqlite, test_config(), Mode::Development).await;
    let v = dev
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(v["data"]["__schema"]["queryType"]["name"], "Query", "{v}");
    let res = reqwest::get(format!("{}{}", dev.base, starling_console_api::PATH))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("graphiql"));

    // Enabled explicitly in production.
    let cfg = starling_control_plane::config::ConsoleConfig {
        introspection: Some(true),
        ..test_config()
    };
    let on = Server::start_with(Backend::Sqlite, cfg, Mode::Production).await;
    let v = on
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(v["data"]["__schema"]["queryType"]["name"], "Query", "{v}");
}

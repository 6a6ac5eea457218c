//! The console API on `starling standalone`: an operator invites an owner, who signs in, makes an
//! app and a key, and moderates end users through the running data plane (ban reaches the
//! gateway: a banned user cannot connect or send; a deleted message becomes a tombstone); the
//! app's metered usage and a webhook endpoint made in the console reach it / come from it.

use std::time::Duration;

use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, wait_healthy};

const START: Duration = Duration::from_secs(60);

async fn gql(c: &reqwest::Client, base: &str, token: Option<&str>, q: &str, vars: Value) -> Value {
    let mut r = c
        .post(format!("{base}/console/graphql"))
        .json(&json!({"query": q, "variables": vars}));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let v: Value = r.send().await.unwrap().json().await.unwrap();
    assert!(v.get("errors").is_none(), "{q}: {v}");
    v["data"].clone()
}

async fn rest(
    c: &reqwest::Client,
    m: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(m, url).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn console_moderation_reaches_the_data_plane() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        // Usage reports every 200 ms, so the console sees the traffic soon.
        &[("STARLING_GATEWAY__USAGE_FLUSH_MS", "200")],
        dir.path(),
    );
    let out = p.wait_for_line("Press Ctrl-C", START).unwrap();
    assert!(
        out.iter().any(|l| l.contains("/console/graphql")),
        "{out:?}"
    );
    wait_healthy(&format!("{base}/healthz"), START)
        .await
        .unwrap();
    let secrets = std::fs::read_to_string(dir.path().join("data/secrets.toml")).unwrap();
    let operator = secrets
        .lines()
        .find_map(|l| l.strip_prefix("operator_token = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let c = reqwest::Client::new();

    let (st, tenant) = rest(
        &c,
        reqwest::Method::POST,
        &format!("{base}/admin/v1/tenants"),
        &operator,
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(st, 201, "{tenant}");
    let t = tenant["id"].as_str().unwrap();
    let d = gql(&c, &base, Some(&operator), "mutation($t: ID!) { inviteMember(tenantId: $t, email: \"owner@acme.test\", role: OWNER) { token } }", json!({"t": t})).await;
    let inv = d["inviteMember"]["token"].as_str().unwrap();
    let d = gql(&c, &base, None, "mutation($i: String!) { acceptInvitation(token: $i, name: \"Olga\", password: \"a long enough password\") { accessToken } }", json!({"i": inv})).await;
    let owner = d["acceptInvitation"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = gql(
        &c,
        &base,
        Some(&owner),
        "mutation($t: ID!) { createApp(tenantId: $t, input: {name: \"Chat\"}) { id } }",
        json!({"t": t}),
    )
    .await;
    let app = d["createApp"]["id"].as_str().unwrap().to_owned();
    let d = gql(&c, &base, Some(&owner), "mutation($t: ID!, $a: ID!) { createApiKey(tenantId: $t, appId: $a, input: {name: \"backend\"}) { secret } }", json!({"t": t, "a": app})).await;
    let key = d["createApiKey"]["secret"].as_str().unwrap().to_owned();

    // The customer's backend makes two users and a conversation with a message.
    for u in ["alice", "bob"] {
        let (st, v) = rest(
            &c,
            reqwest::Method::PUT,
            &format!("{base}/v1/users/{u}"),
            &key,
            Some(json!({"name": u})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, conv) = rest(
        &c,
        reqwest::Method::POST,
        &format!("{base}/v1/conversations"),
        &key,
        Some(json!({"kind": "direct", "members": ["alice", "bob"]})),
    )
    .await;
    assert_eq!(st, 201, "{conv}");
    let cid = conv["id"].as_str().unwrap().to_owned();
    let send = json!({"sender_id": "alice", "text": "buy cheap watches"});
    let (st, sent) = rest(
        &c,
        reqwest::Method::POST,
        &format!("{base}/v1/conversations/{cid}/messages"),
        &key,
        Some(send.clone()),
    )
    .await;
    assert_eq!(st, 201, "{sent}");
    let mid = sent["message"]["id"].as_str().unwrap().to_owned();
    let (_, tok) = rest(
        &c,
        reqwest::Method::POST,
        &format!("{base}/v1/users/alice/tokens"),
        &key,
        Some(json!({})),
    )
    .await;
    let alice_token = tok["token"].as_str().unwrap().to_owned();
    let ws = format!("ws://{listen}/v1/connect?token={alice_token}");
    tokio_tungstenite::connect_async(&ws)
        .await
        .expect("alice connects before the ban");

    // The console sees the cell's users, conversations and messages.
    let vars = json!({"t": t, "a": app, "c": cid, "m": mid});
    let d = gql(&c, &base, Some(&owner), "query($t: ID!, $a: ID!, $c: String!) { tenant(id: $t) { app(id: $a) { users(first: 10) { edges { node { id banned } } } userConversations(userId: \"alice\") { edges { node { id } } } recentMessages(conversationId: $c, last: 5) { id text } } } }", vars.clone()).await;
    let a = &d["tenant"]["app"];
    assert_eq!(a["users"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(
        a["userConversations"]["edges"][0]["node"]["id"],
        cid.as_str()
    );
    assert_eq!(a["recentMessages"][0]["text"], "buy cheap watches");

    // Usage: the message, metered by the node and aggregated by the control plane, is in the
    // console's figures for this month.
    let q = "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { usage { isCurrent messages apiCalls monthlyActiveUsers storedBytes quotas { name used } } } } }";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let usage = loop {
        let d = gql(&c, &base, Some(&owner), q, vars.clone()).await;
        let u = d["tenant"]["app"]["usage"].clone();
        if u["messages"].as_u64().unwrap() >= 1 {
            break u;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never reached the console: {u}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(usage["isCurrent"], true);
    assert_eq!(usage["messages"], 1, "{usage}");
    assert!(usage["apiCalls"].as_u64().unwrap() >= 4, "{usage}");
    assert!(usage["storedBytes"].as_u64().unwrap() >= 17, "{usage}");
    let used = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "messages_per_month")
        .expect("the free plan limits messages");
    assert_eq!(used["used"], 1);

    // A webhook endpoint made in the console reaches the cell: its server API lists it.
    let d = gql(&c, &base, Some(&owner), "mutation($t: ID!, $a: ID!) { createWebhookEndpoint(tenantId: $t, appId: $a, input: {url: \"https://acme.test/starling\", eventTypes: [\"message.created\"]}) { secret webhookEndpoint { id } } }", vars.clone()).await;
    let ep = d["createWebhookEndpoint"]["webhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, v) = rest(
            &c,
            reqwest::Method::GET,
            &format!("{base}/v1/webhooks/endpoints"),
            &key,
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        if let Some(e) = v
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == ep.as_str())
        {
            assert_eq!(e["url"], "https://acme.test/starling");
            assert_eq!(e["event_types"], json!(["message.created"]));
            assert!(
                !v.to_string().contains("whsec_"),
                "the cell's list has no secret: {v}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint never reached the cell: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Ban: the gateway refuses alice's connection and her messages.
    let d = gql(&c, &base, Some(&owner), "mutation($t: ID!, $a: ID!) { banUser(tenantId: $t, appId: $a, userId: \"alice\", reason: \"spam\") { id banned } }", vars.clone()).await;
    assert_eq!(d["banUser"]["banned"], true);
    match tokio_tungstenite::connect_async(&ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("a banned user must not connect: {other:?}"),
    }
    let (st, v) = rest(
        &c,
        reqwest::Method::POST,
        &format!("{base}/v1/conversations/{cid}/messages"),
        &key,
        Some(send),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["code"], "banned");
    assert!(v["message"].as_str().unwrap().contains("banned"), "{v}");

    // Delete the message: a tombstone for everyone.
    let d = gql(&c, &base, Some(&owner), "mutation($t: ID!, $a: ID!, $c: String!, $m: String!) { deleteMessage(tenantId: $t, appId: $a, conversationId: $c, messageId: $m) { id deleted text } }", vars.clone()).await;
    assert_eq!(d["deleteMessage"]["deleted"], true);
    assert!(d["deleteMessage"]["text"].is_null());
    let (_, hist) = rest(
        &c,
        reqwest::Method::GET,
        &format!("{base}/v1/conversations/{cid}/messages"),
        &key,
        None,
    )
    .await;
    assert_eq!(hist["messages"][0]["deleted"], true, "{hist}");

    // Unban: alice connects again. An unknown user is not found, with the cell's message.
    gql(&c, &base, Some(&owner), "mutation($t: ID!, $a: ID!) { unbanUser(tenantId: $t, appId: $a, userId: \"alice\") { banned } }", vars.clone()).await;
    tokio_tungstenite::connect_async(&ws)
        .await
        .expect("alice connects after the unban");
    let v: Value = c
        .post(format!("{base}/console/graphql"))
        .bearer_auth(&owner)
        .json(&json!({"query": "mutation($t: ID!, $a: ID!) { banUser(tenantId: $t, appId: $a, userId: \"nobody\") { id } }", "variables": vars}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "not_found", "{v}");

    // The audit log has the moderation, by the owner.
    let d = gql(&c, &base, Some(&owner), "query($t: ID!) { tenant(id: $t) { auditLog(first: 50) { edges { node { action actorEmail target } } } } }", json!({"t": t})).await;
    let actions: Vec<_> = d["tenant"]["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap().to_owned())
        .collect();
    for a in [
        "inviteMember",
        "acceptInvitation",
        "createApp",
        "createApiKey",
        "banUser",
        "deleteMessage",
        "unbanUser",
        "createWebhookEndpoint",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    p.interrupt(Duration::from_secs(20)).unwrap();
}

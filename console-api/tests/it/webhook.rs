//! Webhook endpoints and the pre-send hook in the console: the lifecycle through the console
//! matches the webhook service, secrets are shown once, bad input names the GraphQL field and
//! writes nothing, the audit log records every change.

use serde_json::{Value, json};
use starling_core::http::PageParams;
use starling_core::id::{AppId, TenantId, WebhookEndpointId};

use crate::backend_tests;
use crate::harness::{Server, code};

backend_tests!(
    webhook_endpoints_lifecycle,
    webhook_bad_input_names_the_field
);

const CREATE: &str = "mutation($t: ID!, $a: ID!, $i: CreateWebhookEndpointInput!) { createWebhookEndpoint(tenantId: $t, appId: $a, input: $i) { secret webhookEndpoint { id url description eventTypes enabled rateLimitPerSecond ordered } } }";
const UPDATE: &str = "mutation($t: ID!, $a: ID!, $w: ID!, $i: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(tenantId: $t, appId: $a, endpointId: $w, input: $i) { id url eventTypes enabled rateLimitPerSecond ordered } }";
const LIST: &str = "query($t: ID!, $a: ID!, $after: String) { tenant(id: $t) { app(id: $a) { webhookEndpoints(first: 1, after: $after) { pageInfo { hasNextPage endCursor } edges { node { id url eventTypes enabled rateLimitPerSecond } } } preSendHook { url timeoutMs failOpen } } } }";
const SET_HOOK: &str = "mutation($t: ID!, $a: ID!, $i: PreSendHookInput!) { setPreSendHook(tenantId: $t, appId: $a, input: $i) { secret preSendHook { url timeoutMs failOpen } } }";

fn field(v: &Value) -> &str {
    v["errors"][0]["extensions"]["field"].as_str().unwrap_or("")
}

async fn webhook_endpoints_lifecycle(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let (_, dev) = s.member(&t, "DEVELOPER").await;
    let (_, viewer) = s.member(&t, "VIEWER").await;
    let (tid, aid) = (TenantId::parse(&t).unwrap(), AppId::parse(&a).unwrap());

    // Create two; the secret comes once, and is the one the service signs with.
    let d = s
        .ok(
            Some(&dev),
            CREATE,
            json!({"t": t, "a": a, "i": {"url": "https://example.com/one?token=abc", "description": "first", "eventTypes": ["message.created", "read_receipt.updated"], "rateLimitPerSecond": 50, "ordered": true}}),
        )
        .await;
    let c = &d["createWebhookEndpoint"];
    let secret1 = c["secret"].as_str().unwrap().to_owned();
    assert!(secret1.starts_with("whsec_"), "{c}");
    let ep1 = c["webhookEndpoint"]["id"].as_str().unwrap().to_owned();
    assert!(ep1.starts_with("ep_"));
    assert_eq!(
        c["webhookEndpoint"]["eventTypes"],
        json!(["message.created", "read_receipt.updated"])
    );
    assert_eq!(c["webhookEndpoint"]["rateLimitPerSecond"], 50);
    assert_eq!(c["webhookEndpoint"]["ordered"], true);
    assert_eq!(c["webhookEndpoint"]["enabled"], true);
    let w1 = WebhookEndpointId::parse(&ep1).unwrap();
    assert_eq!(
        s.cp.get_webhook_secret(&tid, &aid, &w1)
            .await
            .unwrap()
            .secret,
        secret1
    );
    let d = s
        .ok(
            Some(&dev),
            CREATE,
            json!({"t": t, "a": a, "i": {"url": "https://example.com/two"}}),
        )
        .await;
    let ep2 = d["createWebhookEndpoint"]["webhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d["createWebhookEndpoint"]["webhookEndpoint"]["eventTypes"],
        json!([]),
        "none listed: every type that is not opt-in"
    );

    // A viewer lists them one per page, without secrets; they are the service's.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut raw = String::new();
    loop {
        let d = s
            .ok(Some(&viewer), LIST, json!({"t": t, "a": a, "after": after}))
            .await;
        raw.push_str(&d.to_string());
        let c = &d["tenant"]["app"]["webhookEndpoints"];
        seen.extend(
            c["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        assert!(d["tenant"]["app"]["preSendHook"].is_null());
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = c["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let want: Vec<String> =
        s.cp.list_webhook_endpoints(
            &tid,
            &aid,
            &PageParams {
                limit: Some(100),
                cursor: None,
            },
        )
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(seen, want);
    assert_eq!(seen.len(), 2);
    assert!(!raw.contains("whsec_"), "no secret in lists: {raw}");

    // Update: disable, new types, the rate limit removed with null; omitted fields stay.
    let d = s
        .ok(
            Some(&dev),
            UPDATE,
            json!({"t": t, "a": a, "w": ep1, "i": {"enabled": false, "eventTypes": ["user.banned"], "rateLimitPerSecond": null}}),
        )
        .await;
    let u = &d["updateWebhookEndpoint"];
    assert_eq!(u["enabled"], false);
    assert_eq!(u["eventTypes"], json!(["user.banned"]));
    assert!(u["rateLimitPerSecond"].is_null());
    assert_eq!(u["ordered"], true);
    assert_eq!(u["url"], "https://example.com/one?token=abc");
    let e = s.cp.get_webhook_endpoint(&tid, &aid, &w1).await.unwrap();
    assert!(!e.enabled && e.rate_limit_per_second.is_none());

    // Rotate: a new secret, shown once; the old one signs for the overlap.
    let d = s
        .ok(
            Some(&dev),
            "mutation($t: ID!, $a: ID!, $w: ID!) { rotateWebhookSecret(tenantId: $t, appId: $a, endpointId: $w, overlapSeconds: 3600) { secret previousSecretExpiresAt webhookEndpoint { id } } }",
            json!({"t": t, "a": a, "w": ep1}),
        )
        .await;
    let r = &d["rotateWebhookSecret"];
    let secret2 = r["secret"].as_str().unwrap();
    assert!(secret2.starts_with("whsec_") && secret2 != secret1);
    assert_eq!(r["webhookEndpoint"]["id"], ep1.as_str());
    let now = s.cp.get_webhook_secret(&tid, &aid, &w1).await.unwrap();
    assert_eq!(now.secret, secret2);
    let until =
        chrono::DateTime::parse_from_rfc3339(r["previousSecretExpiresAt"].as_str().unwrap())
            .unwrap();
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(3500) && left <= chrono::Duration::seconds(3600),
        "{left}"
    );

    // Delete the second.
    let d = s
        .ok(
            Some(&dev),
            "mutation($t: ID!, $a: ID!, $w: ID!) { deleteWebhookEndpoint(tenantId: $t, appId: $a, endpointId: $w) }",
            json!({"t": t, "a": a, "w": ep2}),
        )
        .await;
    assert_eq!(d["deleteWebhookEndpoint"], true);
    let v = s
        .gql(
            Some(&dev),
            "mutation($t: ID!, $a: ID!, $w: ID!) { deleteWebhookEndpoint(tenantId: $t, appId: $a, endpointId: $w) }",
            json!({"t": t, "a": a, "w": ep2}),
        )
        .await;
    assert_eq!(code(&v), "not_found", "gone: {v}");

    // The pre-send hook: the secret on creation only; a change keeps it.
    let d = s
        .ok(
            Some(&dev),
            SET_HOOK,
            json!({"t": t, "a": a, "i": {"url": "https://example.com/pre", "failOpen": false}}),
        )
        .await;
    let h = &d["setPreSendHook"];
    let hook_secret = h["secret"].as_str().unwrap().to_owned();
    assert!(hook_secret.starts_with("whsec_"));
    assert_eq!(h["preSendHook"]["timeoutMs"], 1000);
    assert_eq!(h["preSendHook"]["failOpen"], false);
    let d = s
        .ok(
            Some(&dev),
            SET_HOOK,
            json!({"t": t, "a": a, "i": {"url": "https://example.com/pre2", "timeoutMs": 250, "failOpen": true}}),
        )
        .await;
    let h = &d["setPreSendHook"];
    assert!(h["secret"].is_null(), "not shown again: {h}");
    let svc = s.cp.get_pre_send_hook(&tid, &aid).await.unwrap();
    assert_eq!(svc.secret, hook_secret, "the hook keeps its secret");
    assert_eq!(
        (svc.url.as_str(), svc.timeout_ms, svc.fail_open),
        ("https://example.com/pre2", 250, true)
    );
    let d = s
        .ok(Some(&viewer), LIST, json!({"t": t, "a": a, "after": null}))
        .await;
    assert_eq!(
        d["tenant"]["app"]["preSendHook"],
        json!({"url": "https://example.com/pre2", "timeoutMs": 250, "failOpen": true})
    );
    assert!(!d.to_string().contains("whsec_"));
    let d = s
        .ok(
            Some(&dev),
            "mutation($t: ID!, $a: ID!) { deletePreSendHook(tenantId: $t, appId: $a) }",
            json!({"t": t, "a": a}),
        )
        .await;
    assert_eq!(d["deletePreSendHook"], true);
    assert!(s.cp.get_pre_send_hook(&tid, &aid).await.is_err());
    let d = s
        .ok(Some(&viewer), LIST, json!({"t": t, "a": a, "after": null}))
        .await;
    assert!(d["tenant"]["app"]["preSendHook"].is_null());
    let v = s
        .gql(
            Some(&dev),
            "mutation($t: ID!, $a: ID!) { deletePreSendHook(tenantId: $t, appId: $a) }",
            json!({"t": t, "a": a}),
        )
        .await;
    assert_eq!(code(&v), "not_found", "{v}");

    // The catalog of event types.
    let d = s
        .ok(
            Some(&viewer),
            "{ webhookEventTypes { name optIn } }",
            json!({}),
        )
        .await;
    let types = d["webhookEventTypes"].as_array().unwrap();
    assert!(types.contains(&json!({"name": "message.created", "optIn": false})));
    assert!(types.contains(&json!({"name": "read_receipt.updated", "optIn": true})));

    // The audit log: every change, with its details, no secret, no URL query.
    let (_, admin) = s.member(&t, "ADMIN").await;
    let d = s
        .ok(
            Some(&admin),
            "query($t: ID!) { tenant(id: $t) { auditLog(first: 100) { edges { node { action target detail } } } } }",
            json!({"t": t}),
        )
        .await;
    let entries: Vec<&Value> = d["tenant"]["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.contains("Webhook") || a.contains("PreSendHook"))
        .collect();
    assert_eq!(
        actions,
        [
            "createWebhookEndpoint",
            "createWebhookEndpoint",
            "updateWebhookEndpoint",
            "rotateWebhookSecret",
            "deleteWebhookEndpoint",
            "setPreSendHook",
            "setPreSendHook",
            "deletePreSendHook",
        ]
    );
    let first = entries
        .iter()
        .find(|e| e["action"] == "createWebhookEndpoint")
        .unwrap();
    assert_eq!(first["target"], ep1.as_str());
    assert_eq!(first["detail"]["url"], "https://example.com/one");
    let upd = entries
        .iter()
        .find(|e| e["action"] == "updateWebhookEndpoint")
        .unwrap();
    assert_eq!(
        upd["detail"],
        json!({"app": a, "enabled": false, "eventTypes": ["user.banned"], "rateLimitPerSecond": null})
    );
    let text = d.to_string();
    assert!(
        !text.contains("whsec_") && !text.contains("token=abc"),
        "{text}"
    );
}

async fn webhook_bad_input_names_the_field(s: Server) {
    let t = s.tenant().await;
    let a = s.app(&t).await;
    let (_, dev) = s.member(&t, "DEVELOPER").await;
    let (tid, aid) = (TenantId::parse(&t).unwrap(), AppId::parse(&a).unwrap());
    let d = s
        .ok(
            Some(&dev),
            CREATE,
            json!({"t": t, "a": a, "i": {"url": "https://example.com/ok"}}),
        )
        .await;
    let ep = d["createWebhookEndpoint"]["webhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let count = || async {
        s.cp.list_webhook_endpoints(
            &tid,
            &aid,
            &PageParams {
                limit: Some(100),
                cursor: None,
            },
        )
        .await
        .unwrap()
        .data
    };
    let before = count().await;

    let cases: &[(&str, Value, &str)] = &[
        (CREATE, json!({"url": "ftp://example.com/x"}), "url"),
        (CREATE, json!({"url": "not a url"}), "url"),
        (
            CREATE,
            json!({"url": "https://user:pw@example.com/"}),
            "url",
        ),
        (
            CREATE,
            json!({"url": "https://example.com/x", "eventTypes": ["message.created", "message.sent"]}),
            "eventTypes[1]",
        ),
        (
            CREATE,
            json!({"url": "https://example.com/x", "rateLimitPerSecond": 0}),
            "rateLimitPerSecond",
        ),
        (
            CREATE,
            json!({"url": "https://example.com/x", "description": "x".repeat(300)}),
            "description",
        ),
        (UPDATE, json!({"url": "mailto:a@example.com"}), "url"),
        (UPDATE, json!({"eventTypes": ["nope"]}), "eventTypes[0]"),
        (
            UPDATE,
            json!({"rateLimitPerSecond": 10001}),
            "rateLimitPerSecond",
        ),
        (
            SET_HOOK,
            json!({"url": "https://example.com/pre", "timeoutMs": 5, "failOpen": true}),
            "timeoutMs",
        ),
        (
            SET_HOOK,
            json!({"url": "example.com", "failOpen": true}),
            "url",
        ),
    ];
    for (q, input, f) in cases {
        let v = s
            .gql(Some(&dev), q, json!({"t": t, "a": a, "w": ep, "i": input}))
            .await;
        assert_eq!(code(&v), "validation_failed", "{input}: {v}");
        assert_eq!(field(&v), *f, "{input}: {v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(f),
            "the message names the field: {v}"
        );
    }
    let v = s
        .gql(
            Some(&dev),
            "mutation($t: ID!, $a: ID!, $w: ID!) { rotateWebhookSecret(tenantId: $t, appId: $a, endpointId: $w, overlapSeconds: 2592001) { secret } }",
            json!({"t": t, "a": a, "w": ep}),
        )
        .await;
    assert_eq!(code(&v), "validation_failed", "{v}");
    assert_eq!(field(&v), "overlapSeconds", "{v}");
    let v = s
        .gql(
            Some(&dev),
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { webhookEndpoints(first: 101) { edges { cursor } } } } }",
            json!({"t": t, "a": a}),
        )
        .await;
    assert_eq!(field(&v), "first", "{v}");
    // Unknown or malformed endpoint ids are not found.
    for w in ["ep_01jdq3v9k6b2c8x4m7n5p0r1st", "garbage"] {
        let v = s
            .gql(
                Some(&dev),
                UPDATE,
                json!({"t": t, "a": a, "w": w, "i": {"enabled": false}}),
            )
            .await;
        assert_eq!(code(&v), "not_found", "{w}: {v}");
    }

    // Nothing was written: the same endpoint, unchanged, its secret not rotated; no hook.
    let after = count().await;
    assert_eq!(after.len(), before.len());
    assert_eq!(after[0].url, "https://example.com/ok");
    assert_eq!(after[0].updated_at, before[0].updated_at);
    assert!(
        s.cp.get_webhook_secret(&tid, &aid, &after[0].id)
            .await
            .unwrap()
            .previous_expires_at
            .is_none()
    );
    assert!(s.cp.get_pre_send_hook(&tid, &aid).await.is_err());
}

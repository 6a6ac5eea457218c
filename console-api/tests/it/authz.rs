//! Authorization: every mutation tried with every role (table-driven), and with another tenant's
//! ids; reads that need more than viewer.

use serde_json::{Value, json};
use starling_control_plane::service::api_key::ApiKeyIn;
use starling_control_plane::service::webhook::{PreSendHookIn, WebhookEndpointIn};
use starling_core::id::{AppId, TenantId, WebhookEndpointId};

use crate::backend_tests;
use crate::harness::{OPERATOR, Server, code, unique};

backend_tests!(
    every_role_against_every_mutation,
    other_tenants_ids_are_not_found
);

const ORIGINAL_HOOK: &str = "https://example.com/pre-send/original";

const ROLES: [&str; 4] = ["VIEWER", "DEVELOPER", "ADMIN", "OWNER"];

/// (mutation, the least role that may run it, whether it reaches a data-plane cell).
pub(crate) const MUTATIONS: &[(&str, &str, bool)] = &[
    ("inviteMember", "ADMIN", false),
    ("inviteOwner", "OWNER", false),
    ("changeMemberRole", "OWNER", false),
    ("removeMember", "OWNER", false),
    ("createApp", "ADMIN", false),
    ("updateApp", "ADMIN", false),
    ("suspendApp", "ADMIN", false),
    ("resumeApp", "ADMIN", false),
    ("createApiKey", "DEVELOPER", false),
    ("rotateApiKey", "DEVELOPER", false),
    ("revokeApiKey", "DEVELOPER", false),
    ("rotateTokenSecret", "ADMIN", false),
    ("createWebhookEndpoint", "DEVELOPER", false),
    ("updateWebhookEndpoint", "DEVELOPER", false),
    ("deleteWebhookEndpoint", "DEVELOPER", false),
    ("rotateWebhookSecret", "DEVELOPER", false),
    ("deletePreSendHook", "DEVELOPER", false),
    ("setPreSendHook", "DEVELOPER", false),
    ("banUser", "ADMIN", true),
    ("unbanUser", "ADMIN", true),
    ("deleteMessage", "ADMIN", true),
];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

/// The request for `mutation` on `tenant`/`app`; makes what it acts on first.
pub(crate) async fn request(
    s: &Server,
    mutation: &str,
    tenant: &str,
    app: &str,
) -> (String, Value) {
    let fresh_key = || async {
        s.cp.create_api_key(
            &TenantId::parse(tenant).unwrap(),
            &AppId::parse(app).unwrap(),
            ApiKeyIn {
                name: "k".into(),
                scopes: None,
                expires_at: None,
            },
        )
        .await
        .map(|k| k.key.id.to_string())
        // Another tenant's app: any well-formed key id will do.
        .unwrap_or_else(|_| starling_core::id::ApiKeyId::generate().to_string())
    };
    let fresh_endpoint = || async {
        s.cp.create_webhook_endpoint(
            &TenantId::parse(tenant).unwrap(),
            &AppId::parse(app).unwrap(),
            WebhookEndpointIn {
                url: "https://example.com/hook".into(),
                description: None,
                event_types: None,
                enabled: None,
                rate_limit_per_second: None,
                ordered: None,
            },
        )
        .await
        .map(|e| e.endpoint.id.to_string())
        .unwrap_or_else(|_| WebhookEndpointId::generate().to_string())
    };
    let v = json!({"t": tenant, "a": app});
    let with_endpoint = |q: &str, w: String| (q.to_owned(), json!({"t": tenant, "a": app, "w": w}));
    let q = match mutation {
        "createWebhookEndpoint" => {
            "mutation($t: ID!, $a: ID!) { createWebhookEndpoint(tenantId: $t, appId: $a, input: {url: \"https://example.com/hook\", eventTypes: [\"message.created\"]}) { secret webhookEndpoint { id } } }"
        }
        "updateWebhookEndpoint" => {
            return with_endpoint(
                "mutation($t: ID!, $a: ID!, $w: ID!) { updateWebhookEndpoint(tenantId: $t, appId: $a, endpointId: $w, input: {enabled: false, url: \"https://example.com/changed\"}) { id enabled } }",
                fresh_endpoint().await,
            );
        }
        "deleteWebhookEndpoint" => {
            return with_endpoint(
                "mutation($t: ID!, $a: ID!, $w: ID!) { deleteWebhookEndpoint(tenantId: $t, appId: $a, endpointId: $w) }",
                fresh_endpoint().await,
            );
        }
        "rotateWebhookSecret" => {
            return with_endpoint(
                "mutation($t: ID!, $a: ID!, $w: ID!) { rotateWebhookSecret(tenantId: $t, appId: $a, endpointId: $w, overlapSeconds: 60) { secret previousSecretExpiresAt } }",
                fresh_endpoint().await,
            );
        }
        "setPreSendHook" => {
            "mutation($t: ID!, $a: ID!) { setPreSendHook(tenantId: $t, appId: $a, input: {url: \"https://example.com/pre-send/changed\", failOpen: true}) { preSendHook { url } } }"
        }
        "deletePreSendHook" => {
            // A hook to remove (none can be made on another tenant's app: any call will do).
            let _ =
                s.cp.put_pre_send_hook(
                    &TenantId::parse(tenant).unwrap(),
                    &AppId::parse(app).unwrap(),
                    PreSendHookIn {
                        url: ORIGINAL_HOOK.into(),
                        timeout_ms: None,
                        fail_open: false,
                    },
                )
                .await;
            "mutation($t: ID!, $a: ID!) { deletePreSendHook(tenantId: $t, appId: $a) }"
        }
        "inviteMember" => {
            return (
                "mutation($t: ID!, $e: String!) { inviteMember(tenantId: $t, email: $e, role: VIEWER) { token } }".into(),
                json!({"t": tenant, "e": format!("{}@example.com", unique("inv"))}),
            );
        }
        "inviteOwner" => {
            return (
                "mutation($t: ID!, $e: String!) { inviteMember(tenantId: $t, email: $e, role: OWNER) { token } }".into(),
                json!({"t": tenant, "e": format!("{}@example.com", unique("own"))}),
            );
        }
        "changeMemberRole" | "removeMember" => {
            // A fresh member of the tenant under test (or of the caller's own, when testing
            // another tenant's ids: then the tenant id is what must be refused).
            let target = match TenantId::parse(tenant) {
                Ok(_)
                    if s.cp
                        .get_tenant(&TenantId::parse(tenant).unwrap())
                        .await
                        .is_ok() =>
                {
                    s.member(tenant, "VIEWER").await.0
                }
                _ => "acc_none".to_owned(),
            };
            let q = if mutation == "removeMember" {
                "mutation($t: ID!, $m: ID!) { removeMember(tenantId: $t, accountId: $m) }"
            } else {
                "mutation($t: ID!, $m: ID!) { changeMemberRole(tenantId: $t, accountId: $m, role: DEVELOPER) { role } }"
            };
            return (q.into(), json!({"t": tenant, "m": target}));
        }
        "createApp" => {
            return (
                "mutation($t: ID!, $n: String!) { createApp(tenantId: $t, input: {name: $n, environment: STAGING}) { id environment } }".into(),
                json!({"t": tenant, "n": unique("app")}),
            );
        }
        "updateApp" => {
            return (
                "mutation($t: ID!, $a: ID!, $n: String!) { updateApp(tenantId: $t, appId: $a, input: {name: $n}) { name } }".into(),
                json!({"t": tenant, "a": app, "n": unique("renamed")}),
            );
        }
        "suspendApp" => {
            "mutation($t: ID!, $a: ID!) { suspendApp(tenantId: $t, appId: $a) { status } }"
        }
        "resumeApp" => {
            "mutation($t: ID!, $a: ID!) { resumeApp(tenantId: $t, appId: $a) { status } }"
        }
        "createApiKey" => {
            "mutation($t: ID!, $a: ID!) { createApiKey(tenantId: $t, appId: $a, input: {name: \"backend\"}) { secret apiKey { id status } } }"
        }
        "rotateApiKey" => {
            return (
                "mutation($t: ID!, $a: ID!, $k: ID!) { rotateApiKey(tenantId: $t, appId: $a, keyId: $k, overlapSeconds: 60) { secret apiKey { rotatedFrom } } }".into(),
                json!({"t": tenant, "a": app, "k": fresh_key().await}),
            );
        }
        "revokeApiKey" => {
            return (
                "mutation($t: ID!, $a: ID!, $k: ID!) { revokeApiKey(tenantId: $t, appId: $a, keyId: $k) { status } }".into(),
                json!({"t": tenant, "a": app, "k": fresh_key().await}),
            );
        }
        "rotateTokenSecret" => {
            "mutation($t: ID!, $a: ID!) { rotateTokenSecret(tenantId: $t, appId: $a, overlapSeconds: 60) { kid } }"
        }
        "banUser" => {
            "mutation($t: ID!, $a: ID!) { banUser(tenantId: $t, appId: $a, userId: \"u1\", reason: \"spam\") { banned } }"
        }
        "unbanUser" => {
            "mutation($t: ID!, $a: ID!) { unbanUser(tenantId: $t, appId: $a, userId: \"u1\") { banned } }"
        }
        "deleteMessage" => {
            "mutation($t: ID!, $a: ID!) { deleteMessage(tenantId: $t, appId: $a, conversationId: \"cnv_x\", messageId: \"msg_x\") { deleted } }"
        }
        other => panic!("no request for {other}"),
    };
    (q.into(), v)
}

async fn every_role_against_every_mutation(s: Server) {
    let t = s.tenant().await;
    let app = s.app(&t).await;
    let mut tokens = Vec::new();
    for r in ROLES {
        tokens.push((r, s.member(&t, r).await.1));
    }
    let mut allowed_runs = std::collections::HashMap::<&str, usize>::new();
    for (mutation, least, reaches_cell) in MUTATIONS {
        for (role, token) in &tokens {
            let (q, vars) = request(&s, mutation, &t, &app).await;
            let v = s.gql(Some(token), &q, vars).await;
            let may = rank(role) >= rank(least);
            match (may, reaches_cell) {
                (false, _) => {
                    assert_eq!(code(&v), "forbidden", "{role} {mutation}: {v}");
                    assert!(
                        v["errors"][0]["message"]
                            .as_str()
                            .unwrap()
                            .contains(&least.to_lowercase()),
                        "the message names the role needed: {v}"
                    );
                }
                (true, false) => {
                    assert!(v.get("errors").is_none(), "{role} {mutation}: {v}");
                    *allowed_runs.entry(mutation).or_default() += 1;
                }
                // Authorized, then the cell is asked: this test runs without one (the cluster has
                // no endpoint), so the answer says the cell is unavailable, not forbidden.
                (true, true) => assert_eq!(code(&v), "unavailable", "{role} {mutation}: {v}"),
            }
        }
    }
    assert_eq!(allowed_runs["createApiKey"], 3);
    assert_eq!(allowed_runs["createWebhookEndpoint"], 3);
    assert_eq!(allowed_runs["deletePreSendHook"], 3);
    assert_eq!(allowed_runs["removeMember"], 1);

    // Reads above viewer.
    let reads = [
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { auditLog { edges { node { id } } } app(id: $a) { id } } }",
            "ADMIN",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { invitations { edges { node { id } } } app(id: $a) { id } } }",
            "ADMIN",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { tokenSecrets { kid } } } }",
            "DEVELOPER",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { apiKeys { edges { node { id status } } } quotas { planCode } cluster { id } } } }",
            "VIEWER",
        ),
        (
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { usage { period messages quotas { name used } hourly { edges { node { hour } } } } quotaEvents { edges { node { id } } } webhookEndpoints { edges { node { id url eventTypes } } } preSendHook { url } } } }",
            "VIEWER",
        ),
    ];
    for (q, least) in reads {
        for (role, token) in &tokens {
            let v = s.gql(Some(token), q, json!({"t": t, "a": app})).await;
            if rank(role) >= rank(least) {
                assert!(v.get("errors").is_none(), "{role} {q}: {v}");
            } else {
                assert_eq!(code(&v), "forbidden", "{role} {q}: {v}");
            }
        }
    }

    // Every successful mutation is in the audit log, with who did it and from where.
    let d = s
        .ok(
            Some(&tokens[3].1),
            "query($t: ID!) { tenant(id: $t) { auditLog(first: 100) { edges { node { action actorEmail target ip userAgent } } } } }",
            json!({"t": t}),
        )
        .await;
    let entries = d["tenant"]["auditLog"]["edges"].as_array().unwrap();
    let count = |a: &str| entries.iter().filter(|e| e["node"]["action"] == a).count();
    assert_eq!(count("createApiKey"), 3);
    assert_eq!(count("revokeApiKey"), 3);
    assert_eq!(count("rotateTokenSecret"), 2);
    for m in [
        "createWebhookEndpoint",
        "updateWebhookEndpoint",
        "deleteWebhookEndpoint",
        "rotateWebhookSecret",
        "setPreSendHook",
        "deletePreSendHook",
    ] {
        assert_eq!(count(m), 3, "{m} by developer, admin and owner");
    }
    let e = entries
        .iter()
        .find(|e| e["node"]["action"] == "createWebhookEndpoint")
        .unwrap();
    assert!(e["node"]["target"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(
        count("banUser"),
        0,
        "refused or failed mutations are not recorded"
    );
    let e = entries
        .iter()
        .find(|e| e["node"]["action"] == "createApiKey")
        .unwrap();
    assert!(
        e["node"]["actorEmail"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    );
    assert!(e["node"]["target"].as_str().unwrap().starts_with("key_"));
    assert_eq!(e["node"]["ip"], "127.0.0.1");
    assert_eq!(e["node"]["userAgent"], "console-it");
    // The secret shown once is not in the log.
    assert!(
        !d.to_string().contains(".q"),
        "no key secret in the audit log"
    );
    assert!(
        !d.to_string().contains("whsec_"),
        "no webhook secret in the audit log"
    );
}

async fn other_tenants_ids_are_not_found(s: Server) {
    let mine = s.tenant().await;
    let my_app = s.app(&mine).await;
    let (_, owner) = s.member(&mine, "OWNER").await;
    let theirs = s.tenant().await;
    let their_app = s.app(&theirs).await;

    // Reading their tenant: not found, exactly like a tenant that does not exist.
    for id in [theirs.as_str(), "tnt_01jdq3v9k6b2c8x4m7n5p0r1st", "garbage"] {
        let v = s
            .gql(
                Some(&owner),
                "query($t: ID!) { tenant(id: $t) { name } }",
                json!({"t": id}),
            )
            .await;
        assert_eq!(code(&v), "not_found", "{id}: {v}");
    }
    // Their app under my tenant: not found.
    let v = s
        .gql(
            Some(&owner),
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { name } } }",
            json!({"t": mine, "a": their_app}),
        )
        .await;
    assert_eq!(code(&v), "not_found");
    // Every mutation with their tenant id, and with my tenant id but their app.
    for (mutation, _, _) in MUTATIONS {
        let (q, vars) = request(&s, mutation, &theirs, &their_app).await;
        let v = s.gql(Some(&owner), &q, vars).await;
        assert_eq!(code(&v), "not_found", "{mutation} on their tenant: {v}");
        if q.contains("$a") {
            let (q, mut vars) = request(&s, mutation, &mine, &my_app).await;
            vars["a"] = json!(their_app);
            let v = s.gql(Some(&owner), &q, vars).await;
            assert_eq!(code(&v), "not_found", "{mutation} with their app: {v}");
        }
        if q.contains("$w") {
            // My tenant and app, their webhook endpoint.
            let (_, theirs_vars) = request(&s, mutation, &theirs, &their_app).await;
            let (q, mut vars) = request(&s, mutation, &mine, &my_app).await;
            vars["w"] = theirs_vars["w"].clone();
            let v = s.gql(Some(&owner), &q, vars).await;
            assert_eq!(code(&v), "not_found", "{mutation} with their endpoint: {v}");
        }
    }
    // Their webhook endpoints and pre-send hook are untouched.
    let (tt, ta) = (
        TenantId::parse(&theirs).unwrap(),
        AppId::parse(&their_app).unwrap(),
    );
    let eps =
        s.cp.list_webhook_endpoints(
            &tt,
            &ta,
            &starling_core::http::PageParams {
                limit: Some(100),
                cursor: None,
            },
        )
        .await
        .unwrap()
        .data;
    assert!(eps.len() >= 3, "{eps:?}");
    for e in &eps {
        assert!(e.enabled, "{e:?}");
        assert_eq!(e.url, "https://example.com/hook", "{e:?}");
        let secret = s.cp.get_webhook_secret(&tt, &ta, &e.id).await.unwrap();
        assert!(secret.previous_expires_at.is_none(), "not rotated: {e:?}");
    }
    let hook =
        s.cp.get_pre_send_hook(&tt, &ta)
            .await
            .expect("their hook is still there");
    assert_eq!(hook.url, ORIGINAL_HOOK);
    // Nothing of theirs changed: their app is still active under its old name.
    let d = s
        .ok(
            Some(OPERATOR),
            "query($t: ID!, $a: ID!) { tenant(id: $t) { app(id: $a) { status apiKeys(first: 100) { edges { node { status replacedBy } } } } } }",
            json!({"t": theirs, "a": their_app}),
        )
        .await;
    assert_eq!(d["tenant"]["app"]["status"], "ACTIVE");
    let keys = d["tenant"]["app"]["apiKeys"]["edges"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert_eq!(k["node"]["status"], "ACTIVE", "{k}");
        assert!(k["node"]["replacedBy"].is_null(), "{k}");
    }
}

//! API-key scopes per route, held to the table in docs/SECURITY.md ("API key scopes"): every
//! route of the committed `sdk-specs/openapi/server.json` is in the table, and a key of each scope
//! the table names is refused exactly the routes whose permission the scope does not grant.
//! Also: a path parameter that is not UTF-8 once percent-decoded is the JSON error body, on the
//! public and the internal listener.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_core::appconfig::KeyConfig;
use starling_core::limits::Limits;
use starling_core::secret::{KeyHasher, generate_api_key};

use crate::harness::{Backend, Cell};

/// The section of docs/SECURITY.md the tests read.
const HEADING: &str = "## API key scopes";

/// The rows of every Markdown table in the section, by the table's first header cell.
fn tables() -> BTreeMap<String, Vec<Vec<String>>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md"))
        .unwrap();
    let start = doc
        .find(&format!("\n{HEADING}\n"))
        .unwrap_or_else(|| panic!("docs/SECURITY.md has no `{HEADING}` section"));
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            current = None;
            continue;
        };
        let cells: Vec<String> = row
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect();
        match &current {
            None => {
                out.entry(cells[0].clone()).or_default();
                current = Some(cells[0].clone());
            }
            Some(_) if cells[0].starts_with("---") => {}
            Some(t) => out.get_mut(t).unwrap().push(cells),
        }
    }
    out
}

/// `scope → permissions it grants`, from the table headed `scope | grants`.
fn scope_table() -> BTreeMap<String, BTreeSet<String>> {
    let t = tables();
    let rows = t.get("scope").expect("a `| scope | grants |` table");
    rows.iter()
        .map(|r| {
            let grants = r[1]
                .split(',')
                .map(|g| g.trim().trim_matches('`').to_owned())
                .filter(|g| !g.is_empty())
                .collect();
            (r[0].clone(), grants)
        })
        .collect()
}

/// `(METHOD, path) → permission`, from the table headed `method | route | needs`.
fn route_table() -> BTreeMap<(String, String), String> {
    let t = tables();
    let rows = t
        .get("method")
        .expect("a `| method | route | needs |` table");
    let mut out = BTreeMap::new();
    for r in rows {
        let prev = out.insert((r[0].clone(), r[1].clone()), r[2].clone());
        assert!(prev.is_none(), "{} {} is in the table twice", r[0], r[1]);
    }
    out
}

/// Every `(METHOD, path)` of the committed server API spec.
fn spec_routes() -> BTreeSet<(String, String)> {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sdk-specs/openapi/server.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut out = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// A key of `scopes` added to `app`'s config; its token.
async fn key_with(c: &Cell, app: &crate::harness::TestApp, scopes: &[&str]) -> String {
    let hasher = KeyHasher::new("dp-test-key-hash-secret-0123456789abcdef");
    let k = generate_api_key();
    let mut cfg = (*c.node.messaging.directory.app(&app.cfg.app_id).unwrap()).clone();
    cfg.keys.push(KeyConfig {
        id: k.id.clone(),
        secret_hash: hasher.hash(&k.secret),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        revoked: false,
    });
    c.publish(cfg).await;
    k.token
}

#[test]
fn the_scope_table_covers_every_route_of_the_spec_and_grants_known_permissions() {
    let routes = route_table();
    let documented: BTreeSet<_> = routes.keys().cloned().collect();
    let spec = spec_routes();
    assert_eq!(
        spec.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes of server.json missing from docs/SECURITY.md ({HEADING})"
    );
    assert_eq!(
        documented.difference(&spec).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes in docs/SECURITY.md ({HEADING}) that server.json does not have"
    );
    let known: BTreeSet<String> = starling_data_plane::scope::Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    for ((m, p), needs) in &routes {
        assert!(known.contains(needs), "{m} {p} needs unknown `{needs}`");
    }
    let scopes = scope_table();
    assert!(scopes.contains_key("server_full") && scopes.contains_key("read_only"));
    for (scope, grants) in &scopes {
        // The table and the code say the same of each scope.
        let code: BTreeSet<String> = starling_data_plane::scope::scope_grants(scope)
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        assert_eq!(&code, grants, "scope {scope}");
    }
}

/// Every route, with a key of each scope of the table: refused (403 `forbidden`, naming the
/// permission) exactly where the table says the scope lacks the route's permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_scope_as_the_scope_table_says() {
    let c = Cell::start(Backend::Sqlite).await;
    let app = c.app(Limits::default()).await;
    let routes = route_table();
    let mut failures = Vec::new();
    let mut refused = 0;
    for (scope, grants) in scope_table() {
        let key = key_with(&c, &app, &[scope.as_str()]).await;
        for ((method, path), needs) in &routes {
            // Ids that exist nowhere: a permitted call gets as far as looking them up.
            let url = path
                .replace("{user_id}", "nobody")
                .replace("{conversation_id}", "cnv_01jdxk3n5q0000000000000000")
                .replace("{message_id}", "msg_01jdxk3n5q0000000000000000")
                .replace("{endpoint_id}", "ep_01jdxk3n5q0000000000000000")
                .replace("{event_id}", "evt_01jdxk3n5q0000000000000000")
                .replace("{emoji}", "%F0%9F%91%8D");
            let url = if url.ends_with("/reactions/%F0%9F%91%8D") {
                format!("{url}?user_id=nobody")
            } else {
                url
            };
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
            let (st, v, _) = c.api_h(&key, m, &url, body).await;
            let allowed = grants.contains(needs);
            let denied = st == StatusCode::FORBIDDEN
                && v["code"] == "forbidden"
                && v["message"]
                    .as_str()
                    .is_some_and(|s| s.contains(&format!("`{needs}` permission")));
            if !allowed {
                refused += 1;
            }
            let ok = if allowed {
                // Anything but a refusal; and no 5xx but the documented 503 of the routes
                // that reach the control plane (there is none beside this node).
                st != StatusCode::FORBIDDEN
                    && st != StatusCode::UNAUTHORIZED
                    && (st.as_u16() < 500
                        || (st == StatusCode::SERVICE_UNAVAILABLE
                            && path.starts_with("/v1/webhooks/endpoints")))
            } else {
                denied
            };
            if !ok {
                failures.push(format!(
                    "{scope}: {method} {path} (needs {needs}, {}) → {st} {v}",
                    if allowed { "allowed" } else { "refused" }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The walk refused something (read_only's writes and secrets), so it could fail.
    assert!(refused > 0);
}

/// A key whose only scope this version does not know may do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_an_unknown_scope_may_do_nothing() {
    let c = Cell::start(Backend::Sqlite).await;
    let app = c.app(Limits::default()).await;
    let key = key_with(&c, &app, &["server_everything"]).await;
    let (st, v, _) = c.api_h(&key, Method::GET, "/v1/users", None).await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (403, Some("forbidden")));
}

/// `%FF%FE` decodes to bytes that are not UTF-8: the JSON error body naming the parameter, on
/// the public listener and on the internal one (axum's own answer is plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_parameter_that_is_not_utf8_is_a_json_400_naming_it() {
    let c = Cell::start(Backend::Sqlite).await;
    let app = c.app(Limits::default()).await;
    for (path, field) in [
        ("/v1/conversations/%FF%FE", "conversation_id"),
        ("/v1/users/%FF%FE/conversations", "user_id"),
        (
            "/v1/conversations/cnv_x/messages/%C3%28/replies",
            "message_id",
        ),
    ] {
        let res = c
            .client
            .get(format!("{}{path}", c.base))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        let st = res.status();
        let text = res.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("GET {path} → {st}, not JSON: {text}"));
        assert_eq!(
            (st.as_u16(), v["code"].as_str(), v["field"].as_str()),
            (400, Some("invalid_request"), Some(field)),
            "GET {path}: {v}"
        );
        assert!(v["request_id"].is_string(), "{v}");
    }
    // The internal listener, with a call token genuinely signed for the request.
    let path = format!("/internal/v1/apps/{}/users/%FF%FE", app.cfg.app_id);
    let token = starling_core::internal_auth::mint_call_token(
        &c.signing_key,
        &c.cluster_id,
        "GET",
        &path,
        b"",
        chrono::Utc::now().timestamp(),
        30,
    );
    let res = c
        .client
        .get(format!("{}{path}", c.internal_bases[0]))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let st = res.status();
    let text = res.text().await.unwrap();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("GET {path} → {st}, not JSON: {text}"));
    assert_eq!(
        (st.as_u16(), v["code"].as_str(), v["field"].as_str()),
        (400, Some("invalid_request"), Some("user_id")),
        "{v}"
    );
}

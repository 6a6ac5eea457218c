//! The console's doors before login: request bodies bounded and refused with a code (never read
//! whole), no multipart, costs that cannot overflow, the login limits atomic under parallel
//! attempts, refresh-token reuse, and whose `X-Forwarded-For` counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use starling_console_api::Mode;
use starling_control_plane::config::ConsoleConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend_tests;
use crate::harness::{Backend, OPERATOR, PASSWORD, Server, code, test_config, unique};

backend_tests!(
    parallel_wrong_passwords_are_checked_at_most_the_allowed_number,
    a_reused_refresh_token_ends_its_session,
);

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken } }";
const REFRESH: &str =
    "mutation($r: String!) { refreshSession(refreshToken: $r) { accessToken refreshToken } }";

/// Sends the head of a POST to the console and then `body_chunks` chunks of 64 KiB (chunked
/// encoding), for as long as the server takes them; returns the response's status line and body,
/// and how many body bytes the server took before it answered and closed.
async fn raw_post(s: &Server, head_extra: &str, body_chunks: usize) -> (String, Value, usize) {
    let addr = s.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{head_extra}\r\n",
        starling_console_api::PATH
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let n = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..body_chunks {
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if wr.write_all(&framed).await.is_err() {
                return;
            }
            n.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        let r = tokio::time::timeout_at(deadline.into(), rd.read(&mut tmp))
            .await
            .expect("an answer within 60 s");
        match r {
            Ok(0) | Err(_) => panic!(
                "connection ended before a whole answer: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length in the answer");
            if body.len() >= len {
                let status = head.lines().next().unwrap().to_owned();
                break (
                    status,
                    serde_json::from_str(&body[..len]).expect("a JSON body"),
                );
            }
        }
    };
    writer.abort();
    (status, body, sent.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_without_being_read() {
    let s = Server::start(Backend::Sqlite).await;
    let max = ConsoleConfig::default().max_body_bytes;

    // 200 MiB declared: refused at once, nothing read.
    let (status, v, sent) = raw_post(&s, "content-length: 209715200\r\n", 0).await;
    assert!(status.contains(" 413 "), "{status}");
    assert_eq!(code(&v), "payload_too_large", "{v}");
    assert_eq!(sent, 0);

    // 200 MiB streamed without a length: cut soon after the limit, not buffered whole.
    let (status, v, sent) = raw_post(&s, "transfer-encoding: chunked\r\n", 3200).await;
    assert!(status.contains(" 413 "), "{status}");
    assert_eq!(code(&v), "payload_too_large", "{v}");
    assert!(
        sent < 32 << 20,
        "the server took {sent} bytes of a body over {max}"
    );

    // Multipart (file uploads) is not accepted at all.
    let res = s
        .client
        .post(format!("{}{}", s.base, starling_console_api::PATH))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\ncontent-disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let v: Value = res.json().await.unwrap();
    assert_eq!(code(&v), "unsupported_media_type", "{v}");

    // A body that is not a GraphQL request: a GraphQL error with a code, not plain text.
    for body in ["{not json", "[{\"query\": \"{ __typename }\"}]"] {
        let res = s
            .client
            .post(format!("{}{}", s.base, starling_console_api::PATH))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(code(&v), "invalid_json", "{v}");
    }

    // Under the limit, all is as before.
    let v = s.gql(None, "{ __typename }", json!({})).await;
    assert_eq!(v["data"]["__typename"], "Query", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_at_i32_max_nested_costs_the_clamped_amount_and_is_refused() {
    let s = Server::start(Backend::Sqlite).await;
    let t = s.tenant().await;
    let (_, token) = s.member(&t, "ADMIN").await;
    let q = "{ viewer { memberships(first: 2147483647) { edges { node { tenant { apps(first: 2147483647) { edges { node { apiKeys(first: 2147483647) { edges { node { id } } } } } } } } } } } }";
    // Multiplied as given, the cost wraps a 64-bit integer (debug builds panic: a 500).
    let v = s.gql(Some(&token), q, json!({})).await;
    assert_eq!(code(&v), "query_too_costly", "{v}");
    let cost = v["extensions"]["cost"]["requestedQueryCost"]
        .as_u64()
        .unwrap();
    assert!(cost >= 1_000_000, "each first counts as 100: {cost}");
    assert!(v["data"].is_null(), "{v}");
    // One level with first at i32::MAX: counted as 100, so it runs, and the resolver names
    // the argument.
    let v = s
        .gql(
            Some(&token),
            "query($t: ID!) { tenant(id: $t) { apps(first: 2147483647) { edges { node { id } } } } }",
            json!({"t": t}),
        )
        .await;
    assert_eq!(code(&v), "validation_failed", "{v}");
    assert_eq!(v["errors"][0]["extensions"]["field"], "first");
}

async fn account(s: &Server) -> String {
    let t = s.tenant().await;
    let email = format!("{}@example.com", unique("par"));
    let inv = s.invite(OPERATOR, &t, &email, "VIEWER").await;
    s.ok(
        None,
        "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, name: \"P\", password: $p) { accessToken } }",
        json!({"t": inv, "p": PASSWORD}),
    )
    .await;
    email
}

/// Fires `n` logins at once; the codes answered.
async fn parallel_logins(
    s: &Server,
    n: usize,
    login: impl Fn(usize) -> (Value, Vec<(String, String)>),
) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (vars, headers) = login(i);
        let client = s.client.clone();
        let url = format!("{}{}", s.base, starling_console_api::PATH);
        tasks.push(tokio::spawn(async move {
            let mut req = client
                .post(url)
                .json(&json!({"query": LOGIN, "variables": vars}));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let v: Value = req.send().await.unwrap().json().await.unwrap();
            code(&v)
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes
}

fn count(codes: &[String], c: &str) -> usize {
    codes.iter().filter(|x| *x == c).count()
}

async fn parallel_wrong_passwords_are_checked_at_most_the_allowed_number(s: Server) {
    let email = account(&s).await;
    // login_max_failures = 3 in the tests. Twelve wrong passwords at once: at most three are
    // checked (each answered `unauthorized`, or the last `account_locked`); the others are
    // refused unchecked.
    let codes = parallel_logins(&s, 12, |_| {
        (json!({"e": email, "p": "wrong password!"}), vec![])
    })
    .await;
    let wrong = count(&codes, "unauthorized");
    assert!(
        wrong <= 3,
        "{wrong} wrong passwords were checked: {codes:?}"
    );
    assert_eq!(wrong + count(&codes, "account_locked"), 12, "{codes:?}");
    // And the account is locked: even the right password is refused.
    let v = s.gql(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
    assert_eq!(code(&v), "account_locked", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_failures_from_one_address_stop_at_its_bucket() {
    let s = Server::start(Backend::Sqlite).await;
    let per_address = starling_console_api::auth::FAILED_LOGINS_PER_ADDRESS as usize;
    let start = Instant::now();
    let codes = parallel_logins(&s, 40, |i| {
        (
            json!({"e": format!("guess{i}@example.com"), "p": PASSWORD}),
            vec![],
        )
    })
    .await;
    // The bucket earns one attempt back every 3 s while the test runs.
    let refilled = (start.elapsed().as_secs() / 3) as usize + 1;
    let checked = count(&codes, "unauthorized");
    assert!(
        checked <= per_address + refilled,
        "{checked} failures from one address were checked: {codes:?}"
    );
    assert_eq!(checked + count(&codes, "rate_limited"), 40, "{codes:?}");
}

async fn a_reused_refresh_token_ends_its_session(s: Server) {
    let email = account(&s).await;
    let d = s.ok(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
    let r1 = d["login"]["refreshToken"].as_str().unwrap().to_owned();
    let d = s.ok(None, REFRESH, json!({"r": r1})).await;
    let a2 = d["refreshSession"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let r2 = d["refreshSession"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    s.ok(Some(&a2), "{ viewer { id } }", json!({})).await;
    // r1 again: someone replays a used token. Refused, and the session it belongs to ends:
    // the current access token and the current refresh token stop working too.
    let v = s.gql(None, REFRESH, json!({"r": r1})).await;
    assert_eq!(code(&v), "unauthorized", "{v}");
    let v = s.gql(Some(&a2), "{ viewer { id } }", json!({})).await;
    assert_eq!(code(&v), "unauthorized", "the session ended: {v}");
    let v = s.gql(None, REFRESH, json!({"r": r2})).await;
    assert_eq!(code(&v), "unauthorized", "{v}");
    // Another session of the same account is untouched.
    s.ok(None, LOGIN, json!({"e": email, "p": PASSWORD})).await;
}

async fn login_ip(s: &Server, email: &str, forwarded: &str) -> String {
    let (_, v) = s
        .gql_with(
            &[("x-forwarded-for", forwarded)],
            LOGIN,
            json!({"e": email, "p": PASSWORD}),
        )
        .await;
    let token = v["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = s
        .ok(
            Some(&token),
            "{ viewer { auditLog(first: 100) { edges { node { action ip } } } } }",
            json!({}),
        )
        .await;
    let edges = d["viewer"]["auditLog"]["edges"].as_array().unwrap();
    edges
        .iter()
        .rev()
        .find(|e| e["node"]["action"] == "login")
        .unwrap()["node"]["ip"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // By default nobody is trusted: the header is the client's to write, so it is ignored,
    // for the audit log and for the per-address login limit alike.
    let s = Server::start(Backend::Sqlite).await;
    let email = account(&s).await;
    assert_eq!(login_ip(&s, &email, "203.0.113.9").await, "127.0.0.1");
    let codes = parallel_logins(&s, 30, |i| {
        (
            json!({"e": format!("guess{i}@example.com"), "p": PASSWORD}),
            vec![("x-forwarded-for".into(), format!("198.51.100.{i}"))],
        )
    })
    .await;
    assert!(
        count(&codes, "rate_limited") >= 5,
        "a made-up X-Forwarded-For escaped the address limit: {codes:?}"
    );

    // Behind a trusted proxy (the tests' loopback), the right-most untrusted address counts.
    let cfg = ConsoleConfig {
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..test_config()
    };
    let s = Server::start_with(Backend::Sqlite, cfg, Mode::Development).await;
    let email = account(&s).await;
    assert_eq!(
        login_ip(&s, &email, "192.0.2.1, 203.0.113.9").await,
        "203.0.113.9"
    );
    assert_eq!(
        login_ip(&s, &email, "192.0.2.1, 203.0.113.9, 127.0.0.5").await,
        "203.0.113.9",
        "trusted hops are skipped"
    );
    // One client behind the proxy runs out of attempts; another behind it does not.
    let codes = parallel_logins(&s, 30, |i| {
        (
            json!({"e": format!("guess{i}@example.com"), "p": PASSWORD}),
            vec![("x-forwarded-for".into(), "203.0.113.50".into())],
        )
    })
    .await;
    assert!(count(&codes, "rate_limited") >= 5, "{codes:?}");
    let (_, v) = s
        .gql_with(
            &[("x-forwarded-for", "203.0.113.51")],
            LOGIN,
            json!({"e": "nobody@example.com", "p": PASSWORD}),
        )
        .await;
    assert_eq!(
        code(&v),
        "unauthorized",
        "another client has its own limit: {v}"
    );
}

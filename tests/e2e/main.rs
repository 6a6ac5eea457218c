//! Black-box tests of the `starling` binary: the README walkthrough on `standalone`, restarts,
//! graceful shutdown, config errors, OTLP export, and `control-plane` + `migrate` on the real
//! PostgreSQL and Redis started by `scripts/test`.

mod bench_smoke;
mod billing;
mod cell;
mod console;
mod image;
mod webhooks;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, wait_healthy};

const START: Duration = Duration::from_secs(60);

fn token_from(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("sop_"))
                .map(str::to_owned)
        })
        .expect("the first start prints the operator token")
}

async fn post(c: &reqwest::Client, url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let r = c
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// The README's walkthrough, as a newcomer would run it, then a restart on the same data.
#[tokio::test]
async fn standalone_walkthrough_restart_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        &[],
        dir.path(),
    );
    let out = p.wait_for_line("Press Ctrl-C", START).unwrap();
    let token = token_from(&out);
    assert!(out.iter().any(|l| l.contains("First start")), "{out:?}");
    wait_healthy(&format!("{base}/healthz"), START)
        .await
        .unwrap();
    let secrets = std::fs::read_to_string(dir.path().join("data/secrets.toml")).unwrap();
    assert!(
        secrets.contains(&token),
        "the token is kept in the data dir"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/secrets.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secrets.toml is private: {mode:o}");
    }

    let c = reqwest::Client::new();
    let (st, tenant) = post(
        &c,
        &format!("{base}/admin/v1/tenants"),
        &token,
        json!({"name": "Acme"}),
    )
    .await;
    assert_eq!(st, 201, "{tenant}");
    let t = tenant["id"].as_str().unwrap();
    let (st, app) = post(
        &c,
        &format!("{base}/admin/v1/tenants/{t}/apps"),
        &token,
        json!({"name": "Acme Chat", "environment": "production"}),
    )
    .await;
    assert_eq!(st, 201, "{app}");
    let a = app["id"].as_str().unwrap();
    let (st, key) = post(
        &c,
        &format!("{base}/admin/v1/tenants/{t}/apps/{a}/api-keys"),
        &token,
        json!({"name": "backend"}),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    assert!(key["secret"].as_str().unwrap().starts_with("key_"));
    // The error the walkthrough shows.
    let (st, err) = post(
        &c,
        &format!("{base}/admin/v1/tenants/{t}/apps"),
        &token,
        json!({"name": "Other", "environment": "prod"}),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(err["code"], "validation_failed");
    assert_eq!(err["field"], "environment");
    let (st, err) = post(
        &c,
        &format!("{base}/admin/v1/tenants/{t}/apps"),
        &token,
        json!({"name": "Acme Chat"}),
    )
    .await;
    assert_eq!((st.as_u16(), err["code"].as_str()), (409, Some("conflict")));

    // The spec served is the one committed.
    let served: Value = c
        .get(format!("{base}/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sdk-specs/openapi/admin.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "the running server serves the committed OpenAPI"
    );

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("starling_http_requests_total")
            && metrics.contains("route=\"/admin/v1/tenants\""),
        "{metrics}"
    );
    let ready: Value = c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");

    let st = p.interrupt(Duration::from_secs(15)).unwrap();
    assert!(st.success(), "Ctrl-C stops it cleanly: {st:?}");
    assert!(p.stdout().iter().any(|l| l.contains("Starling stopped")));

    // Restart: same token, no new one printed, data still there.
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        &[],
        dir.path(),
    );
    let out = p.wait_for_line("Press Ctrl-C", START).unwrap();
    assert!(
        !out.iter().any(|l| l.contains("sop_")),
        "no token printed on a later start: {out:?}"
    );
    assert!(
        out.iter().any(|l| l.contains("operator token: in")),
        "{out:?}"
    );
    wait_healthy(&format!("{base}/healthz"), START)
        .await
        .unwrap();
    let r = c
        .get(format!("{base}/admin/v1/tenants/{t}/apps/{a}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the old token works and the app survived the restart"
    );
    let (_, v) = post(
        &c,
        &format!("{base}/admin/v1/api-keys/introspect"),
        &token,
        json!({"key": key["secret"]}),
    )
    .await;
    assert_eq!(v["active"], true, "API keys survive a restart: {v}");
    p.interrupt(Duration::from_secs(15)).unwrap();

    // Secrets lost but data present: refuse, never make new ones silently.
    std::fs::remove_file(dir.path().join("data/secrets.toml")).unwrap();
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "data", "--listen", &listen],
        &[],
        dir.path(),
    );
    let st = p.wait(START).unwrap();
    assert!(!st.success());
    let err = p.stderr().join("\n");
    assert!(
        err.contains("secrets.toml") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_config_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "d"],
        &[("STARLING_SERVER__LISTEN", "not-an-address")],
        dir.path(),
    );
    assert!(!p.wait(START).unwrap().success());
    assert!(
        p.stderr().join("\n").contains("server.listen"),
        "{:?}",
        p.stderr()
    );

    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "d"],
        &[("STARLING_DATABASE__MAX_CONNECTIONS", "lots")],
        dir.path(),
    );
    assert!(!p.wait(START).unwrap().success());
    let err = p.stderr().join("\n");
    assert!(
        err.contains("database.max_connections")
            && err.contains("STARLING_DATABASE__MAX_CONNECTIONS"),
        "{err}"
    );

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap();
    let mut p = Proc::spawn(
        &[
            "standalone",
            "--data-dir",
            "d",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert!(!p.wait(START).unwrap().success());
    assert!(
        p.stderr().join("\n").contains("port"),
        "unknown keys are refused: {:?}",
        p.stderr()
    );

    let mut p = Proc::spawn(&["control-plane"], &[], dir.path());
    assert!(!p.wait(START).unwrap().success());
    assert!(
        p.stderr().join("\n").contains("database.url"),
        "{:?}",
        p.stderr()
    );

    let mut p = Proc::spawn(&["data-plane"], &[], dir.path());
    assert!(!p.wait(START).unwrap().success());
    assert!(
        p.stderr().join("\n").contains("database.url"),
        "{:?}",
        p.stderr()
    );

    let mut p = Proc::spawn(&["--help"], &[], dir.path());
    assert!(p.wait(START).unwrap().success());
    let help = p.stdout().join("\n");
    for cmd in ["standalone", "control-plane", "data-plane", "migrate"] {
        assert!(help.contains(cmd), "--help lists {cmd}: {help}");
    }
}

/// Spans reach an OTLP/HTTP receiver when an endpoint is configured.
#[tokio::test]
async fn traces_are_exported_over_otlp_when_configured() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let h = h.clone();
            async move {
                if !body.is_empty() {
                    h.fetch_add(1, Ordering::SeqCst);
                }
                ""
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, receiver).await });

    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut p = Proc::spawn(
        &["standalone", "--data-dir", "d", "--listen", &listen],
        &[("STARLING_TELEMETRY__OTLP_ENDPOINT", &otlp)],
        dir.path(),
    );
    p.wait_for_line("Press Ctrl-C", START).unwrap();
    wait_healthy(&format!("http://{listen}/healthz"), START)
        .await
        .unwrap();
    for _ in 0..3 {
        reqwest::get(format!("http://{listen}/admin/v1/tenants"))
            .await
            .unwrap();
    }
    // Spans are flushed at shutdown at the latest.
    assert!(p.interrupt(Duration::from_secs(20)).unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hits.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        hits.load(Ordering::SeqCst) > 0,
        "no OTLP export arrived; stderr:\n{}",
        p.stderr().join("\n")
    );
}

/// `starling migrate` and `starling control-plane` on the real PostgreSQL and Redis.
#[tokio::test]
async fn control_plane_process_on_postgres_and_redis() {
    let db = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL and Redis");
    let redis = std::env::var("TEST_REDIS_URL")
        .expect("TEST_REDIS_URL is not set: run the tests with scripts/test, which starts PostgreSQL and Redis");
    let dir = tempfile::tempdir().unwrap();

    let mut m = Proc::spawn(&["migrate", "--database-url", &db], &[], dir.path());
    assert!(m.wait(START).unwrap().success(), "{:?}", m.stderr());
    let out = m.stdout().join("\n");
    assert!(
        out.contains("0 pending") && out.contains("applied"),
        "{out}"
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let token = "sop_e2e-operator-token-abcdefghijklmnopqrstuvwxyz";
    let mut p = Proc::spawn(
        &["control-plane"],
        &[
            ("STARLING_DATABASE__URL", &db),
            ("STARLING_CACHE__REDIS_URL", &redis),
            ("STARLING_AUTH__OPERATOR_TOKEN", token),
            (
                "STARLING_AUTH__KEY_HASH_SECRET",
                "e2e-key-hash-secret-abcdefghijklmnopqrstuvwxyz",
            ),
            (
                "STARLING_AUTH__SEALING_KEY",
                "e2e:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("STARLING_SERVER__LISTEN", &listen),
        ],
        dir.path(),
    );
    let base = format!("http://{listen}");
    if let Err(e) = wait_healthy(&format!("{base}/readyz"), START).await {
        panic!("{e}\nstderr:\n{}", p.stderr().join("\n"));
    }
    let c = reqwest::Client::new();
    let (st, t) = post(
        &c,
        &format!("{base}/admin/v1/tenants"),
        token,
        json!({"name": "On Postgres"}),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let r = c
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(token)
        .header(
            "Idempotency-Key",
            format!("e2e-{}", t["id"].as_str().unwrap()),
        )
        .json(&json!({"name": "Once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        !p.stderr().join("\n").contains(token),
        "the token is never logged"
    );
    assert!(p.interrupt(Duration::from_secs(15)).unwrap().success());
}

/// The shell commands of the README's walkthrough, run as written (token and port substituted).
#[tokio::test]
async fn readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("## A five-minute walkthrough")
        .expect("README has the walkthrough");
    let end = start
        + readme[start..]
            .find("\n## ")
            .expect("walkthrough section ends");
    let section = &readme[start..end];
    let mut script = String::new();
    for block in section.split("```sh\n").skip(1) {
        script.push_str(block.split("```").next().unwrap());
    }
    assert!(script.contains("curl"), "walkthrough has commands");

    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut p = Proc::spawn(&["standalone", "--listen", &listen], &[], dir.path());
    let token = token_from(&p.wait_for_line("Press Ctrl-C", START).unwrap());
    wait_healthy(&format!("http://{listen}/healthz"), START)
        .await
        .unwrap();
    let bin = starling_e2e::starling_bin();
    let script = script
        .replace("sop_…", &token)
        .replace("127.0.0.1:7400", &listen)
        .replace("cargo run -q --", &bin.display().to_string());

    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .await
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "\"name\":\"Acme\"",
        "\"environment\":\"production\"",
        "\"secret\":\"key_",
        "\"active\":true",
        "\"code\":\"validation_failed\"",
        "\"field\":\"environment\"",
        "\"code\":\"unauthorized\"",
        "\"overrides\":{\"api_requests_per_second\":100,\"max_message_bytes\":65536}",
        "\"rotated_from\":\"key_",
        "sent #1",
        "[1] alice: Hi Bob!",
        "\"unread_count\":1",
    ] {
        assert!(
            stdout.contains(expected),
            "walkthrough output lacks {expected}:\n{stdout}"
        );
    }
    assert!(p.interrupt(Duration::from_secs(15)).unwrap().success());
}

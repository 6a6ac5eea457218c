//! The container image and the Terraform modules, as far as they can be checked without a
//! container engine or a Kubernetes cluster: the binary the image would contain starts with
//! nothing but environment variables — the `Dockerfile`'s `ENV` plus every `STARLING_*` variable
//! the Terraform modules set — as `control-plane` and as `data-plane` on the real PostgreSQL,
//! Redis and Pulsar of `scripts/test`, and `starling healthcheck` (the image's `HEALTHCHECK`)
//! tells a ready server from a missing one.
//!
//! The variable names are read from the files, so a module that sets a setting the binary does
//! not know (config sections refuse unknown keys) fails here rather than in a deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use starling_e2e::{Proc, free_port, starling_bin, wait_healthy};

const START: Duration = Duration::from_secs(60);
const OPERATOR: &str = "sop_image-test-operator-token-abcdefghijklmnopqrstuvwxyz";
const KEY_HASH: &str = "image-test-key-hash-secret-abcdefghijklmnopqrstuvwxyz";
/// The control plane's sealing key (`kid:base64` of 32 bytes); cells never get it.
const SEALING_KEY: &str = "e2e:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts PostgreSQL, Redis and Pulsar")
    })
}

/// The `ENV` of the Dockerfile's last stage (the runtime image), in order.
fn dockerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // Join continuation lines, drop comments.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('#') && cur.is_empty() {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .expect("Dockerfile has a FROM");
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "the Dockerfile is multi-stage"
    );
    let runtime = &lines[last_from..];
    let user = runtime
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "the image runs as a non-root user, not {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("HEALTHCHECK") && l.contains("\"healthcheck\"")),
        "the runtime stage's HEALTHCHECK runs `starling healthcheck`"
    );
    let mut out = Vec::new();
    for l in runtime {
        if let Some(rest) = l.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV uses KEY=value: {l}"));
                out.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

/// Every `STARLING_<SECTION>__<KEY>` name quoted in the `.tf` files of a Terraform module.
fn terraform_env_names(module: &str) -> Vec<String> {
    let dir = root().join("terraform/modules").join(module);
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "tf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with("STARLING_")
                && piece.contains("__")
                && piece
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                names.insert(piece.to_owned());
            }
        }
    }
    assert!(
        names.contains("STARLING_DATABASE__URL"),
        "module {module} sets no STARLING_DATABASE__URL: {names:?}"
    );
    names.into_iter().collect()
}

/// The environment of one process as the image runs it under Terraform: the Dockerfile's `ENV`,
/// then every variable the module sets, with values for this machine's test services.
fn image_env(module: &str, samples: &BTreeMap<&str, String>) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
    for name in terraform_env_names(module) {
        let v = samples.get(name.as_str()).unwrap_or_else(|| {
            panic!("terraform/modules/{module} sets {name}: give this test a sample value for it")
        });
        env.insert(name, v.clone());
    }
    env.into_iter().collect()
}

/// Starts `starling <command>` with the environment `env_for(port)` on a free port and waits
/// until it is ready. Another process can take a free port before the server binds it (this
/// machine runs many tests and services at once): then it tries another, up to three times.
async fn spawn_on_free_port(
    command: &str,
    dir: &Path,
    mut env_for: impl FnMut(u16) -> Vec<(String, String)>,
) -> (Proc, u16, Vec<(String, String)>) {
    for attempt in 1..=3 {
        let port = free_port();
        let env = env_for(port);
        let mut p = spawn(&[command], &env, dir);
        // A taken port shows within seconds: the process binds before anything else.
        if p.wait(Duration::from_secs(5)).is_ok() {
            let err = p.stderr().join("\n");
            if attempt < 3 && err.contains("Address already in use") {
                eprintln!("{command}: port {port} was taken meanwhile; trying another");
                continue;
            }
            panic!("{command} exited at start:\n{err}");
        }
        if let Err(e) = wait_healthy(&format!("http://127.0.0.1:{port}/readyz"), START).await {
            panic!("{e}\n{command} stderr:\n{}", p.stderr().join("\n"));
        }
        return (p, port, env);
    }
    unreachable!("the loop returns or panics")
}

fn spawn(args: &[&str], env: &[(String, String)], dir: &Path) -> Proc {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Proc::spawn(args, &pairs, dir)
}

/// `starling healthcheck` with the process's environment; its exit status and output.
fn healthcheck(extra: &[&str], env: &[(String, String)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(starling_bin());
    cmd.arg("healthcheck").args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("STARLING_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("run starling healthcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The app-config topic got the policies the processes give it when `pulsar.admin_url` is set
/// (as both modules set it): kept forever, compacted past the configured threshold.
async fn assert_feed_policies(topic: &str, threshold: u64) {
    let admin = env("TEST_PULSAR_ADMIN_URL");
    let path = topic.replacen("persistent://", "persistent/", 1);
    // The broker's admin API is TLS-only with token authentication (scripts/pulsar.sh).
    let ca = std::fs::read(env("TEST_PULSAR_CA_FILE")).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let token = env("TEST_PULSAR_ADMIN_TOKEN");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let get = |what: &str| {
            let url = format!("{admin}/admin/v2/{path}/{what}");
            let c = c.clone();
            let token = token.clone();
            async move {
                match c.get(url).bearer_auth(token).send().await {
                    Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                }
            }
        };
        let retention = get("retention").await;
        let compaction = get("compactionThreshold").await;
        if retention["retentionTimeInMinutes"] == -1
            && retention["retentionSizeInMB"] == -1
            && compaction == threshold
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: policies not set: retention {retention}, compaction threshold {compaction}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn call(method: Method, url: &str, bearer: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(bearer);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

/// A control plane and a gateway node started only from the image's and the modules'
/// environment, on the real services; they work together (a key made on the control plane is
/// accepted by the node), the health probe passes on both and fails where nothing listens, and
/// neither process writes to its working directory.
#[tokio::test]
async fn image_processes_start_from_terraform_env_only() {
    // A namespace of its own, which the processes create through the admin API.
    let prefix = format!(
        "persistent://starling-e2e/image-{}/starling-",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut samples: BTreeMap<&str, String> = BTreeMap::new();
    let (signing_key, public_key) = starling_e2e::keygen(&starling_e2e::starling_bin()).unwrap();
    let config_key = starling_core::cellkey::CellSecretKey::generate();
    for (k, v) in [
        ("STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY", signing_key),
        (
            "STARLING_AUTH__CONTROL_PLANE_PUBLIC_KEYS",
            format!("[\"{public_key}\"]"),
        ),
        ("STARLING_DATABASE__URL", env("TEST_DATABASE_URL")),
        ("STARLING_DATABASE__MAX_CONNECTIONS", "5".into()),
        ("STARLING_CACHE__REDIS_URL", env("TEST_REDIS_URL")),
        ("STARLING_PULSAR__URL", env("TEST_PULSAR_URL")),
        ("STARLING_PULSAR__TOPIC_PREFIX", prefix.clone()),
        ("STARLING_PULSAR__ADMIN_URL", env("TEST_PULSAR_ADMIN_URL")),
        // Both modules pass a token (a Kubernetes secret) and the broker's CA.
        ("STARLING_PULSAR__TOKEN", env("TEST_PULSAR_ADMIN_TOKEN")),
        ("STARLING_PULSAR__TLS_CA_FILE", env("TEST_PULSAR_CA_FILE")),
        (
            "STARLING_PULSAR__COMPACTION_THRESHOLD_BYTES",
            "2097152".into(),
        ),
        ("STARLING_AUTH__OPERATOR_TOKEN", OPERATOR.into()),
        ("STARLING_AUTH__KEY_HASH_SECRET", KEY_HASH.into()),
        ("STARLING_AUTH__SEALING_KEY", SEALING_KEY.into()),
        ("STARLING_TELEMETRY__LOG_FORMAT", "json".into()),
        ("STARLING_TELEMETRY__LOG_FILTER", "info".into()),
        ("STARLING_TELEMETRY__SERVICE_NAME", "starling-test".into()),
        // Nothing listens there: export fails quietly, the process runs on.
        (
            "STARLING_TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        // A Kubernetes pod name, as the module's fieldRef gives it.
        (
            "STARLING_GATEWAY__NODE_ID",
            "starling-gateway-5d8f7c9b6-x2x7q".into(),
        ),
        ("STARLING_GATEWAY__HEARTBEAT_SECS", "25".into()),
        ("STARLING_GATEWAY__REGISTRY_TTL_SECS", "30".into()),
        ("STARLING_GATEWAY__MAX_CONNECTIONS_PER_USER", "10".into()),
        ("STARLING_GATEWAY__MAX_FRAME_BYTES", "65536".into()),
        ("STARLING_GATEWAY__OUTBOUND_QUEUE", "256".into()),
        ("STARLING_GATEWAY__WRITE_DELAY_MS", "0".into()),
        // The cell's identities (the modules take them from variables and a Secret).
        (
            "STARLING_GATEWAY__CLUSTER_ID",
            "cls_01jdq3v9k6b2c8x4m7n5p0r1st".into(),
        ),
        (
            "STARLING_GATEWAY__CELL_CREDENTIAL",
            starling_core::internal_auth::generate_cell_credential().credential,
        ),
        (
            "STARLING_GATEWAY__CONFIG_KEYS",
            format!("[\"{}\"]", config_key.to_text()),
        ),
        // The internal API on a port of its own, as the cell module's ClusterIP Service expects.
        (
            "STARLING_SERVER__INTERNAL_LISTEN",
            format!("0.0.0.0:{}", free_port()),
        ),
    ] {
        samples.insert(k, v);
    }

    // Every interface, as in the image; the probe goes to loopback.
    // CloudNativePG's app secret holds a postgresql:// URL.
    samples.insert(
        "STARLING_DATABASE__URL",
        env("TEST_DATABASE_URL").replacen("postgres://", "postgresql://", 1),
    );
    // `migrate` listens nowhere: the ports are picked right before each server binds them.
    samples.insert("STARLING_SERVER__LISTEN", "0.0.0.0:7400".into());
    samples.insert(
        "STARLING_GATEWAY__CONTROL_PLANE_URL",
        "http://127.0.0.1:7400".into(),
    );
    let cp_dir = tempfile::tempdir().unwrap();
    let mut m = spawn(
        &["migrate"],
        &image_env("control-plane", &samples),
        cp_dir.path(),
    );
    assert!(m.wait(START).unwrap().success(), "{:?}", m.stderr());
    let (mut cp, cp_port, cp_env) = spawn_on_free_port("control-plane", cp_dir.path(), |port| {
        samples.insert("STARLING_SERVER__LISTEN", format!("0.0.0.0:{port}"));
        image_env("control-plane", &samples)
    })
    .await;
    let cp_base = format!("http://127.0.0.1:{cp_port}");
    samples.insert("STARLING_GATEWAY__CONTROL_PLANE_URL", cp_base.clone());
    let (ok, out) = healthcheck(&[], &cp_env);
    assert!(ok, "healthcheck of the control plane: {out}");
    assert!(
        out.contains(&format!("127.0.0.1:{cp_port}/readyz")),
        "{out}"
    );

    // The operator registers the cell; its nodes are started with its id (as the cell module's
    // cluster_id variable gives it).
    let (st, cl) = call(
        Method::POST,
        &format!("{cp_base}/admin/v1/clusters"),
        OPERATOR,
        Some(json!({
            "name": format!("image-{}", ulid::Ulid::new().to_string().to_lowercase()),
            "region": "local",
            "capacity_apps": 10,
            // The module's config_keys: app configuration reaches the node sealed to them.
            "config_public_key": config_key.public_key().to_text(),
        })),
    )
    .await;
    assert_eq!(st, 201, "{cl}");
    let cluster_id = cl["id"].as_str().unwrap().to_owned();
    samples.insert("STARLING_GATEWAY__CLUSTER_ID", cluster_id.clone());
    // And issues the cell's credential, which the node shows the control plane's internal
    // routes (webhook endpoints below).
    let (st, cred) = call(
        Method::POST,
        &format!("{cp_base}/admin/v1/clusters/{cluster_id}/credentials"),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(st, 201, "{cred}");
    samples.insert(
        "STARLING_GATEWAY__CELL_CREDENTIAL",
        cred["secret"].as_str().unwrap().to_owned(),
    );
    let node_dir = tempfile::tempdir().unwrap();
    let (mut node, node_port, node_env) =
        spawn_on_free_port("data-plane", node_dir.path(), |port| {
            samples.insert("STARLING_SERVER__LISTEN", format!("0.0.0.0:{port}"));
            image_env("data-plane-cell", &samples)
        })
        .await;
    assert!(
        node_env
            .iter()
            .any(|(k, _)| k == "STARLING_GATEWAY__NODE_ID"),
        "the cell module gives each node its own id"
    );
    let node_base = format!("http://127.0.0.1:{node_port}");
    let (ok, out) = healthcheck(&["--path", "/healthz"], &node_env);
    assert!(ok, "healthcheck of the node: {out}");
    let ready: Value = reqwest::get(format!("{node_base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["node_id"], "starling-gateway-5d8f7c9b6-x2x7q");
    // JSON logs, as the image asks for.
    let logs = node.stderr();
    assert!(
        logs.iter()
            .any(|l| l.starts_with('{') && l.contains("listening")),
        "the node logs JSON: {logs:?}"
    );

    // Both were told the admin API: the cell's feed topic has its policies.
    assert_feed_policies(
        &format!("{prefix}app-config-{}", cluster_id.to_lowercase()),
        2_097_152,
    )
    .await;

    // The two work together: the control plane's key reaches the node over Pulsar.
    let (st, t) = call(
        Method::POST,
        &format!("{cp_base}/admin/v1/tenants"),
        OPERATOR,
        Some(json!({"name": "Image test"})),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let t = t["id"].as_str().unwrap();
    let (st, a) = call(
        Method::POST,
        &format!("{cp_base}/admin/v1/tenants/{t}/apps"),
        OPERATOR,
        Some(json!({"name": "Chat", "cluster_id": cl["id"]})),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    let a = a["id"].as_str().unwrap();
    let (st, k) = call(
        Method::POST,
        &format!("{cp_base}/admin/v1/tenants/{t}/apps/{a}/api-keys"),
        OPERATOR,
        Some(json!({"name": "backend"})),
    )
    .await;
    assert_eq!(st, 201, "{k}");
    let key = k["secret"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (st, _) = call(Method::GET, &format!("{node_base}/v1/users"), key, None).await;
        if st == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key made on the control plane is not accepted by the node (status {st})\n{}",
            node.stderr().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The node manages webhook endpoints through the control plane it was given.
    let (st, ep) = call(
        Method::POST,
        &format!("{node_base}/v1/webhooks/endpoints"),
        key,
        Some(json!({"url": "https://example.com/hooks"})),
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let (st, got) = call(
        Method::GET,
        &format!(
            "{cp_base}/admin/v1/tenants/{t}/apps/{a}/webhook-endpoints/{}",
            ep["id"].as_str().unwrap()
        ),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(
        (st, got["url"].as_str()),
        (200, Some("https://example.com/hooks")),
        "{got}"
    );

    // The probe fails where it should: an unknown path, and a port where nothing listens.
    let (ok, out) = healthcheck(&["--path", "/nope"], &node_env);
    assert!(!ok && out.contains("404"), "{out}");
    let (ok, out) = healthcheck(&["--port", &free_port().to_string()], &node_env);
    assert!(!ok && out.contains("connecting"), "{out}");
    let (ok, out) = healthcheck(&["--path", "readyz"], &node_env);
    assert!(!ok && out.contains("--path"), "{out}");

    // SIGTERM (what Kubernetes sends) stops both cleanly; they wrote nothing to their cwd.
    assert!(node.terminate(Duration::from_secs(20)).unwrap().success());
    assert!(cp.terminate(Duration::from_secs(20)).unwrap().success());
    for d in [&cp_dir, &node_dir] {
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "the process wrote files: {left:?}");
    }
}

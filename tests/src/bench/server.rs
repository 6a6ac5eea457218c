//! The server under test: a `starling standalone` child process (temp data dir, free loopback
//! port, operator token read from its stdout, stopped with SIGINT), a cell of child processes
//! (`starling control-plane` and N `starling data-plane` nodes on given PostgreSQL, Redis and
//! Pulsar), or a running server on loopback. Plus the admin and server API calls that prepare a benchmark: a tenant, an app with
//! raised quotas, an API key, users, direct conversations and user tokens.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Quota overrides for the benchmark app, so the default plan's limits (100 connections,
/// 10 requests per second, …) do not throttle the benchmark.
pub fn bench_quotas() -> Value {
    json!({
        "concurrent_connections": 1_000_000,
        "api_requests_per_second": 1_000_000,
        "monthly_active_users": 1_000_000,
        "messages_per_month": 1_000_000_000u64,
    })
}

/// Builds the `starling` binary in release mode with the cargo and target dir of this build
/// (`CARGO`, `CARGO_TARGET_DIR`), the way `starling_e2e::starling_bin` builds the debug one.
pub fn build_release_starling() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?
        .to_owned();
    eprintln!("building starling (release) in {} …", root.display());
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "starling",
            "--bin",
            "starling",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build of the starling binary failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "starling")
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
        .context("cargo reported no starling executable")
}

/// What the server printed on stderr: its last lines and how many were warnings or errors.
#[derive(Debug, Default)]
pub struct ServerLog {
    /// The last 50 lines.
    pub tail: VecDeque<String>,
    /// Lines with `WARN`.
    pub warnings: u64,
    /// Lines with `ERROR` or a panic.
    pub errors: u64,
    /// The first and the last warning or error lines (at most 3 and 5), so a run says what
    /// went wrong (the first are often start-up noise).
    pub first_problems: Vec<String>,
    pub last_problems: VecDeque<String>,
}

/// The server under test.
pub struct Server {
    /// The admin API, `http://127.0.0.1:port`: standalone, or the cell's control plane.
    pub base: String,
    /// The server API (`/v1`): standalone, or the cell's first node.
    pub api_base: String,
    /// Every gateway's `ws://127.0.0.1:port`: one for standalone, one per node of a cell.
    pub gateways: Vec<String>,
    /// The operator token of the admin API.
    pub operator_token: String,
    /// The server's process ids, when known (for RSS and CPU samples): standalone, or every
    /// process of a cell (control plane and nodes; not PostgreSQL, Redis or Pulsar).
    pub pids: Vec<u32>,
    /// The binary, when these are child processes.
    pub bin: Option<PathBuf>,
    /// For a cell: how many data-plane nodes it has.
    pub cell_nodes: Option<usize>,
    /// The cluster id the spawned cell's nodes serve (apps are placed on it).
    pub cell_cluster: Option<String>,
    children: Vec<Child>,
    log: Arc<Mutex<ServerLog>>,
    _dir: Option<tempfile::TempDir>,
}

/// Where a cell's processes find their services (each on loopback).
#[derive(Debug, Clone)]
pub struct CellServices {
    /// `postgres://…`
    pub database_url: String,
    /// `redis://…`
    pub redis_url: String,
    /// `pulsar+ssl://…` (or `pulsar://…`)
    pub pulsar_url: String,
    /// The token the processes show the broker (`STARLING_PULSAR__TOKEN`), if it wants one.
    pub pulsar_token: Option<String>,
    /// The CA of the broker's TLS certificate (`STARLING_PULSAR__TLS_CA_FILE`).
    pub pulsar_ca_file: Option<String>,
    /// The broker's admin REST API (`STARLING_PULSAR__ADMIN_URL`): with it, the control plane
    /// and the nodes provision the platform's and the cell's namespaces. Without it they must
    /// exist already.
    pub pulsar_admin_url: Option<String>,
}

/// Fails unless `url` points at loopback (127.0.0.0/8, ::1, localhost). `what` names the option.
fn is_loopback(what: &str, url: &str, schemes: &[&str]) -> anyhow::Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("{what} {url:?} is not a URL"))?;
    if !schemes.contains(&u.scheme()) {
        bail!(
            "{what} must be {}… (got {})",
            schemes.join("… or "),
            u.scheme()
        );
    }
    let host = u.host_str().unwrap_or("");
    let ok = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("{what} must be a loopback address (127.0.0.0/8, ::1, localhost), got {host:?}");
    }
    Ok(())
}

/// Starts one child process with `env` on top of a clean environment (no `STARLING_*` or
/// `RUST_LOG` of this shell). Its stdout lines go to the returned channel (drain it), its
/// stderr lines to `log`, prefixed with `tag` when there is one.
fn spawn_child(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
    dir: &Path,
    log: &Arc<Mutex<ServerLog>>,
    tag: &str,
) -> anyhow::Result<(Child, mpsc::Receiver<String>)> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("STARLING_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} {}", bin.display(), args.join(" ")))?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("child stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().context("child stderr")?;
    let log = log.clone();
    let tag = if tag.is_empty() {
        String::new()
    } else {
        format!("[{tag}] ")
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
            let warning = line.contains("WARN");
            let error = line.contains("ERROR") || line.contains("panicked");
            l.warnings += u64::from(warning);
            l.errors += u64::from(error);
            if (warning || error) && l.first_problems.len() < 3 {
                l.first_problems.push(format!("{tag}{line}"));
            } else if warning || error {
                l.last_problems.push_back(format!("{tag}{line}"));
                if l.last_problems.len() > 5 {
                    l.last_problems.pop_front();
                }
            }
            l.tail.push_back(format!("{tag}{line}"));
            if l.tail.len() > 50 {
                l.tail.pop_front();
            }
        }
    });
    Ok((child, rx))
}

/// A throw-away secret for one run: the clock and the pid, unique enough for a benchmark's
/// tokens, which never leave loopback.
fn run_secret(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}{nanos:032x}{:08x}", std::process::id())
}

impl Server {
    /// Starts `starling standalone` on a temp data dir and a free 127.0.0.1 port, and waits
    /// until it prints its operator token and answers `/healthz`.
    pub async fn spawn(bin: &Path, env: &[(String, String)]) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("starling-bench-")
            .tempdir()
            .context("creating a temp dir")?;
        let listen = format!("127.0.0.1:{}", starling_e2e::free_port());
        let data = dir.path().join("data");
        let data = data.to_str().context("the temp dir's path is not UTF-8")?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let (child, rx) = spawn_child(
            bin,
            &["standalone", "--data-dir", data, "--listen", &listen],
            env,
            dir.path(),
            &log,
            "",
        )?;
        let mut server = Server {
            base: format!("http://{listen}"),
            api_base: format!("http://{listen}"),
            gateways: vec![format!("ws://{listen}")],
            operator_token: String::new(),
            pids: vec![child.id()],
            bin: Some(bin.to_owned()),
            cell_nodes: None,
            cell_cluster: None,
            children: vec![child],
            log,
            _dir: Some(dir),
        };
        // Wait for the banner on a blocking thread; it carries the operator token.
        let (token, rx) = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut token = None;
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) => {
                        if token.is_none() {
                            token = line
                                .split_whitespace()
                                .find(|w| w.starts_with("sop_"))
                                .map(str::to_owned);
                        }
                        if line.contains("Press Ctrl-C") {
                            return (token, rx);
                        }
                    }
                    Err(_) => return (None, rx),
                }
            }
        })
        .await?;
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        server.operator_token = match token {
            Some(t) => t,
            None => bail!(
                "starling did not print its banner and operator token within 60 s; stderr:\n{}",
                server.log_tail()
            ),
        };
        starling_e2e::wait_healthy(&format!("{}/healthz", server.base), Duration::from_secs(30))
            .await?;
        Ok(server)
    }

    /// A server already running on loopback.
    pub async fn attach(url: &str, token: &str, pid: Option<u32>) -> anyhow::Result<Server> {
        is_loopback("--url", url, &["http"])?;
        let base = url.trim_end_matches('/').to_owned();
        starling_e2e::wait_healthy(&format!("{base}/healthz"), Duration::from_secs(10)).await?;
        Ok(Server {
            gateways: vec![base.replacen("http://", "ws://", 1)],
            api_base: base.clone(),
            base,
            operator_token: token.to_owned(),
            pids: pid.into_iter().collect(),
            bin: None,
            cell_nodes: None,
            cell_cluster: None,
            children: Vec::new(),
            log: Arc::default(),
            _dir: None,
        })
    }

    /// Starts a cell: `starling control-plane` and `nodes` × `starling data-plane`, each on a
    /// free loopback port, all on the PostgreSQL, Redis and Pulsar of `services` (topics under a
    /// prefix of this run's own), and waits until every process is ready.
    pub async fn spawn_cell(
        bin: &Path,
        nodes: usize,
        services: &CellServices,
        env: &[(String, String)],
    ) -> anyhow::Result<Server> {
        is_loopback(
            "--database-url",
            &services.database_url,
            &["postgres", "postgresql"],
        )?;
        is_loopback("--redis-url", &services.redis_url, &["redis"])?;
        is_loopback(
            "--pulsar-url",
            &services.pulsar_url,
            &["pulsar", "pulsar+ssl"],
        )?;
        let dir = tempfile::Builder::new()
            .prefix("starling-bench-cell-")
            .tempdir()
            .context("creating a temp dir")?;
        let operator_token = run_secret("sop_bench");
        let run = run_secret("");
        let key_hash_secret = run_secret("bench-key-hash-");
        // `kid:` and 32 bytes in unpadded base64: 42 characters of this run's hex (each a base64
        // digit) and an `A`, whose low bits are zero as the last digit of 32 bytes must be.
        let sealing_key = format!(
            "bench:{}A",
            &format!("{}{}", run_secret(""), run_secret(""))[..42]
        );
        let common = |listen: &str| {
            let mut e: Vec<(String, String)> = [
                ("STARLING_DATABASE__URL", services.database_url.as_str()),
                ("STARLING_CACHE__REDIS_URL", services.redis_url.as_str()),
                ("STARLING_PULSAR__URL", services.pulsar_url.as_str()),
                (
                    "STARLING_PULSAR__TOPIC_PREFIX",
                    &format!("persistent://public/default/bench-{}-", &run[..16]),
                ),
                ("STARLING_AUTH__OPERATOR_TOKEN", operator_token.as_str()),
                ("STARLING_AUTH__KEY_HASH_SECRET", key_hash_secret.as_str()),
                ("STARLING_SERVER__LISTEN", listen),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let pulsar_auth = [
                ("STARLING_PULSAR__TOKEN", &services.pulsar_token),
                ("STARLING_PULSAR__TLS_CA_FILE", &services.pulsar_ca_file),
                ("STARLING_PULSAR__ADMIN_URL", &services.pulsar_admin_url),
            ];
            for (k, v) in pulsar_auth {
                if let Some(v) = v {
                    e.push((k.to_owned(), v.clone()));
                }
            }
            e.extend(env.iter().cloned());
            e
        };
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let mut server = Server {
            base: String::new(),
            api_base: String::new(),
            gateways: Vec::new(),
            operator_token: operator_token.clone(),
            pids: Vec::new(),
            bin: Some(bin.to_owned()),
            cell_nodes: Some(nodes),
            cell_cluster: None,
            children: Vec::new(),
            log,
            _dir: None,
        };
        let (signing_key, public_key) = starling_e2e::keygen(bin)?;
        let mut start =
            |args: &[&str], tag: &str, extra: Vec<(String, String)>| -> anyhow::Result<String> {
                let listen = format!("127.0.0.1:{}", starling_e2e::free_port());
                let mut env = common(&listen);
                env.extend(extra);
                let (child, rx) = spawn_child(bin, args, &env, dir.path(), &server.log, tag)?;
                std::thread::spawn(move || for _ in rx {});
                server.pids.push(child.id());
                server.children.push(child);
                Ok(listen)
            };
        // Only the control plane holds the signing and sealing keys.
        let cp = start(
            &["control-plane"],
            "control-plane",
            vec![
                (
                    "STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY".into(),
                    signing_key,
                ),
                ("STARLING_AUTH__SEALING_KEY".into(), sealing_key.clone()),
            ],
        )?;
        // The operator registers the cell before its nodes start: they serve that cluster id.
        starling_e2e::wait_healthy(&format!("http://{cp}/readyz"), Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("control plane {cp} not ready: {e}"))?;
        let cluster = call(
            &reqwest::Client::new(),
            Method::POST,
            format!("http://{cp}/admin/v1/clusters"),
            &operator_token,
            Some(json!({
                // The run's nanoseconds and pid: unique on the database the cell shares.
                "name": format!("bench-{}", &run[run.len() - 24..]),
                "region": "local",
                "capacity_apps": 1000,
            })),
        )
        .await?;
        let cluster_id = cluster["id"].as_str().context("cluster id")?.to_owned();
        let node_addrs = (0..nodes)
            .map(|i| {
                let id = format!("bench-node-{i}");
                start(
                    &["data-plane", "--node-id", &id],
                    &id,
                    vec![
                        ("STARLING_GATEWAY__CLUSTER_ID".into(), cluster_id.clone()),
                        // Each node's internal API on a port of its own.
                        (
                            "STARLING_SERVER__INTERNAL_LISTEN".into(),
                            format!("127.0.0.1:{}", starling_e2e::free_port()),
                        ),
                        (
                            "STARLING_AUTH__CONTROL_PLANE_PUBLIC_KEYS".into(),
                            format!("[\"{public_key}\"]"),
                        ),
                    ],
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        server.cell_cluster = Some(cluster_id);
        server.base = format!("http://{cp}");
        server.api_base = format!("http://{}", node_addrs[0]);
        server.gateways = node_addrs.iter().map(|a| format!("ws://{a}")).collect();
        server._dir = Some(dir);
        for base in std::iter::once(&cp).chain(&node_addrs) {
            if let Err(e) = starling_e2e::wait_healthy(
                &format!("http://{base}/readyz"),
                Duration::from_secs(60),
            )
            .await
            {
                bail!("{base} not ready: {e}; stderr:\n{}", server.log_tail());
            }
        }
        Ok(server)
    }

    /// The server's last stderr lines.
    pub fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        l.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// How many stderr lines were warnings and errors, and the first and last of them.
    pub fn log_counts(&self) -> (u64, u64, Vec<String>) {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = l.first_problems.clone();
        lines.extend(l.last_problems.iter().cloned());
        (l.warnings, l.errors, lines)
    }

    /// Stops the child processes (nodes first, the control plane last): SIGINT, up to 15 s for
    /// a graceful exit, then SIGKILL. Says how it went. An attached server is left running.
    pub async fn stop(&mut self) -> String {
        if self.children.is_empty() {
            return "attached server left running".into();
        }
        let mut outcomes = Vec::new();
        while let Some(mut child) = self.children.pop() {
            let sent = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut outcome = None;
            while sent && outcome.is_none() && Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(st)) => outcome = Some(format!("exited after SIGINT ({st})")),
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => outcome = Some(format!("waiting for the child failed: {e}")),
                }
            }
            outcomes.push(outcome.unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                "did not exit within 15 s of SIGINT: killed".into()
            }));
        }
        outcomes.dedup();
        outcomes.join("; ")
    }

    /// Creates a tenant, an app with [`bench_quotas`] and a `server_full` API key, and waits
    /// until the data plane accepts the key.
    pub async fn create_app(&self, label: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()?;
        let admin = |method: Method, path: String, body: Value| {
            call(
                &http,
                method,
                format!("{}{path}", self.base),
                &self.operator_token,
                Some(body),
            )
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let t = admin(
            Method::POST,
            "/admin/v1/tenants".into(),
            json!({"name": format!("starling-bench {label} {stamp}")}),
        )
        .await?;
        let t = t["id"].as_str().context("tenant id")?.to_owned();
        let mut app = json!({"name": "bench", "environment": "production"});
        if let Some(cluster) = &self.cell_cluster {
            // A distributed control plane places apps on registered cells: on this one.
            app["cluster_id"] = json!(cluster);
        }
        let a = admin(Method::POST, format!("/admin/v1/tenants/{t}/apps"), app).await?;
        let a = a["id"].as_str().context("app id")?.to_owned();
        admin(
            Method::PATCH,
            format!("/admin/v1/tenants/{t}/apps/{a}/quotas"),
            bench_quotas(),
        )
        .await?;
        let k = admin(
            Method::POST,
            format!("/admin/v1/tenants/{t}/apps/{a}/api-keys"),
            json!({"name": "starling-bench", "scopes": ["server_full"]}),
        )
        .await?;
        let key = k["secret"].as_str().context("api key secret")?.to_owned();
        let api = Api {
            http,
            base: self.api_base.clone(),
            key,
            tenant_id: t,
            app_id: a,
        };
        // The key reaches every node through the config feed: wait for it.
        let nodes: Vec<String> = self
            .gateways
            .iter()
            .map(|g| g.replacen("ws://", "http://", 1))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in nodes {
            loop {
                let r = api
                    .http
                    .get(format!("{node}/v1/users?limit=1"))
                    .bearer_auth(&api.key)
                    .send()
                    .await?;
                if r.status().is_success() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{node} did not accept the new API key within 10 s: {}",
                        r.status()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(api)
    }

    /// The gateway for connection `i`: connections are spread over a cell's nodes round-robin.
    pub fn gateway(&self, i: usize) -> &str {
        &self.gateways[i % self.gateways.len()]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One JSON call; retries 429 (after `Retry-After`) and fails on any other non-2xx.
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    for _ in 0..50 {
        let mut req = http.request(method.clone(), &url).bearer_auth(token);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 10))).await;
            continue;
        }
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url} → {status}: {text}");
        }
        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    bail!("{method} {url}: still 429 after 50 tries")
}

/// The server API of the benchmark app.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    /// The tenant.
    pub tenant_id: String,
    /// The app.
    pub app_id: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        call(
            &self.http,
            method,
            format!("{}{path}", self.base),
            &self.key,
            Some(body),
        )
        .await
    }

    /// Creates (or updates) a user.
    pub async fn put_user(&self, id: &str) -> anyhow::Result<()> {
        self.call(Method::PUT, &format!("/v1/users/{id}"), json!({"name": id}))
            .await?;
        Ok(())
    }

    /// Mints a user token (valid for an hour, longer than any benchmark may run).
    pub async fn token(&self, id: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                Method::POST,
                &format!("/v1/users/{id}/tokens"),
                json!({"expires_in_seconds": 3600}),
            )
            .await?;
        Ok(v["token"].as_str().context("token")?.to_owned())
    }

    /// A broadcast room owned by `creator`, with `members` in it.
    pub async fn room(&self, creator: &str, members: &[String]) -> anyhow::Result<String> {
        let v = self
            .call(
                Method::POST,
                "/v1/conversations",
                json!({"kind": "room", "created_by": creator, "members": members, "name": "bench room"}),
            )
            .await?;
        Ok(v["id"].as_str().context("conversation id")?.to_owned())
    }

    /// A group conversation owned by `creator`, with `members` (the creator among them).
    pub async fn group(&self, creator: &str, members: &[String]) -> anyhow::Result<String> {
        let v = self
            .call(
                Method::POST,
                "/v1/conversations",
                json!({"kind": "group", "created_by": creator, "members": members, "name": "bench group"}),
            )
            .await?;
        Ok(v["id"].as_str().context("conversation id")?.to_owned())
    }

    /// Posts a system message (no sender) and returns its seq.
    pub async fn post_message(
        &self,
        cid: &str,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<u64> {
        let v = self
            .call(
                Method::POST,
                &format!("/v1/conversations/{cid}/messages"),
                json!({"client_msg_id": client_msg_id, "text": text}),
            )
            .await?;
        v["message"]["seq"].as_u64().context("message seq")
    }

    /// The direct conversation of two users.
    pub async fn direct(&self, a: &str, b: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                Method::POST,
                "/v1/conversations",
                json!({"kind": "direct", "members": [a, b]}),
            )
            .await?;
        Ok(v["id"].as_str().context("conversation id")?.to_owned())
    }
}

/// Runs `f` over `items` with at most `concurrency` at once; results in the items' order.
pub async fn bulk<T, R, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    futures::stream::iter(items)
        .map(f)
        .buffered(concurrency)
        .try_collect()
        .await
}

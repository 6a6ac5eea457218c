//! The server under test: a `starling standalone` child process (temp data dir, free loopback
//! port, operator token read from its stdout, stopped with SIGINT), or a running server on
//! loopback. Plus the admin and server API calls that prepare a benchmark: a tenant, an app with
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
}

/// The server under test.
pub struct Server {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// `ws://127.0.0.1:port`.
    pub ws_base: String,
    /// The operator token of the admin API.
    pub operator_token: String,
    /// The server's process id, when known (for RSS and CPU samples).
    pub pid: Option<u32>,
    /// The binary, when this is a child process.
    pub bin: Option<PathBuf>,
    child: Option<Child>,
    log: Arc<Mutex<ServerLog>>,
    _dir: Option<tempfile::TempDir>,
}

fn is_loopback(url: &str) -> anyhow::Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    if u.scheme() != "http" {
        bail!("--url must be http://… (got {})", u.scheme());
    }
    let host = u.host_str().unwrap_or("");
    let ok = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("--url must be a loopback address (127.0.0.0/8, ::1, localhost), got {host:?}");
    }
    Ok(())
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
        let mut cmd = Command::new(bin);
        cmd.arg("standalone")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &listen])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The child runs on its defaults plus what --server-env says, not on this shell's config.
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
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().context("child stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let stderr = child.stderr.take().context("child stderr")?;
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap_or_else(|p| p.into_inner());
                if line.contains("WARN") {
                    l.warnings += 1;
                }
                if line.contains("ERROR") || line.contains("panicked") {
                    l.errors += 1;
                }
                l.tail.push_back(line);
                if l.tail.len() > 50 {
                    l.tail.pop_front();
                }
            }
        });
        let mut server = Server {
            base: format!("http://{listen}"),
            ws_base: format!("ws://{listen}"),
            operator_token: String::new(),
            pid: Some(pid),
            bin: Some(bin.to_owned()),
            child: Some(child),
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
        is_loopback(url)?;
        let base = url.trim_end_matches('/').to_owned();
        starling_e2e::wait_healthy(&format!("{base}/healthz"), Duration::from_secs(10)).await?;
        Ok(Server {
            ws_base: base.replacen("http://", "ws://", 1),
            base,
            operator_token: token.to_owned(),
            pid,
            bin: None,
            child: None,
            log: Arc::default(),
            _dir: None,
        })
    }

    /// The server's last stderr lines.
    pub fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        l.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// How many stderr lines were warnings and errors.
    pub fn log_counts(&self) -> (u64, u64) {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        (l.warnings, l.errors)
    }

    /// Stops a child server: SIGINT, up to 15 s for a graceful exit, then SIGKILL. Says how it
    /// went. An attached server is left running.
    pub async fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "attached server left running".into();
        };
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while sent && Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(st)) => return format!("exited after SIGINT ({st})"),
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return format!("waiting for the child failed: {e}"),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        "did not exit within 15 s of SIGINT: killed".into()
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
        let a = admin(
            Method::POST,
            format!("/admin/v1/tenants/{t}/apps"),
            json!({"name": "bench", "environment": "production"}),
        )
        .await?;
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
            base: self.base.clone(),
            key,
            tenant_id: t,
            app_id: a,
        };
        // The key reaches the data plane through the config feed: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = api
                .http
                .get(format!("{}/v1/users?limit=1", api.base))
                .bearer_auth(&api.key)
                .send()
                .await?;
            if r.status().is_success() {
                return Ok(api);
            }
            if Instant::now() > deadline {
                bail!(
                    "the data plane did not accept the new API key within 10 s: {}",
                    r.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
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

//! Support for black-box tests: build the `starling` binary, run it as a child process on a free
//! loopback port, wait for it, read what it prints, and stop it with a signal.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The path of the `starling` binary, built once per test process with the same cargo and
/// target dir as the tests (`STARLING_BIN` overrides).
pub fn starling_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STARLING_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        let out = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-q",
                "-p",
                "starling",
                "--bin",
                "starling",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build of the starling binary failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "starling")
            .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported the starling executable")
    })
    .clone()
}

/// A control-plane signing key pair from `bin keygen`: `(private, public)` in the text forms the
/// settings take (`auth.control_plane_signing_key`, one of `auth.control_plane_public_keys`).
pub fn keygen(bin: &Path) -> anyhow::Result<(String, String)> {
    let out = Command::new(bin)
        .arg("keygen")
        .output()
        .context("running starling keygen")?;
    if !out.status.success() {
        bail!(
            "starling keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| {
                v.trim_matches(|c| c == '"' || c == '[' || c == ']' || c == ' ')
                    .to_owned()
            })
            .with_context(|| format!("keygen printed no {prefix:?} line: {text}"))
    };
    Ok((
        value("control_plane_signing_key = ")?,
        value("control_plane_public_keys = ")?,
    ))
}

/// A free TCP port on 127.0.0.1 (free when asked; the child binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `starling` child process. Killed when dropped.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

fn pump(
    r: impl std::io::Read + Send + 'static,
    store: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            store.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

impl Proc {
    /// Starts `starling <args>` with extra environment variables, in `dir`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Proc {
        let mut cmd = Command::new(starling_bin());
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Keep the child's config to what the test says.
        for (k, _) in std::env::vars() {
            if k.starts_with("STARLING_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn starling");
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        pump(child.stderr.take().unwrap(), stderr.clone(), None);
        Proc {
            child,
            stdout,
            stderr,
            lines: rx,
        }
    }

    /// Waits until a stdout line contains `needle`; returns every stdout line so far.
    pub fn wait_for_line(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(self.stdout()),
                Ok(_) => {}
                Err(_) => bail!(
                    "no line with {needle:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout().join("\n"),
                    self.stderr().join("\n")
                ),
            }
        }
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Kills the process at once (SIGKILL, like `kill -9`): no shutdown, no flush.
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit.
    pub fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("-INT", timeout)
    }

    /// Sends SIGTERM (what Kubernetes and `docker stop` send) and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("-TERM", timeout)
    }

    fn signal(&mut self, sig: &str, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .context("run kill")?
            .success();
        if !ok {
            bail!("kill {sig} failed");
        }
        self.wait(timeout)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                // Let the pumps drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "still running after {timeout:?}; stderr:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers 200.
pub async fn wait_healthy(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not healthy within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones, to make a
/// service unreachable for some processes only (a network partition, a database outage).
pub struct Proxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    target: Arc<Mutex<std::net::SocketAddr>>,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let (up2, conns2, target2) = (up.clone(), conns.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let to = *target2.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            conns,
            target,
        }
    }

    /// Forwards new connections to `target` from now on (a service restarted elsewhere).
    pub fn set_target(&self, target: std::net::SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A handle that can restore the proxy from another task.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            up: self.up.clone(),
        }
    }
}

/// Restores a [`Proxy`] from elsewhere.
#[derive(Clone)]
pub struct ProxyHandle {
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl ProxyHandle {
    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Host and port of a URL such as `postgres://user@127.0.0.1:5432/db`.
pub fn url_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|x| x.1).unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .unwrap()
        .next()
        .unwrap()
}

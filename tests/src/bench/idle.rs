//! Scenario `idle`: how much server memory one idle WebSocket connection costs.
//!
//! Opens N authenticated connections at a bounded rate (at most `in_flight` handshakes at once),
//! each with small client buffers, and samples the server's RSS after setup (0 connections), at
//! 1,000 and at N connections (each after a settle pause), after holding them, and after closing
//! them. The cost per connection is the slope between 1,000 and N, which leaves out what the
//! first connections warm up (allocator arenas, maps growing, lazily built state).
//!
//! The connections are held by `--procs` worker processes ([`super::worker`]), connection `i`
//! by worker `i % procs` from its own source address, and go to gateway `i % gateways` (the
//! nodes of a cell). The server's RSS is the sum over its processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::net::IpAddr;

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client::{connect_hello, histogram_to_json, merge_histogram_json};
use super::server::{Server, bulk};
use super::stats::{self, CpuMeter, MachineCpu, histogram, mib, summary};
use super::worker::{Commands, Out, Pool, source_ip, sum};

/// Options of the idle scenario.
#[derive(Debug, Clone)]
pub struct IdleOpts {
    /// Connections to open.
    pub connections: usize,
    /// Connections per user (the gateway allows 10 per user by default).
    pub per_user: usize,
    /// New connections per second, at most.
    pub rate: u32,
    /// Handshakes in flight at once, at most.
    pub in_flight: usize,
    /// Pause before each RSS sample.
    pub settle: Duration,
    /// How long to hold all connections open before closing them.
    pub hold: Duration,
    /// Attempts again, after a pause, a handshake the server refused with 503 or 429 (what a
    /// real client does), at most this many times per connection.
    pub retries: u32,
}

/// The connection sample points: RSS is read when this many connections are open.
pub const FIRST_STEP: usize = 1000;

/// Small client buffers: the client side should not cost more than the server side.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
}

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Handshakes refused (503 or 429) and attempted again.
    retried: AtomicU64,
    handshake: Mutex<Option<Histogram<u64>>>,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn attempts(&self) -> u64 {
        self.opened.load(Relaxed) + self.failed.load(Relaxed)
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Relaxed);
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

/// Why a WebSocket connect failed, short enough to count by.
pub fn connect_error(e: &tokio_tungstenite::tungstenite::Error) -> String {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => format!("http {}", r.status()),
        e => {
            let s = e.to_string();
            s.chars().take(80).collect()
        }
    }
}

async fn hold_one(
    url: String,
    source: Option<IpAddr>,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
    retries: u32,
) {
    let mut attempt = 0;
    let mut pause = Duration::from_millis(250);
    let (connected, t0) = loop {
        let t0 = Instant::now();
        match connect_hello(&url, source).await {
            Err(why)
                if attempt < retries
                    && (why.starts_with("http 503") || why.starts_with("http 429")) =>
            {
                attempt += 1;
                tally.retried.fetch_add(1, Relaxed);
                // A little jitter from the clock, so refused clients do not come back together.
                let jitter = Duration::from_millis(u64::from(t0.elapsed().subsec_nanos() % 250));
                tokio::time::sleep(pause + jitter).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            r => break (r, t0),
        }
    };
    // The permit bounds handshakes in flight, not connections held.
    drop(permit);
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(why) => return tally.fail(why),
    };
    // The handshake that succeeded (refused attempts before it are counted in `retried`).
    let us = t0.elapsed().as_micros() as u64;
    if let Some(h) = tally
        .handshake
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        h.saturating_record(us);
    }
    tally.opened.fetch_add(1, Relaxed);
    // Idle: read (which answers the server's pings) until told to stop.
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    tally.dropped.fetch_add(1, Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
                return;
            }
        }
    }
}

/// The idle scenario's worker process: holds its share of the connections. Commands: `open`
/// (`upto`: open connections until this many were tried; answered by `opened` once each has an
/// outcome) and `close` (close them all; answered by `result`, with the handshake histogram).
pub async fn worker(job: &Value, mut cmds: Commands, out: Out) -> anyhow::Result<()> {
    let urls: Vec<String> = job["targets"]
        .as_array()
        .context("targets")?
        .iter()
        .filter_map(|t| t["url"].as_str().map(str::to_owned))
        .collect();
    let source: Option<IpAddr> = job["source"].as_str().map(str::parse).transpose()?;
    let rate = job["connect_rate"].as_f64().context("connect_rate")?;
    let in_flight = job["in_flight"].as_u64().context("in_flight")? as usize;
    let retries = job["retries"].as_u64().unwrap_or(0) as u32;
    if let Some(limit) = stats::open_files_limit()
        && (urls.len() as u64) + 64 > limit
    {
        bail!(
            "{} connections need more open files than a worker may have ({limit}): use more --procs",
            urls.len()
        );
    }
    let tally = Arc::new(Tally {
        handshake: Mutex::new(Some(histogram())),
        ..Default::default()
    });
    let progress = {
        let (tally, out) = (tally.clone(), out.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                out.emit(json!({
                    "event": "progress",
                    "opened": tally.opened.load(Relaxed),
                    "failed": tally.failed.load(Relaxed),
                    "retried": tally.retried.load(Relaxed),
                    "dropped": tally.dropped.load(Relaxed),
                }));
            }
        })
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(urls.len());
    while let Some(cmd) = cmds.next().await? {
        match cmd["cmd"].as_str() {
            Some("open") => {
                let target = (cmd["upto"].as_u64().context("upto")? as usize).min(urls.len());
                // A fresh schedule per step: ticks missed meanwhile must not come as a burst.
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                while tasks.len() < target {
                    tick.tick().await;
                    let permit = gate.clone().acquire_owned().await?;
                    let url = urls[tasks.len()].clone();
                    let (tally, stop) = (tally.clone(), stop_rx.clone());
                    tasks.push(tokio::spawn(hold_one(
                        url, source, tally, stop, permit, retries,
                    )));
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                while tally.attempts() < target as u64 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let failures = tally
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                out.emit(json!({
                    "event": "opened",
                    "opened": tally.opened.load(Relaxed),
                    "failed": tally.failed.load(Relaxed),
                    "failures": failures,
                    "rss_kib": stats::rss_kib(std::process::id()),
                }));
            }
            Some("close") => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    let dropped = tally.dropped.load(Relaxed);
    let _ = stop_tx.send(true);
    let close_deadline = Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let left = close_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            break;
        }
    }
    progress.abort();
    let handshake = tally
        .handshake
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(histogram);
    let failures = tally
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    out.emit(json!({
        "event": "result",
        "opened": tally.opened.load(Relaxed),
        "failed": tally.failed.load(Relaxed),
        "dropped": dropped,
        "retried": tally.retried.load(Relaxed),
        "failures": failures,
        "handshake": histogram_to_json(&handshake),
    }));
    Ok(())
}

/// How many of the first `target` connections (dealt round-robin) worker `w` of `procs` holds.
pub fn share(target: usize, procs: usize, w: usize) -> usize {
    target / procs + usize::from(w < target % procs)
}

/// Runs the idle scenario over `procs` worker processes and returns its results.
pub async fn run(server: &Server, o: &IdleOpts, procs: usize) -> anyhow::Result<Value> {
    let n = o.connections;
    let api = server.create_app("idle").await?;
    let users = n.div_ceil(o.per_user);
    let ids: Vec<String> = (0..users).map(|i| format!("idle-{i:06}")).collect();
    let t = Instant::now();
    eprintln!("setting up {users} users and tokens …");
    bulk(ids.clone(), 16, |id| {
        let api = &api;
        async move { api.put_user(&id).await }
    })
    .await?;
    let tokens = bulk(ids, 16, |id| {
        let api = &api;
        async move { api.token(&id).await }
    })
    .await?;
    eprintln!("set up in {:.1} s", t.elapsed().as_secs_f64());

    // Connection i goes to worker i % procs and to gateway i % gateways.
    let url = |i: usize| {
        format!(
            "{}/v1/connect?token={}",
            server.gateway(i),
            tokens[i / o.per_user]
        )
    };
    let mut jobs = Vec::with_capacity(procs);
    for w in 0..procs {
        let targets: Vec<Value> = (w..n)
            .step_by(procs)
            .map(|i| json!({"url": url(i)}))
            .collect();
        jobs.push(json!({
            "scenario": "idle",
            "source": source_ip(w)?.to_string(),
            "targets": targets,
            "connect_rate": f64::from(o.rate) / procs as f64,
            "in_flight": o.in_flight.div_ceil(procs),
            "retries": o.retries,
        }));
    }
    let mut pool = Pool::start(jobs).await?;
    eprintln!(
        "{procs} worker process(es), pids {:?}, source addresses 127.0.0.2 … 127.0.0.{}",
        pool.pids(),
        procs + 1
    );

    let pids = server.pids.clone();
    let rss = || stats::memory_kib_all(&pids);
    tokio::time::sleep(o.settle).await;
    let rss_0 = rss();

    let started = Instant::now();
    let mut cpu = CpuMeter::new(&pids);
    let mut print_progress = |p: &[Value]| {
        let s = |k: &str| p.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
        eprintln!(
            "[idle {:>4}s] open {:>6}/{n}  failed {}  retried {}  dropped {}  server rss {} MiB  cpu {}%",
            started.elapsed().as_secs(),
            s("opened"),
            s("failed"),
            s("retried"),
            s("dropped"),
            stats::rss_kib_all(&pids).map(mib).unwrap_or(f64::NAN),
            cpu.tick().unwrap_or(f64::NAN),
        );
    };

    let mut connect_time = Duration::ZERO;
    let mut machine_cpu = MachineCpu::new();
    let mut server_cpu = CpuMeter::new(&pids);
    let mut samples = Vec::new();
    let mut client_rss_at_n = None;
    let steps: Vec<usize> = if n > FIRST_STEP {
        vec![FIRST_STEP, n]
    } else {
        vec![n]
    };
    for target in steps {
        let t = Instant::now();
        for w in 0..procs {
            pool.send(w, &json!({"cmd": "open", "upto": share(target, procs, w)}))
                .await?;
        }
        // Opening at `rate` (or up to 4× slower when the server falls behind), plus 2 minutes.
        let limit = Duration::from_secs_f64(target as f64 / f64::from(o.rate) * 4.0 + 120.0);
        let opened = pool.gather("opened", limit, &mut print_progress).await?;
        connect_time += t.elapsed();
        client_rss_at_n = Some(sum(&opened, "rss_kib"));
        for (w, e) in opened.iter().enumerate() {
            if e["failed"].as_u64().unwrap_or(0) > 0 {
                eprintln!("worker {w}: failed handshakes by cause: {}", e["failures"]);
            }
        }
        tokio::time::sleep(o.settle).await;
        samples.push((target, sum(&opened, "opened"), rss()));
    }
    let opened = samples.last().map_or(0, |s| s.1);
    let (server_cpu_pct, machine_cpu_pct) = (server_cpu.tick(), machine_cpu.tick());
    eprintln!("holding {opened} connections for {} s …", o.hold.as_secs());
    pool.pump(o.hold, &mut print_progress).await?;
    let rss_hold = rss();
    pool.broadcast(&json!({"cmd": "close"})).await?;
    let results = pool
        .gather("result", Duration::from_secs(60), &mut print_progress)
        .await?;
    pool.finish().await;
    tokio::time::sleep(o.settle).await;
    let rss_closed = rss();

    let mut handshake = histogram();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        merge_histogram_json(&mut handshake, &r["handshake"]);
        for (k, v) in r["failures"].as_object().into_iter().flatten() {
            *failures.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    let dropped = sum(&results, "dropped");
    let failed = sum(&results, "failed");

    let mem_at = |k: usize| samples.iter().find(|s| s.0 == k).and_then(|s| s.2);
    let conns_at = |k: usize| samples.iter().find(|s| s.0 == k).map(|s| s.1);
    let per_conn = |a: u64, b: u64, conns: u64| {
        (conns > 0).then(|| ((b as f64 - a as f64) / conns as f64 * 100.0).round() / 100.0)
    };
    // KiB per connection between two samples, of VmRSS (`.0`) or RssAnon (`.1`).
    let slope = |which: fn((u64, u64)) -> u64| match (
        mem_at(FIRST_STEP),
        mem_at(n),
        conns_at(FIRST_STEP),
        conns_at(n),
    ) {
        (Some(a), Some(b), Some(ca), Some(cb)) if n > FIRST_STEP && cb > ca => {
            per_conn(which(a), which(b), cb - ca)
        }
        _ => None,
    };
    let from_zero = |which: fn((u64, u64)) -> u64| match (rss_0, mem_at(n)) {
        (Some(a), Some(b)) => per_conn(which(a), which(b), opened),
        _ => None,
    };
    let vm: fn((u64, u64)) -> u64 = |m| m.0;
    let anon: fn((u64, u64)) -> u64 = |m| m.1;
    let series = |which: fn((u64, u64)) -> u64| {
        json!({
            "connections_0": rss_0.map(which),
            "connections_1000": mem_at(FIRST_STEP).map(which),
            "connections_n": mem_at(n).map(which),
            "after_hold": rss_hold.map(which),
            "after_close": rss_closed.map(which),
        })
    };
    Ok(json!({
        "scenario": "idle",
        "tenant_id": api.tenant_id,
        "app_id": api.app_id,
        "params": {
            "connections": n,
            "connections_per_user": o.per_user,
            "connect_rate_limit_per_s": o.rate,
            "handshakes_in_flight": o.in_flight,
            "settle_s": o.settle.as_secs_f64(),
            "hold_s": o.hold.as_secs_f64(),
            "retries": o.retries,
            "client_processes": procs,
            "client_read_buffer_bytes": 4096,
            "client_write_buffer_bytes": 4096,
        },
        "opened": opened,
        "failed": failed,
        "failures": failures,
        // Handshakes refused with 503 or 429 and attempted again (`--retries`).
        "retried": sum(&results, "retried"),
        "dropped_while_held": dropped,
        "server_rss_kib": series(vm),
        "server_rss_anon_kib": series(anon),
        "kib_per_connection": slope(vm),
        "kib_per_connection_from_0": from_zero(vm),
        "anon_kib_per_connection": slope(anon),
        "connect_rate_per_s": (opened as f64 / connect_time.as_secs_f64() * 10.0).round() / 10.0,
        "handshake": summary(&handshake),
        // All worker processes together.
        "client_rss_kib_at_n": client_rss_at_n,
        // While connecting (settle pauses included), in percent of one core.
        "server_cpu_pct_connecting": server_cpu_pct,
        "machine_cpu_pct_connecting": machine_cpu_pct,
    }))
}

/// Prints the idle scenario's summary table.
pub fn print_summary(v: &Value) {
    let r = &v["server_rss_kib"];
    let h = &v["handshake"];
    let row = |k: &str, val: String| println!("  {k:<44} {val}");
    println!();
    println!("idle: {} connections", v["params"]["connections"]);
    row(
        "opened / failed / dropped",
        format!(
            "{} / {} / {}",
            v["opened"], v["failed"], v["dropped_while_held"]
        ),
    );
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        row("failures", v["failures"].to_string());
    }
    row(
        "handshakes refused (503/429) and retried",
        v["retried"].to_string(),
    );
    let kib = |x: &Value| {
        x.as_u64()
            .map(|k| format!("{} MiB", mib(k)))
            .unwrap_or("?".into())
    };
    row("server RSS at 0 connections", kib(&r["connections_0"]));
    row("server RSS at 1000", kib(&r["connections_1000"]));
    row("server RSS at N", kib(&r["connections_n"]));
    row("server RSS after hold", kib(&r["after_hold"]));
    row("server RSS after close", kib(&r["after_close"]));
    row(
        "KiB per connection (1000 → N)",
        v["kib_per_connection"].to_string(),
    );
    row(
        "KiB per connection (0 → N)",
        v["kib_per_connection_from_0"].to_string(),
    );
    row(
        "RssAnon KiB per connection (1000 → N)",
        v["anon_kib_per_connection"].to_string(),
    );
    row("connect rate (per s)", v["connect_rate_per_s"].to_string());
    row(
        "handshake connect→hello p50 / p99",
        format!("{} / {} ms", h["p50_ms"], h["p99_ms"]),
    );
    row("client RSS at N", kib(&v["client_rss_kib_at_n"]));
    row(
        "CPU server / machine while connecting (%)",
        format!(
            "{} / {}",
            v["server_cpu_pct_connecting"], v["machine_cpu_pct_connecting"]
        ),
    );
}

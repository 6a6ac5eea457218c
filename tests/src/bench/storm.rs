//! Scenario `storm`: a reconnect storm.
//!
//! N clients, in group conversations of G members each, connect (over the worker processes, see
//! [`super::worker`]) and follow their conversation. The parent then posts system messages at R
//! per second, round-robin over the conversations, through the server API. After `lead`
//! seconds every client drops its socket at once (TCP close, no close frame: a network loss) and
//! reconnects at its own moment spread evenly over the `window`; messages keep coming during the
//! storm. A client that is back does what a real client does: `sync` from the last seq it holds
//! (paging until `has_more` is false), then reads pushes again. Every client must end with every
//! seq of its conversation, by push or by sync: a seq missing after the drain is **lost**.
//!
//! Reported: time from the drop until every client is back (`hello`) and until every client has
//! synced; the reconnect handshake (connect → `hello`) percentiles; how many seqs each way (push,
//! recovered by sync, pushed again after a sync already had them), lost; server RSS before, at
//! its peak during the storm, and at the end; server CPU.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Ws, connect_hello, histogram_to_json, merge_histogram_json};
use super::server::{Server, bulk};
use super::stats::{self, CpuMeter, MachineCpu, histogram, mib, now_us, summary};
use super::worker::{Commands, Out, Pool, source_ip, sum};

/// Options of the storm scenario.
#[derive(Debug, Clone)]
pub struct StormOpts {
    /// Clients (one user and one socket each).
    pub clients: usize,
    /// Members per group conversation.
    pub group_size: usize,
    /// Clients reconnect spread over this window after all dropped at once.
    pub window: Duration,
    /// System messages per second, over all conversations, from `lead` before the storm until
    /// the end of the window.
    pub rate: f64,
    /// Sending before the storm starts.
    pub lead: Duration,
    /// After the last send, how long to wait at most for every client to hold every seq.
    pub drain: Duration,
    /// New connections per second, at most, when first connecting (all processes together).
    pub connect_rate: u32,
    /// Handshakes in flight at once when first connecting, at most (all processes together).
    pub in_flight: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one client holds of its conversation.
#[derive(Default)]
struct Held {
    /// Seqs held, one bit each.
    seen: Vec<u64>,
    /// Every seq 1..=contiguous is held.
    contiguous: u64,
    /// Seqs held (distinct).
    count: u64,
    /// Back after the storm and caught up by `sync`: from here on a missing seq is lost.
    synced: bool,
}

impl Held {
    /// Marks `seq` held; false when it already was.
    fn add(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            return false;
        }
        self.seen[word] |= bit;
        self.count += 1;
        while self.has(self.contiguous + 1) {
            self.contiguous += 1;
        }
        true
    }

    fn has(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        word < self.seen.len() && self.seen[word] & (1u64 << (seq % 64)) != 0
    }

    /// How many of 1..=last are not held.
    fn missing_up_to(&self, last: u64) -> u64 {
        (1..=last).filter(|&s| !self.has(s)).count() as u64
    }
}

/// A worker's counters, summed over its clients.
#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    failed: AtomicU64,
    back: AtomicU64,
    not_back: AtomicU64,
    synced: AtomicU64,
    sync_failed: AtomicU64,
    /// Syncs refused with `unavailable` and sent again.
    sync_retries: AtomicU64,
    retries: AtomicU64,
    closed_early: AtomicU64,
    pushed: AtomicU64,
    via_sync: AtomicU64,
    pushed_again: AtomicU64,
    /// Microseconds from the drop to the last client's `hello` / completed sync.
    last_back_us: AtomicU64,
    last_synced_us: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    handshake: Hist,
    reconnect: Hist,
    sync_time: Hist,
    push_latency: Hist,
}

/// A latency histogram shared by a worker's clients.
struct Hist(Mutex<Histogram<u64>>);

impl Default for Hist {
    fn default() -> Hist {
        Hist(Mutex::new(histogram()))
    }
}

impl Hist {
    fn record(&self, us: u64) {
        lock(&self.0).saturating_record(us);
    }

    fn json(&self) -> Value {
        histogram_to_json(&lock(&self.0))
    }
}

impl Tally {
    fn fail(&self, why: String) {
        *lock(&self.failures).entry(why).or_default() += 1;
    }
}

/// One client's conversation, held seqs and sync request numbering.
struct Client {
    url: String,
    cid: String,
    source: Option<IpAddr>,
    held: Arc<Mutex<Held>>,
    tally: Arc<Tally>,
    requests: u64,
}

impl Client {
    /// Takes one frame: a push of our conversation's `message.new` is recorded. Returns the
    /// frame when it is something else (for [`Client::sync`] to look at).
    fn on_frame(&self, text: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(text).ok()?;
        if v["type"] != "message.new" {
            return Some(v);
        }
        let m = &v["message"];
        if m["conversation_id"].as_str() != Some(&self.cid) {
            return None;
        }
        if let Some(seq) = m["seq"].as_u64() {
            if lock(&self.held).add(seq) {
                self.tally.pushed.fetch_add(1, Relaxed);
                if let Some(sent) = m["text"].as_str().and_then(|t| t.parse::<u64>().ok()) {
                    self.tally
                        .push_latency
                        .record(now_us().saturating_sub(sent));
                }
            } else {
                self.tally.pushed_again.fetch_add(1, Relaxed);
            }
        }
        None
    }

    /// Catches up: `sync` from the last contiguous seq held, page after page, taking pushes that
    /// arrive meanwhile.
    async fn sync(&mut self, ws: &mut Ws) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut after = lock(&self.held).contiguous;
        let mut refusals = 0u64;
        loop {
            self.requests += 1;
            let id = format!("sync-{}", self.requests);
            let frame = json!({
                "type": "sync", "id": id, "conversation_id": self.cid,
                "after_seq": after, "limit": 200,
            });
            ws.send(Message::Text(frame.to_string().into()))
                .await
                .map_err(|e| format!("sync send: {e}"))?;
            let result = loop {
                let m = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .map_err(|_| "no sync reply within 60 s".to_owned())?;
                let t = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Err("closed during sync".into()),
                    Some(Err(e)) => return Err(format!("during sync: {e}")),
                    Some(Ok(_)) => continue,
                };
                let Some(mut v) = self.on_frame(t.as_str()) else {
                    continue;
                };
                if v["id"] != id.as_str() {
                    continue;
                }
                if v["type"] != "ack" {
                    if v["code"] != "unavailable" {
                        return Err(format!("sync refused: {}", v["code"]));
                    }
                    break Value::Null;
                }
                break v["result"].take();
            };
            if result.is_null() {
                // Refused: `unavailable` (the node's database is busy) is worth a retry, as a
                // real client would; anything else is a failure.
                refusals += 1;
                self.tally.sync_retries.fetch_add(1, Relaxed);
                if refusals > 8 {
                    return Err("sync refused 8 times".into());
                }
                tokio::time::sleep(Duration::from_millis(250 * refusals)).await;
                continue;
            }
            let mut held = lock(&self.held);
            for m in result["messages"].as_array().into_iter().flatten() {
                if let Some(seq) = m["seq"].as_u64() {
                    after = after.max(seq);
                    if held.add(seq) {
                        self.tally.via_sync.fetch_add(1, Relaxed);
                    }
                }
            }
            if result["has_more"] != true {
                return Ok(());
            }
        }
    }

    /// Reads pushes until the socket ends (false) or `until` fires (true).
    async fn read(&self, ws: &mut Ws, until: &mut watch::Receiver<bool>) -> bool {
        loop {
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => { self.on_frame(t.as_str()); }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                    Some(Ok(_)) => {}
                },
                r = until.changed() => return r.is_ok(),
            }
        }
    }
}

/// Where client `i` (of all) reconnects within the window: spread evenly in a shuffled order
/// (the golden-ratio sequence), so neighbours do not reconnect together.
fn offset(i: usize, window: Duration) -> Duration {
    let frac = (i as f64 * 0.618_033_988_749_895).fract();
    window.mul_f64(frac)
}

struct Storm {
    t0: Instant,
    window: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    mut c: Client,
    index: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    storm: Arc<Mutex<Option<Storm>>>,
    mut storm_rx: watch::Receiver<bool>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let t = Instant::now();
    let first = connect_hello(&c.url, c.source).await;
    drop(permit);
    let mut ws = match first {
        Ok(ws) => ws,
        Err(why) => {
            c.tally.failed.fetch_add(1, Relaxed);
            return c.tally.fail(why);
        }
    };
    c.tally.handshake.record(t.elapsed().as_micros() as u64);
    if let Err(why) = c.sync(&mut ws).await {
        c.tally.failed.fetch_add(1, Relaxed);
        return c.tally.fail(why);
    }
    c.tally.opened.fetch_add(1, Relaxed);
    if !c.read(&mut ws, &mut storm_rx).await {
        c.tally.closed_early.fetch_add(1, Relaxed);
        return;
    }
    // The storm: drop the socket (no close frame), come back at this client's moment.
    drop(ws);
    let (t0, window) = match &*lock(&storm) {
        Some(s) => (s.t0, s.window),
        None => return,
    };
    tokio::time::sleep_until((t0 + offset(index, window)).into()).await;
    let give_up = t0 + window + Duration::from_secs(60);
    let mut backoff = Duration::from_millis(100);
    let mut ws = loop {
        let t = Instant::now();
        match connect_hello(&c.url, c.source).await {
            Ok(ws) => {
                c.tally.reconnect.record(t.elapsed().as_micros() as u64);
                break ws;
            }
            Err(why) => {
                c.tally.fail(why);
                if Instant::now() > give_up {
                    c.tally.not_back.fetch_add(1, Relaxed);
                    return;
                }
                c.tally.retries.fetch_add(1, Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    c.tally
        .last_back_us
        .fetch_max(t0.elapsed().as_micros() as u64, Relaxed);
    c.tally.back.fetch_add(1, Relaxed);
    let t = Instant::now();
    match c.sync(&mut ws).await {
        Ok(()) => {
            c.tally.sync_time.record(t.elapsed().as_micros() as u64);
            c.tally
                .last_synced_us
                .fetch_max(t0.elapsed().as_micros() as u64, Relaxed);
            c.tally.synced.fetch_add(1, Relaxed);
            lock(&c.held).synced = true;
        }
        Err(why) => {
            c.tally.sync_failed.fetch_add(1, Relaxed);
            return c.tally.fail(why);
        }
    }
    if !c.read(&mut ws, &mut stop_rx).await {
        c.tally.closed_early.fetch_add(1, Relaxed);
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// The storm scenario's worker process. Commands: `open` (connect every client; answered by
/// `opened`), `storm` (drop all, reconnect over `window_ms`; answered by `back` once every client
/// is back and synced or has given up), `expect` (`last_seq` per conversation, `drain_ms`:
/// answered by `result` once every client holds every seq, or at the drain's end).
pub async fn worker(job: &Value, mut cmds: Commands, out: Out) -> anyhow::Result<()> {
    let targets = job["targets"].as_array().context("targets")?.clone();
    let source: Option<IpAddr> = job["source"].as_str().map(str::parse).transpose()?;
    let rate = job["connect_rate"].as_f64().context("connect_rate")?;
    let in_flight = job["in_flight"].as_u64().context("in_flight")? as usize;
    if let Some(limit) = stats::open_files_limit()
        && (targets.len() as u64) + 64 > limit
    {
        bail!(
            "{} connections need more open files than a worker may have ({limit}): use more --procs",
            targets.len()
        );
    }
    let tally = Arc::new(Tally::default());
    let progress = {
        let (t, out) = (tally.clone(), out.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                out.emit(json!({
                    "event": "progress",
                    "opened": t.opened.load(Relaxed),
                    "failed": t.failed.load(Relaxed),
                    "back": t.back.load(Relaxed),
                    "synced": t.synced.load(Relaxed),
                    "not_back": t.not_back.load(Relaxed),
                    "pushed": t.pushed.load(Relaxed),
                    "via_sync": t.via_sync.load(Relaxed),
                }));
            }
        })
    };
    let storm: Arc<Mutex<Option<Storm>>> = Arc::default();
    let (storm_tx, storm_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut held: Vec<(String, Arc<Mutex<Held>>)> = Vec::with_capacity(targets.len());
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(targets.len());
    let all_done = |t: &Tally, n: u64, f: &dyn Fn(&Tally) -> u64| {
        t.opened.load(Relaxed) + t.failed.load(Relaxed) >= n && f(t) >= t.opened.load(Relaxed)
    };
    while let Some(cmd) = cmds.next().await? {
        match cmd["cmd"].as_str() {
            Some("open") => {
                let gate = Arc::new(Semaphore::new(in_flight.max(1)));
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                for t in &targets {
                    tick.tick().await;
                    let permit = gate.clone().acquire_owned().await?;
                    let h = Arc::new(Mutex::new(Held::default()));
                    let cid = t["cid"].as_str().context("cid")?.to_owned();
                    held.push((cid.clone(), h.clone()));
                    let c = Client {
                        url: t["url"].as_str().context("url")?.to_owned(),
                        cid,
                        source,
                        held: h,
                        tally: tally.clone(),
                        requests: 0,
                    };
                    let index = t["index"].as_u64().context("index")? as usize;
                    tasks.push(tokio::spawn(run_client(
                        c,
                        index,
                        permit,
                        storm.clone(),
                        storm_rx.clone(),
                        stop_rx.clone(),
                    )));
                }
                let n = targets.len() as u64;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !all_done(&tally, n, &|_| u64::MAX) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                out.emit(json!({
                    "event": "opened",
                    "opened": tally.opened.load(Relaxed),
                    "failed": tally.failed.load(Relaxed),
                    "rss_kib": stats::rss_kib(std::process::id()),
                }));
            }
            Some("storm") => {
                let window = Duration::from_millis(cmd["window_ms"].as_u64().context("window_ms")?);
                *lock(&storm) = Some(Storm {
                    t0: Instant::now(),
                    window,
                });
                let _ = storm_tx.send(true);
                let n = targets.len() as u64;
                let deadline = Instant::now() + window + Duration::from_secs(120);
                let settled = |t: &Tally| {
                    t.synced.load(Relaxed)
                        + t.sync_failed.load(Relaxed)
                        + t.not_back.load(Relaxed)
                        + t.closed_early.load(Relaxed)
                };
                while !all_done(&tally, n, &settled) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let failures = lock(&tally.failures).clone();
                out.emit(json!({
                    "event": "back",
                    "back": tally.back.load(Relaxed),
                    "synced": tally.synced.load(Relaxed),
                    "not_back": tally.not_back.load(Relaxed),
                    "sync_failed": tally.sync_failed.load(Relaxed),
                    "sync_retries": tally.sync_retries.load(Relaxed),
                    "retries": tally.retries.load(Relaxed),
                    "last_back_us": tally.last_back_us.load(Relaxed),
                    "last_synced_us": tally.last_synced_us.load(Relaxed),
                    "failures": failures,
                    "reconnect": tally.reconnect.json(),
                    "sync_time": tally.sync_time.json(),
                }));
            }
            Some("expect") => {
                let last: HashMap<String, u64> = cmd["last_seq"]
                    .as_object()
                    .context("last_seq")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect();
                let drain = Duration::from_millis(cmd["drain_ms"].as_u64().unwrap_or(0));
                let deadline = Instant::now() + drain;
                let expected = |cid: &str| last.get(cid).copied().unwrap_or(0);
                // Clients that came back and synced must end with every seq.
                let complete = || {
                    held.iter().all(|(cid, h)| {
                        let h = lock(h);
                        !h.synced || h.contiguous >= expected(cid)
                    })
                };
                while !complete() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let (mut lost, mut incomplete, mut expected_total) = (0, 0, 0);
                let (mut unrecovered, mut unrecovered_clients) = (0, 0);
                for (cid, h) in &held {
                    let e = expected(cid);
                    expected_total += e;
                    let h = lock(h);
                    let missing = h.missing_up_to(e);
                    if h.synced {
                        lost += missing;
                        incomplete += u64::from(missing > 0);
                    } else {
                        // Never back, or its sync failed: what it misses is not lost by the
                        // server, it was never asked for.
                        unrecovered += missing;
                        unrecovered_clients += 1;
                    }
                }
                out.emit(json!({
                    "event": "result",
                    "expected": expected_total,
                    "lost": lost,
                    "clients_incomplete": incomplete,
                    "missing_not_back": unrecovered,
                    "clients_not_back": unrecovered_clients,
                    "pushed": tally.pushed.load(Relaxed),
                    "via_sync": tally.via_sync.load(Relaxed),
                    "pushed_again": tally.pushed_again.load(Relaxed),
                    "closed_early": tally.closed_early.load(Relaxed),
                    "handshake": tally.handshake.json(),
                    "push_latency": tally.push_latency.json(),
                }));
                break;
            }
            other => bail!("unknown command {other:?}"),
        }
    }
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            break;
        }
    }
    progress.abort();
    Ok(())
}

/// What the parent's sender did.
#[derive(Default)]
struct Sent {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    first_refusal: Mutex<Option<String>>,
    last_seq: Mutex<HashMap<String, u64>>,
}

/// Posts system messages at `rate` per second over `cids` (round-robin) for `duration`; each
/// text is its send time in µs.
async fn send_loop(
    api: Arc<super::server::Api>,
    cids: Arc<Vec<String>>,
    rate: f64,
    duration: Duration,
    s: Arc<Sent>,
) {
    let gate = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let end = tokio::time::Instant::now() + duration;
    let mut inflight = Vec::new();
    let mut k = 0usize;
    while tick.tick().await < end {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let cid = cids[k % cids.len()].clone();
        k += 1;
        let (api, s) = (api.clone(), s.clone());
        s.sent.fetch_add(1, Relaxed);
        inflight.push(tokio::spawn(async move {
            let r = api
                .post_message(&cid, &format!("storm-{k}"), &now_us().to_string())
                .await;
            drop(permit);
            match r {
                Ok(seq) => {
                    s.acked.fetch_add(1, Relaxed);
                    let mut l = lock(&s.last_seq);
                    let e = l.entry(cid).or_default();
                    *e = (*e).max(seq);
                }
                Err(e) => {
                    s.refused.fetch_add(1, Relaxed);
                    lock(&s.first_refusal).get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
}

/// Runs the storm scenario over `procs` worker processes and returns its results.
pub async fn run(server: &Server, o: &StormOpts, procs: usize) -> anyhow::Result<Value> {
    let n = o.clients;
    let api = Arc::new(server.create_app("storm").await?);
    let ids: Vec<String> = (0..n).map(|i| format!("storm-{i:06}")).collect();
    let t = Instant::now();
    eprintln!(
        "setting up {n} users, {} group conversations of {}, tokens …",
        n.div_ceil(o.group_size),
        o.group_size
    );
    bulk(ids.clone(), 16, |id| {
        let api = &api;
        async move { api.put_user(&id).await }
    })
    .await?;
    let groups: Vec<Vec<String>> = ids.chunks(o.group_size).map(<[_]>::to_vec).collect();
    let cids = bulk(groups, 8, |members| {
        let api = &api;
        async move { api.group(&members[0], &members).await }
    })
    .await?;
    let tokens = bulk(ids, 16, |id| {
        let api = &api;
        async move { api.token(&id).await }
    })
    .await?;
    eprintln!("set up in {:.1} s", t.elapsed().as_secs_f64());

    let mut jobs = Vec::with_capacity(procs);
    for w in 0..procs {
        let targets: Vec<Value> = (w..n)
            .step_by(procs)
            .map(|i| {
                json!({
                    "index": i,
                    "url": format!("{}/v1/connect?token={}", server.gateway(i), tokens[i]),
                    "cid": cids[i / o.group_size],
                })
            })
            .collect();
        jobs.push(json!({
            "scenario": "storm",
            "source": source_ip(w)?.to_string(),
            "targets": targets,
            "connect_rate": f64::from(o.connect_rate) / procs as f64,
            "in_flight": o.in_flight.div_ceil(procs),
        }));
    }
    let mut pool = Pool::start(jobs).await?;
    eprintln!(
        "{procs} worker process(es), pids {:?}, source addresses 127.0.0.2 … 127.0.0.{}",
        pool.pids(),
        procs + 1
    );
    let pids = server.pids.clone();
    let started = Instant::now();
    let rss_peak = Arc::new(AtomicU64::new(0));
    let mut cpu = CpuMeter::new(&pids);
    let peak = rss_peak.clone();
    let mut print_progress = |p: &[Value]| {
        let s = |k: &str| p.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
        let rss = stats::rss_kib_all(&pids);
        peak.fetch_max(rss.unwrap_or(0), Relaxed);
        eprintln!(
            "[storm {:>4}s] open {}/{n}  failed {}  back {}  synced {}  gave up {}  pushed {}  by sync {} | server cpu {}%  rss {} MiB",
            started.elapsed().as_secs(),
            s("opened"),
            s("failed"),
            s("back"),
            s("synced"),
            s("not_back"),
            s("pushed"),
            s("via_sync"),
            cpu.tick().unwrap_or(f64::NAN),
            rss.map(mib).unwrap_or(f64::NAN),
        );
    };

    let t = Instant::now();
    pool.broadcast(&json!({"cmd": "open"})).await?;
    let limit = Duration::from_secs_f64(n as f64 / f64::from(o.connect_rate) * 4.0 + 120.0);
    let opened_ev = pool.gather("opened", limit, &mut print_progress).await?;
    let connect_s = t.elapsed().as_secs_f64();
    let (opened, failed) = (sum(&opened_ev, "opened"), sum(&opened_ev, "failed"));
    eprintln!("{opened} clients connected and synced in {connect_s:.1} s ({failed} failed)");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A sampler for the peak: the progress callback only runs while the pool is gathered.
    let sampler = {
        let (pids, peak) = (pids.clone(), rss_peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(stats::rss_kib_all(&pids).unwrap_or(0), Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let rss_before = stats::rss_kib_all(&pids);
    let cpu_before = stats::cpu_secs_all(&pids);
    let mut machine_cpu = MachineCpu::new();
    let sent = Arc::new(Sent::default());
    let cids = Arc::new(cids);
    let sender = tokio::spawn(send_loop(
        api.clone(),
        cids.clone(),
        o.rate,
        o.lead + o.window + Duration::from_secs(1),
        sent.clone(),
    ));
    tokio::time::sleep(o.lead).await;
    eprintln!(
        "storm: every client drops now and reconnects within {} s",
        o.window.as_secs_f64()
    );
    let storm_at = Instant::now();
    pool.broadcast(&json!({"cmd": "storm", "window_ms": o.window.as_millis() as u64}))
        .await?;
    let back_ev = pool
        .gather(
            "back",
            o.window + Duration::from_secs(180),
            &mut print_progress,
        )
        .await?;
    let storm_s = storm_at.elapsed().as_secs_f64();
    sender.await?;
    let machine_cpu_pct = machine_cpu.tick();
    let last_seq = lock(&sent.last_seq).clone();
    pool.broadcast(&json!({
        "cmd": "expect",
        "last_seq": last_seq,
        "drain_ms": o.drain.as_millis() as u64,
    }))
    .await?;
    let results = pool
        .gather(
            "result",
            o.drain + Duration::from_secs(60),
            &mut print_progress,
        )
        .await?;
    let cpu_secs = match (cpu_before, stats::cpu_secs_all(&pids)) {
        (Some(a), Some(b)) => Some(((b - a) * 100.0).round() / 100.0),
        _ => None,
    };
    sampler.abort();
    pool.finish().await;
    let rss_end = stats::rss_kib_all(&pids);

    let merged = |evs: &[Value], key: &str| {
        let mut h = histogram();
        for e in evs {
            merge_histogram_json(&mut h, &e[key]);
        }
        h
    };
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for e in &back_ev {
        for (k, v) in e["failures"].as_object().into_iter().flatten() {
            *failures.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    let max = |evs: &[Value], key: &str| evs.iter().filter_map(|e| e[key].as_u64()).max();
    let secs = |us: Option<u64>| us.map(|u| (u as f64 / 1e4).round() / 100.0);
    Ok(json!({
        "scenario": "storm",
        "tenant_id": api.tenant_id,
        "app_id": api.app_id,
        "params": {
            "clients": n,
            "group_size": o.group_size,
            "conversations": cids.len(),
            "window_s": o.window.as_secs_f64(),
            "rate_per_s": o.rate,
            "lead_s": o.lead.as_secs_f64(),
            "drain_limit_s": o.drain.as_secs_f64(),
            "connect_rate_limit_per_s": o.connect_rate,
            "client_processes": procs,
        },
        "opened": opened,
        "failed": failed,
        "first_connect_s": (connect_s * 10.0).round() / 10.0,
        "handshake": summary(&merged(&results, "handshake")),
        "client_rss_kib": sum(&opened_ev, "rss_kib"),
        "storm": {
            "back": sum(&back_ev, "back"),
            "synced": sum(&back_ev, "synced"),
            "not_back": sum(&back_ev, "not_back"),
            "sync_failed": sum(&back_ev, "sync_failed"),
            "sync_retries": sum(&back_ev, "sync_retries"),
            "retries": sum(&back_ev, "retries"),
            "failures": failures,
            "time_to_all_back_s": secs(max(&back_ev, "last_back_us")),
            "time_to_all_synced_s": secs(max(&back_ev, "last_synced_us")),
            "wall_s": (storm_s * 100.0).round() / 100.0,
            "reconnect_handshake": summary(&merged(&back_ev, "reconnect")),
            "sync_after_reconnect": summary(&merged(&back_ev, "sync_time")),
        },
        "messages": {
            "sent": sent.sent.load(Relaxed),
            "acked": sent.acked.load(Relaxed),
            "refused": sent.refused.load(Relaxed),
            "first_refusal": lock(&sent.first_refusal).clone(),
            "deliveries_expected": sum(&results, "expected"),
            "pushed": sum(&results, "pushed"),
            "recovered_by_sync": sum(&results, "via_sync"),
            "pushed_again_after_sync": sum(&results, "pushed_again"),
            // Missing after the drain at clients that were back and synced.
            "lost": sum(&results, "lost"),
            "clients_incomplete": sum(&results, "clients_incomplete"),
            // Missing at clients that never came back or whose sync failed.
            "missing_at_clients_not_back": sum(&results, "missing_not_back"),
            "clients_not_back_or_not_synced": sum(&results, "clients_not_back"),
            "push_latency": summary(&merged(&results, "push_latency")),
        },
        "sockets_closed_early": sum(&results, "closed_early"),
        "server_rss_kib_before_storm": rss_before,
        "server_rss_kib_peak": rss_peak.load(Relaxed),
        "server_rss_kib_end": rss_end,
        "server_cpu_s_storm_and_drain": cpu_secs,
        "machine_cpu_pct_storm": machine_cpu_pct,
    }))
}

/// Prints the storm scenario's summary table.
pub fn print_summary(v: &Value) {
    let row = |k: &str, val: String| println!("  {k:<48} {val}");
    let p = &v["params"];
    let s = &v["storm"];
    let m = &v["messages"];
    let h = &s["reconnect_handshake"];
    println!();
    println!(
        "storm: {} clients in groups of {}, reconnecting within {} s, {} msgs/s, {} client process(es)",
        p["clients"], p["group_size"], p["window_s"], p["rate_per_s"], p["client_processes"]
    );
    row(
        "connected / failed at first",
        format!("{} / {}", v["opened"], v["failed"]),
    );
    row(
        "back / synced / gave up / sync failed",
        format!(
            "{} / {} / {} / {}",
            s["back"], s["synced"], s["not_back"], s["sync_failed"]
        ),
    );
    row(
        "reconnect retries / sync retries (unavailable)",
        format!("{} / {}", s["retries"], s["sync_retries"]),
    );
    if s["failures"].as_object().is_some_and(|f| !f.is_empty()) {
        row("failed attempts", s["failures"].to_string());
    }
    row(
        "time to all back / all synced",
        format!(
            "{} / {} s",
            s["time_to_all_back_s"], s["time_to_all_synced_s"]
        ),
    );
    row(
        "reconnect handshake p50 / p99 / p99.9",
        format!(
            "{} / {} / {} ms (max {})",
            h["p50_ms"], h["p99_ms"], h["p999_ms"], h["max_ms"]
        ),
    );
    row(
        "sync after reconnect p50 / p99",
        format!(
            "{} / {} ms",
            s["sync_after_reconnect"]["p50_ms"], s["sync_after_reconnect"]["p99_ms"]
        ),
    );
    row(
        "messages sent / acked / refused",
        format!("{} / {} / {}", m["sent"], m["acked"], m["refused"]),
    );
    if let Some(why) = m["first_refusal"].as_str() {
        row("first refusal", why.to_owned());
    }
    row(
        "seqs expected / pushed / recovered by sync",
        format!(
            "{} / {} / {}",
            m["deliveries_expected"], m["pushed"], m["recovered_by_sync"]
        ),
    );
    row(
        "lost at synced clients (clients missing any)",
        format!("{} ({})", m["lost"], m["clients_incomplete"]),
    );
    row(
        "missing at clients not back or not synced",
        format!(
            "{} ({} clients)",
            m["missing_at_clients_not_back"], m["clients_not_back_or_not_synced"]
        ),
    );
    row(
        "pushed again after a sync had it",
        m["pushed_again_after_sync"].to_string(),
    );
    let kib = |x: &Value| {
        x.as_u64()
            .map(|k| format!("{}", mib(k)))
            .unwrap_or("?".into())
    };
    row(
        "server RSS before / peak / end (MiB)",
        format!(
            "{} / {} / {}",
            kib(&v["server_rss_kib_before_storm"]),
            kib(&v["server_rss_kib_peak"]),
            kib(&v["server_rss_kib_end"])
        ),
    );
    row(
        "server CPU s (storm and drain)",
        v["server_cpu_s_storm_and_drain"].to_string(),
    );
    row(
        "first connect handshake p50 / p99",
        format!(
            "{} / {} ms",
            v["handshake"]["p50_ms"], v["handshake"]["p99_ms"]
        ),
    );
}

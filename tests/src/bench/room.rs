//! Scenario `room`: fan-out in one broadcast room.
//!
//! L listeners join one room (a `subscribe` frame each, acknowledged before the run starts) and
//! S senders, members of the room, post on a fixed schedule so that together they offer R
//! messages per second; each message's text is its send time in µs. Every listener records
//! receive time − send time of each `message.new` (into one of a few shared HdrHistograms, so
//! ten thousand listeners do not each hold one) and which seqs it has seen: a seq seen twice is a
//! duplicate. Deliveries expected = acked messages × listeners that read; the rest is missing
//! (lost when the drain completed, else late).
//!
//! With `slow`, that many listeners stop reading once joined (slow consumers, on sockets with a
//! 4 KiB receive buffer): the server must cut them off (close 4008, or a heartbeat timeout) and
//! keep its memory flat; the run reports server RSS at the start, peak and end, and how many
//! slow sockets the server had closed by the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::idle::{client_config, connect_error};
use super::server::{Server, bulk};
use super::stats::{self, CpuMeter, MachineCpu, histogram, mib, now_us, summary};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Options of the room scenario.
#[derive(Debug, Clone)]
pub struct RoomOpts {
    /// Listeners (one socket each).
    pub listeners: usize,
    /// Senders.
    pub senders: usize,
    /// Messages per second offered by all senders together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// After sending, how long to wait at most for outstanding deliveries.
    pub drain: Duration,
    /// New listener connections per second, at most.
    pub connect_rate: u32,
    /// Listeners that stop reading right after joining (slow consumers): their sockets get a
    /// 4 KiB receive buffer and are never read until the end, when the run checks that the
    /// server cut them off.
    pub slow: usize,
    /// Padding added to each message (a `custom` field), in bytes.
    pub pad_bytes: usize,
}

const SHARDS: usize = 32;

struct Shared {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    closed: AtomicU64,
    /// The first refusal's error frame, to say why.
    first_refusal: Mutex<Option<String>>,
    last_delivery_us: AtomicU64,
    stopping: AtomicBool,
    latency: Vec<Mutex<Histogram<u64>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The value of `"key":` in a flat JSON text, without parsing the whole frame (the client must
/// stay cheap next to a server pushing hundreds of thousands of frames a second).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = text[at..].trim_start_matches([':', '"', ' ']);
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    Some(&rest[..end])
}

/// Opens a WebSocket; with `rcvbuf`, on a socket whose kernel receive buffer is that small.
async fn open(url: &str, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
    let Some(size) = rcvbuf else {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
                .await
                .map_err(|e| anyhow::anyhow!("connect failed: {}", connect_error(&e)))?;
        return Ok(ws);
    };
    let addr = starling_e2e::url_addr(url);
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(size)?;
    let tcp = sock.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        Some(client_config()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("connect failed: {}", connect_error(&e)))?;
    Ok(ws)
}

/// Connects, subscribes to the room and waits for the subscription's ack.
async fn join(url: String, cid: String, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
    let mut ws = tokio::time::timeout(Duration::from_secs(15), open(&url, rcvbuf))
        .await
        .context("connect timed out")??;
    let sub = json!({"type": "subscribe", "id": "join", "conversation_id": cid});
    ws.send(Message::Text(sub.to_string().into())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no subscribe ack within 30 s")?;
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["id"] == "join" {
                    if v["type"] == "ack" {
                        return Ok(ws);
                    }
                    bail!("subscribe refused: {v}");
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("before the subscribe ack: {e}"),
            None => bail!("closed before the subscribe ack"),
        }
    }
}

async fn listener(mut ws: Ws, shard: usize, sh: Arc<Shared>) {
    // Seqs seen so far, one bit each: a seq seen twice is a duplicate; one below the highest seen
    // arrived out of order (two senders' messages may be pushed in another order than their seq
    // order: clients order by seq).
    let mut seen: Vec<u64> = Vec::new();
    let mut max_seq = 0u64;
    while let Some(m) = ws.next().await {
        if sh.stopping.load(Relaxed) {
            return;
        }
        let t = match m {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let t = t.as_str();
        if !t.contains("\"message.new\"") {
            continue;
        }
        let now = now_us();
        let Some(seq) = field(t, "\"seq\":").and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let sent = field(t, "\"text\":").and_then(|s| s.parse::<u64>().ok());
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            sh.duplicates.fetch_add(1, Relaxed);
            continue;
        }
        seen[word] |= bit;
        if seq < max_seq {
            sh.reordered.fetch_add(1, Relaxed);
        }
        max_seq = max_seq.max(seq);
        sh.delivered.fetch_add(1, Relaxed);
        sh.last_delivery_us.fetch_max(now, Relaxed);
        if let Some(ts) = sent {
            lock(&sh.latency[shard]).saturating_record(now.saturating_sub(ts));
        }
    }
    if !sh.stopping.load(Relaxed) {
        sh.closed.fetch_add(1, Relaxed);
    }
}

/// How a slow listener's connection ended, read after the run: cut off by the server (a close
/// frame, an error or the end of the stream after what was buffered), or still open.
async fn cut_off(mut ws: Ws) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn sender(
    ws: Ws,
    who: usize,
    cid: String,
    first: tokio::time::Instant,
    period: Duration,
    end: tokio::time::Instant,
    pad: Arc<str>,
    sh: Arc<Shared>,
) {
    let (mut sink, mut stream) = ws.split();
    let sh2 = sh.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                let t = t.as_str();
                if t.starts_with("{\"type\":\"ack\"") || t.contains("\"type\":\"ack\"") {
                    sh2.acked.fetch_add(1, Relaxed);
                } else if t.contains("\"type\":\"error\"") {
                    sh2.refused.fetch_add(1, Relaxed);
                    lock(&sh2.first_refusal).get_or_insert_with(|| t.to_owned());
                }
            }
        }
    });
    let mut tick = tokio::time::interval_at(first, period);
    let mut n = 0u64;
    while let Ok(at) = tokio::time::timeout_at(end, tick.tick()).await
        && at < end
    {
        let cmid = format!("r{who}-{n}");
        let mut frame = json!({
            "type": "send", "id": cmid, "conversation_id": cid,
            "client_msg_id": cmid, "text": now_us().to_string(),
        });
        if !pad.is_empty() {
            frame["custom"] = json!({ "pad": &*pad });
        }
        if sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        sh.sent.fetch_add(1, Relaxed);
        n += 1;
    }
    // Keep the socket open until the run ends, so late acks are counted.
    while !sh.stopping.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
}

/// Runs the room scenario and returns its results.
pub async fn run(server: &Server, o: &RoomOpts) -> anyhow::Result<Value> {
    if let Some(limit) = stats::open_files_limit()
        && (o.listeners + o.senders) as u64 + 256 > limit
    {
        bail!(
            "{} sockets need more open files than this process may have ({limit})",
            o.listeners + o.senders
        );
    }
    let api = server.create_app("room").await?;
    let t = Instant::now();
    let senders: Vec<String> = (0..o.senders).map(|i| format!("room-s-{i:03}")).collect();
    let listeners: Vec<String> = (0..o.listeners).map(|i| format!("room-l-{i:05}")).collect();
    eprintln!(
        "setting up {} listeners and {} senders: users, the room, tokens …",
        o.listeners, o.senders
    );
    let everyone: Vec<String> = senders.iter().chain(&listeners).cloned().collect();
    bulk(everyone.clone(), 16, |id| {
        let api = &api;
        async move { api.put_user(&id).await }
    })
    .await?;
    let cid = api.room(&senders[0], &senders).await?;
    let tokens = bulk(everyone, 16, |id| {
        let api = &api;
        async move { api.token(&id).await }
    })
    .await?;
    let (sender_tokens, listener_tokens) = tokens.split_at(o.senders);

    let sh = Arc::new(Shared {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        first_refusal: Mutex::new(None),
        last_delivery_us: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        latency: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
    });
    // Listeners join at a bounded rate, at most 64 handshakes at once.
    let gate = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(o.connect_rate)));
    let mut joins: Vec<JoinHandle<anyhow::Result<Ws>>> = Vec::with_capacity(o.listeners);
    for (i, tok) in listener_tokens.iter().enumerate() {
        tick.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let url = format!("{}/v1/connect?token={tok}", server.gateway(i));
        let cid = cid.clone();
        let rcvbuf = (i < o.slow).then_some(4096);
        joins.push(tokio::spawn(async move {
            let r = join(url, cid, rcvbuf).await;
            drop(permit);
            r
        }));
        if (i + 1) % 2000 == 0 {
            eprintln!("[room] {} listeners connecting …", i + 1);
        }
    }
    let mut readers = Vec::with_capacity(o.listeners);
    let mut slow_ws = Vec::with_capacity(o.slow);
    for (i, j) in joins.into_iter().enumerate() {
        let ws = j.await?.with_context(|| format!("listener {i}"))?;
        if i < o.slow {
            slow_ws.push(ws); // never read until the end
        } else {
            readers.push(tokio::spawn(listener(ws, i % SHARDS, sh.clone())));
        }
    }
    let fast = o.listeners - o.slow;
    let mut sender_ws = Vec::new();
    for (i, tok) in sender_tokens.iter().enumerate() {
        sender_ws.push(
            join(
                format!("{}/v1/connect?token={tok}", server.gateway(i)),
                cid.clone(),
                None,
            )
            .await?,
        );
    }
    eprintln!(
        "set up and joined {} sockets in {:.1} s",
        o.listeners + o.senders,
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pids = server.pids.clone();
    let rss_start = stats::rss_kib_all(&pids);
    let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let pad: Arc<str> = Arc::from("x".repeat(o.pad_bytes));
    let cpu_before = stats::cpu_secs_all(&pids);
    let mut server_cpu = CpuMeter::new(&pids);
    let mut client_cpu = CpuMeter::new(&[std::process::id()]);
    let mut machine_cpu = MachineCpu::new();
    let period = Duration::from_secs_f64(o.senders as f64 / o.rate);
    let t0 = tokio::time::Instant::now();
    let t0_us = now_us();
    let end = t0 + o.duration;
    let writers: Vec<JoinHandle<()>> = sender_ws
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let first = t0 + period.mul_f64(i as f64 / o.senders as f64);
            tokio::spawn(sender(
                ws,
                i,
                cid.clone(),
                first,
                period,
                end,
                pad.clone(),
                sh.clone(),
            ))
        })
        .collect();
    let progress = {
        let (sh, pids, rss_peak) = (sh.clone(), pids.clone(), rss_peak.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut cpu = CpuMeter::new(&pids);
            let mut last = 0;
            loop {
                tick.tick().await;
                let d = sh.delivered.load(Relaxed);
                let rss = stats::rss_kib_all(&pids);
                rss_peak.fetch_max(rss.unwrap_or(0), Relaxed);
                eprintln!(
                    "[room {:>4}s] sent {}  acked {}  delivered {d} (+{}/s)  dup {}  reordered {} | server cpu {}%  rss {} MiB",
                    t0.elapsed().as_secs(),
                    sh.sent.load(Relaxed),
                    sh.acked.load(Relaxed),
                    d - last,
                    sh.duplicates.load(Relaxed),
                    sh.reordered.load(Relaxed),
                    cpu.tick().unwrap_or(f64::NAN),
                    rss.map(mib).unwrap_or(f64::NAN),
                );
                last = d;
            }
        })
    };
    tokio::time::sleep_until(end).await;
    let send_secs = t0.elapsed().as_secs_f64();
    let (server_cpu_pct, client_cpu_pct, machine_cpu_pct) =
        (server_cpu.tick(), client_cpu.tick(), machine_cpu.tick());
    let drain_start = Instant::now();
    let expected = || sh.acked.load(Relaxed) * fast as u64;
    while drain_start.elapsed() < o.drain {
        let answered = sh.acked.load(Relaxed) + sh.refused.load(Relaxed);
        if answered >= sh.sent.load(Relaxed) && sh.delivered.load(Relaxed) >= expected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_secs = match (cpu_before, stats::cpu_secs_all(&pids)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    progress.abort();
    sh.stopping.store(true, Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    for r in &readers {
        r.abort();
    }
    let rss_end = stats::rss_kib_all(&pids);
    let slow_cut_off = futures::future::join_all(slow_ws.into_iter().map(cut_off))
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    let (sent, acked, delivered) = (
        sh.sent.load(Relaxed),
        sh.acked.load(Relaxed),
        sh.delivered.load(Relaxed),
    );
    let expected = acked * fast as u64;
    let mut latency = histogram();
    for h in &sh.latency {
        latency.add(&*lock(h)).ok();
    }
    // Deliveries per second over the span from the first send to the last delivery.
    let span =
        (sh.last_delivery_us.load(Relaxed).saturating_sub(t0_us) as f64 / 1e6).max(send_secs);
    let per_s = delivered as f64 / span;
    Ok(json!({
        "scenario": "room",
        "tenant_id": api.tenant_id,
        "app_id": api.app_id,
        "params": {
            "listeners": o.listeners,
            "senders": o.senders,
            "target_rate_per_s": o.rate,
            "duration_s": o.duration.as_secs_f64(),
            "drain_limit_s": o.drain.as_secs_f64(),
            "slow_listeners": o.slow,
            "pad_bytes": o.pad_bytes,
        },
        "sent": sent,
        "acked": acked,
        "refused": sh.refused.load(Relaxed),
        "first_refusal": lock(&sh.first_refusal).clone(),
        "deliveries_expected": expected,
        "delivered": delivered,
        "missing": expected.saturating_sub(delivered),
        "drain_complete": delivered >= expected && acked + sh.refused.load(Relaxed) >= sent,
        "duplicated": sh.duplicates.load(Relaxed),
        // Pushed out of seq order (not an error: clients order by seq).
        "reordered": sh.reordered.load(Relaxed),
        "sockets_closed_early": sh.closed.load(Relaxed),
        "deliveries_per_s": per_s.round(),
        "latency_send_to_deliver": summary(&latency),
        "server_cpu_pct_while_sending": server_cpu_pct,
        "client_cpu_pct_while_sending": client_cpu_pct,
        "machine_cpu_pct_while_sending": machine_cpu_pct,
        // Server CPU seconds (sending and draining) per 100,000 deliveries.
        "server_cpu_s_per_100k_deliveries": cpu_secs
            .filter(|_| delivered > 0)
            .map(|c| (c / delivered as f64 * 1e5 * 1000.0).round() / 1000.0),
        "server_rss_kib_start": rss_start,
        "server_rss_kib_peak": rss_peak.load(Relaxed),
        "server_rss_kib_end": rss_end,
        // Slow listeners the server had cut off by the end (close frame, error or EOF).
        "slow_cut_off": slow_cut_off,
    }))
}

/// Prints the room scenario's summary table.
pub fn print_summary(v: &Value) {
    let row = |k: &str, val: String| println!("  {k:<44} {val}");
    let p = &v["params"];
    let l = &v["latency_send_to_deliver"];
    println!();
    println!(
        "room: {} listeners, {} senders, target {} msgs/s for {} s",
        p["listeners"], p["senders"], p["target_rate_per_s"], p["duration_s"]
    );
    row(
        "sent / acked / refused",
        format!("{} / {} / {}", v["sent"], v["acked"], v["refused"]),
    );
    if let Some(why) = v["first_refusal"].as_str() {
        row("first refusal", why.to_owned());
    }
    row(
        "deliveries expected / done / missing",
        format!(
            "{} / {} / {}",
            v["deliveries_expected"], v["delivered"], v["missing"]
        ),
    );
    if v["drain_complete"] == false {
        row(
            "drain",
            "ran out of time: `missing` were still on the way".into(),
        );
    }
    row(
        "duplicated / out of seq order / sockets closed",
        format!(
            "{} / {} / {}",
            v["duplicated"], v["reordered"], v["sockets_closed_early"]
        ),
    );
    row("deliveries per second", v["deliveries_per_s"].to_string());
    row(
        "send→deliver p50 / p99 / p99.9",
        format!(
            "{} / {} / {} ms (max {})",
            l["p50_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"]
        ),
    );
    row(
        "CPU server / client / machine (% of 1 core)",
        format!(
            "{} / {} / {}",
            v["server_cpu_pct_while_sending"],
            v["client_cpu_pct_while_sending"],
            v["machine_cpu_pct_while_sending"]
        ),
    );
    row(
        "server CPU s per 100k deliveries",
        v["server_cpu_s_per_100k_deliveries"].to_string(),
    );
    row(
        "server RSS start / peak / end (MiB)",
        format!(
            "{:.1} / {:.1} / {:.1}",
            v["server_rss_kib_start"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            v["server_rss_kib_peak"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            v["server_rss_kib_end"].as_f64().unwrap_or(f64::NAN) / 1024.0
        ),
    );
    if p["slow_listeners"].as_u64().unwrap_or(0) > 0 {
        row(
            "slow listeners cut off by the server",
            format!("{} of {}", v["slow_cut_off"], p["slow_listeners"]),
        );
    }
}

//! Scenario `chat`: 1:1 chat throughput and send→deliver latency.
//!
//! P pairs of users, one direct conversation per pair, each user on one WebSocket. The first user
//! of each pair sends `send` frames on a fixed schedule (open loop: the next send does not wait
//! for the last ack) so that all senders together offer R messages per second; the text of each
//! message is its send time in microseconds since the epoch. The second user records, for each
//! `message.new`, receive time − send time in an HdrHistogram. Every message is accounted for by
//! its id: acked (the sender got an `ack`), delivered (the receiver got it), lost (acked, never
//! delivered), duplicated (delivered more than once), and each conversation's `seq` must grow by
//! exactly one per delivered message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::idle::{client_config, connect_error};
use super::server::{Server, bulk};
use super::stats::{self, CpuMeter, MachineCpu, histogram, mib, now_us, summary};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Options of the chat scenario.
#[derive(Debug, Clone)]
pub struct ChatOpts {
    /// Pairs of users (one direct conversation each).
    pub pairs: usize,
    /// Messages per second offered by all senders together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// After sending stops, how long to wait at most for outstanding acks and deliveries.
    pub drain: Duration,
}

#[derive(Default)]
struct Book {
    /// Message ids the senders got acks for.
    acked: HashSet<String>,
    /// Message id → deliveries to the receiver.
    delivered: HashMap<String, u32>,
    /// Error codes of refused sends.
    errors: BTreeMap<String, u64>,
}

struct Shared {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    seq_anomalies: AtomicU64,
    closed: AtomicU64,
    /// When the last ack arrived, µs since the epoch.
    last_ack_us: AtomicU64,
    stopping: AtomicBool,
    /// Send→deliver: whole run, and the current second (for progress lines).
    latency: Mutex<(Histogram<u64>, Histogram<u64>)>,
    /// Send→ack.
    ack_latency: Mutex<Histogram<u64>>,
    book: Mutex<Book>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn connect(url: String) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true),
    )
    .await
    .context("connect timed out")?
    .map_err(|e| anyhow::anyhow!("connect failed: {}", connect_error(&e)))?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .context("no hello within 15 s")?;
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["type"] == "hello" {
                    return Ok(ws);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("before hello: {e}"),
            None => anyhow::bail!("closed before hello"),
        }
    }
}

/// The sender's socket: acks and refusals (its own `message.new` echoes are ignored).
async fn sender_reader(mut stream: SplitStream<Ws>, sh: Arc<Shared>) {
    while let Some(m) = stream.next().await {
        if sh.stopping.load(Relaxed) {
            return;
        }
        let now = now_us();
        let t = match m {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let v: Value = match serde_json::from_str(t.as_str()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        match v["type"].as_str() {
            Some("ack") => {
                let msg = &v["result"]["message"];
                let sent_at = msg["text"].as_str().and_then(|s| s.parse::<u64>().ok());
                if let (Some(id), Some(ts)) = (msg["id"].as_str(), sent_at) {
                    lock(&sh.ack_latency).saturating_record(now.saturating_sub(ts));
                    lock(&sh.book).acked.insert(id.to_owned());
                    sh.acked.fetch_add(1, Relaxed);
                    sh.last_ack_us.fetch_max(now, Relaxed);
                }
            }
            Some("error") => {
                sh.refused.fetch_add(1, Relaxed);
                let code = v["code"].as_str().unwrap_or("?").to_owned();
                *lock(&sh.book).errors.entry(code).or_default() += 1;
            }
            _ => {}
        }
    }
    if !sh.stopping.load(Relaxed) {
        sh.closed.fetch_add(1, Relaxed);
    }
}

/// The receiver's socket: `message.new` events.
async fn receiver_reader(mut stream: SplitStream<Ws>, sh: Arc<Shared>) {
    let mut last_seq = 0i64;
    while let Some(m) = stream.next().await {
        if sh.stopping.load(Relaxed) {
            return;
        }
        let now = now_us();
        let t = match m {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if !t.as_str().contains("\"message.new\"") {
            continue;
        }
        let v: Value = match serde_json::from_str(t.as_str()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let msg = &v["message"];
        let Some(id) = msg["id"].as_str() else {
            continue;
        };
        let first = {
            let mut b = lock(&sh.book);
            let n = b.delivered.entry(id.to_owned()).or_default();
            *n += 1;
            *n == 1
        };
        if !first {
            sh.duplicates.fetch_add(1, Relaxed);
            continue;
        }
        sh.delivered.fetch_add(1, Relaxed);
        let seq = msg["seq"].as_i64().unwrap_or(-1);
        if seq != last_seq + 1 {
            sh.seq_anomalies.fetch_add(1, Relaxed);
        }
        last_seq = last_seq.max(seq);
        if let Some(ts) = msg["text"].as_str().and_then(|s| s.parse::<u64>().ok()) {
            let us = now.saturating_sub(ts);
            let mut l = lock(&sh.latency);
            l.0.saturating_record(us);
            l.1.saturating_record(us);
        }
    }
    if !sh.stopping.load(Relaxed) {
        sh.closed.fetch_add(1, Relaxed);
    }
}

/// Sends on a fixed schedule until `end`: one message every `period`, starting at `first`.
async fn sender_writer(
    mut sink: SplitSink<Ws, Message>,
    pair: usize,
    cid: String,
    first: tokio::time::Instant,
    period: Duration,
    end: tokio::time::Instant,
    sh: Arc<Shared>,
) -> SplitSink<Ws, Message> {
    let mut tick = tokio::time::interval_at(first, period);
    let mut n = 0u64;
    while let Ok(at) = tokio::time::timeout_at(end, tick.tick()).await
        && at < end
    {
        let cmid = format!("p{pair}-{n}");
        let frame = json!({
            "type": "send",
            "id": cmid,
            "conversation_id": cid,
            "client_msg_id": cmid,
            "text": now_us().to_string(),
        });
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
    sink
}

/// Runs the chat scenario and returns its results.
pub async fn run(server: &Server, o: &ChatOpts) -> anyhow::Result<Value> {
    let api = server.create_app("chat").await?;
    let p = o.pairs;
    let t = Instant::now();
    eprintln!("setting up {p} pairs: users, direct conversations, tokens …");
    let users: Vec<String> = (0..p)
        .flat_map(|i| [format!("chat-{i:04}-a"), format!("chat-{i:04}-b")])
        .collect();
    bulk(users.clone(), 16, |id| {
        let api = &api;
        async move { api.put_user(&id).await }
    })
    .await?;
    let convs = bulk((0..p).collect(), 16, |i| {
        let api = &api;
        async move {
            api.direct(&format!("chat-{i:04}-a"), &format!("chat-{i:04}-b"))
                .await
        }
    })
    .await?;
    let tokens = bulk(users, 16, |id| {
        let api = &api;
        async move { api.token(&id).await }
    })
    .await?;
    // Socket j is side j % 2 of pair j / 2. On a cell the two sides of a pair are on different
    // nodes (pair i: node i and node i + 1), so every message crosses the bus.
    let sockets = bulk(tokens.into_iter().enumerate().collect(), 16, |(j, tok)| {
        connect(format!(
            "{}/v1/connect?token={tok}",
            server.gateway(j / 2 + j % 2)
        ))
    })
    .await?;
    eprintln!(
        "set up and connected {} sockets in {:.1} s",
        sockets.len(),
        t.elapsed().as_secs_f64()
    );

    let sh = Arc::new(Shared {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        seq_anomalies: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        last_ack_us: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        latency: Mutex::new((histogram(), histogram())),
        ack_latency: Mutex::new(histogram()),
        book: Mutex::default(),
    });
    // Readers first, so presence events and the like are consumed from the start.
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut sinks = Vec::new();
    let mut it = sockets.into_iter();
    let mut senders = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        let (sa, ra) = a.split();
        let (sb, rb) = b.split();
        readers.push(tokio::spawn(sender_reader(ra, sh.clone())));
        readers.push(tokio::spawn(receiver_reader(rb, sh.clone())));
        senders.push(sa);
        sinks.push(sb);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pids = server.pids.clone();
    let mut server_cpu = CpuMeter::new(&pids);
    let mut client_cpu = CpuMeter::new(&[std::process::id()]);
    let mut machine_cpu = MachineCpu::new();
    let period = Duration::from_secs_f64(p as f64 / o.rate);
    let t0 = tokio::time::Instant::now();
    let t0_us = now_us();
    let end = t0 + o.duration;
    let writers: Vec<JoinHandle<SplitSink<Ws, Message>>> = senders
        .into_iter()
        .zip(convs.iter().cloned())
        .enumerate()
        .map(|(i, (sink, cid))| {
            // Spread the senders evenly over one period.
            let first = t0 + period.mul_f64(i as f64 / p as f64);
            tokio::spawn(sender_writer(sink, i, cid, first, period, end, sh.clone()))
        })
        .collect();

    let progress = {
        let sh = sh.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut cpu = CpuMeter::new(&pids);
            let mut last_sent = 0;
            loop {
                tick.tick().await;
                let sent = sh.sent.load(Relaxed);
                let (p50, p99, max) = {
                    let mut l = lock(&sh.latency);
                    let r = (
                        l.1.value_at_quantile(0.5),
                        l.1.value_at_quantile(0.99),
                        l.1.max(),
                    );
                    l.1.reset();
                    r
                };
                eprintln!(
                    "[chat {:>4}s] sent {sent} (+{})  acked {}  delivered {}  refused {}  closed {} | last 1 s: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms | server cpu {}%  rss {} MiB",
                    t0.elapsed().as_secs(),
                    sent - last_sent,
                    sh.acked.load(Relaxed),
                    sh.delivered.load(Relaxed),
                    sh.refused.load(Relaxed),
                    sh.closed.load(Relaxed),
                    stats::ms(p50),
                    stats::ms(p99),
                    stats::ms(max),
                    cpu.tick().unwrap_or(f64::NAN),
                    stats::rss_kib_all(&pids).map(mib).unwrap_or(f64::NAN),
                );
                last_sent = sent;
            }
        })
    };

    let mut sender_sinks = Vec::new();
    for w in writers {
        sender_sinks.push(w.await?);
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let server_cpu_pct = server_cpu.tick();
    let client_cpu_pct = client_cpu.tick();
    let machine_cpu_pct = machine_cpu.tick();
    // Drain: until everything sent has an answer and everything acked has arrived.
    let drain_start = Instant::now();
    while drain_start.elapsed() < o.drain {
        let sent = sh.sent.load(Relaxed);
        let answered = sh.acked.load(Relaxed) + sh.refused.load(Relaxed);
        let acked = sh.acked.load(Relaxed);
        let delivered = sh.delivered.load(Relaxed);
        if answered >= sent && delivered >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    progress.abort();
    // The books close here: what arrives while the sockets close is not counted.
    sh.stopping.store(true, Relaxed);
    let book = std::mem::take(&mut *lock(&sh.book));
    let sent = sh.sent.load(Relaxed);
    let acked = sh.acked.load(Relaxed);
    let refused = sh.refused.load(Relaxed);
    let delivered = sh.delivered.load(Relaxed);
    let drain_complete = acked + refused >= sent && delivered >= acked;
    let latency = std::mem::replace(&mut lock(&sh.latency).0, histogram());
    let ack_latency = std::mem::replace(&mut *lock(&sh.ack_latency), histogram());
    for mut s in sender_sinks.into_iter().chain(sinks) {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.close()).await;
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }

    let lost = book
        .acked
        .iter()
        .filter(|id| !book.delivered.contains_key(*id))
        .count();
    let delivered_not_acked = book
        .delivered
        .keys()
        .filter(|id| !book.acked.contains(*id))
        .count();
    // Acked messages per second over the time it took to ack them (the send phase, or longer
    // when acks trail behind).
    let ack_span = (sh.last_ack_us.load(Relaxed).saturating_sub(t0_us) as f64 / 1e6).max(send_secs);
    Ok(json!({
        "scenario": "chat",
        "tenant_id": api.tenant_id,
        "app_id": api.app_id,
        "params": {
            "pairs": p,
            "target_rate_per_s": o.rate,
            "duration_s": o.duration.as_secs_f64(),
            "drain_limit_s": o.drain.as_secs_f64(),
            "per_sender_period_ms": period.as_secs_f64() * 1000.0,
        },
        "sent": sent,
        "send_rate_per_s": (sent as f64 / send_secs * 10.0).round() / 10.0,
        "acked": acked,
        "refused": refused,
        "refused_codes": book.errors,
        "unanswered": sent.saturating_sub(acked + refused),
        "delivered": delivered,
        // Acked but not delivered by the end of the drain: lost when the drain completed,
        // still on the way when it ran out of time.
        "lost": lost,
        "drain_complete": drain_complete,
        "duplicated": sh.duplicates.load(Relaxed),
        "delivered_not_acked": delivered_not_acked,
        "seq_anomalies": sh.seq_anomalies.load(Relaxed),
        "sockets_closed_early": sh.closed.load(Relaxed),
        "throughput_acked_per_s": (acked as f64 / ack_span * 10.0).round() / 10.0,
        "latency_send_to_deliver": summary(&latency),
        "latency_send_to_ack": summary(&ack_latency),
        "drain_s": (drain_secs * 100.0).round() / 100.0,
        "server_cpu_pct_while_sending": server_cpu_pct,
        "client_cpu_pct_while_sending": client_cpu_pct,
        // Everything on the machine; minus server and client, what other processes took.
        "machine_cpu_pct_while_sending": machine_cpu_pct,
        "server_rss_kib_end": stats::rss_kib_all(&pids),
    }))
}

/// Prints the chat scenario's summary table.
pub fn print_summary(v: &Value) {
    let row = |k: &str, val: String| println!("  {k:<44} {val}");
    let lat = |x: &Value| {
        format!(
            "{} / {} / {} ms (max {})",
            x["p50_ms"], x["p99_ms"], x["p999_ms"], x["max_ms"]
        )
    };
    let p = &v["params"];
    println!();
    println!(
        "chat: {} pairs, target {} msgs/s for {} s",
        p["pairs"], p["target_rate_per_s"], p["duration_s"]
    );
    row(
        "sent (rate)",
        format!("{} ({}/s)", v["sent"], v["send_rate_per_s"]),
    );
    row(
        "acked / refused / unanswered",
        format!("{} / {} / {}", v["acked"], v["refused"], v["unanswered"]),
    );
    if v["refused"].as_u64().unwrap_or(0) > 0 {
        row("refusals by code", v["refused_codes"].to_string());
    }
    row(
        "delivered / lost / duplicated",
        format!("{} / {} / {}", v["delivered"], v["lost"], v["duplicated"]),
    );
    if v["drain_complete"] == false {
        row(
            "drain",
            "ran out of time: `lost` and `unanswered` were still on the way".into(),
        );
    }
    row(
        "seq anomalies / sockets closed",
        format!("{} / {}", v["seq_anomalies"], v["sockets_closed_early"]),
    );
    row(
        "throughput (acked msgs/s)",
        v["throughput_acked_per_s"].to_string(),
    );
    row(
        "send→deliver p50 / p99 / p99.9",
        lat(&v["latency_send_to_deliver"]),
    );
    row("send→ack p50 / p99 / p99.9", lat(&v["latency_send_to_ack"]));
    row(
        "CPU server / client / machine (% of 1 core)",
        format!(
            "{} / {} / {}",
            v["server_cpu_pct_while_sending"],
            v["client_cpu_pct_while_sending"],
            v["machine_cpu_pct_while_sending"]
        ),
    );
    row("drain (s)", v["drain_s"].to_string());
}

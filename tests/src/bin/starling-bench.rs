//! `starling-bench`: benchmarks of one Starling node over loopback (issue #3).
//!
//! It starts `starling standalone` as a child process (temp data dir, free 127.0.0.1 port; the
//! release binary is built with cargo unless `--bin` names one), or attaches to a running server
//! with `--url` and `--operator-token`. Through the admin API it makes a tenant, an app with
//! raised quotas and an API key; through the server API, users, direct conversations and user
//! tokens. Then it runs one scenario:
//!
//! - `idle`: server memory per idle WebSocket connection, connect rate, handshake latency;
//! - `chat`: 1:1 messages per second and send→deliver latency (p50/p99/p99.9);
//! - `room`: fan-out in one broadcast room: deliveries per second, latency, CPU per delivery;
//! - `storm`: a reconnect storm: time until every client is back, messages recovered by `sync`,
//!   none lost, peak server RSS.
//!
//! `--cell N` runs a cell (a control plane and N data-plane nodes on PostgreSQL, Redis and
//! Pulsar) instead of standalone, and spreads connections over its nodes. `--procs N` runs the
//! clients of `idle` and `storm` in N worker processes, each from its own source address
//! (127.0.0.2, 127.0.0.3, …), to hold more than one process's open-file limit.
//!
//! A progress line every second goes to stderr, a summary table to stdout, and `--json FILE`
//! writes the results. The child server is stopped at the end (SIGINT, then kill). Everything is
//! bounded in count and time, and goes to loopback only. See docs/BENCHMARKS.md.
#![forbid(unsafe_code)]

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use bench::chat::{self, ChatOpts};
use bench::idle::{self, IdleOpts};
use bench::room::{self, RoomOpts};
use bench::server::{CellServices, Server, bench_quotas, build_release_starling};
use bench::stats;
use bench::storm::{self, StormOpts};

/// Benchmarks of Starling over loopback (standalone or a cell): idle connections, 1:1 chat,
/// room fan-out, reconnect storms.
#[derive(Parser, Debug)]
#[command(name = "starling-bench", version, about, long_about)]
struct Cli {
    /// The `starling` binary to run as `starling standalone` (default: build it with
    /// `cargo build --release`).
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Attach to a running server on loopback instead, e.g. http://127.0.0.1:7400.
    #[arg(long, global = true)]
    url: Option<String>,
    /// The attached server's operator token.
    #[arg(long, global = true, env = "STARLING_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// The attached server's process id, to sample its memory and CPU from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Run a cell of N data-plane nodes (plus a control plane) instead of standalone, on the
    /// PostgreSQL, Redis and Pulsar given below; connections are spread over the nodes, and the
    /// two users of a chat pair are always on different nodes.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=16))]
    cell: Option<u32>,
    /// The cell's PostgreSQL (loopback only).
    #[arg(long, global = true, env = "TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// The cell's Redis (loopback only).
    #[arg(long, global = true, env = "TEST_REDIS_URL")]
    redis_url: Option<String>,
    /// The cell's Pulsar broker (loopback only).
    #[arg(long, global = true, env = "TEST_PULSAR_URL")]
    pulsar_url: Option<String>,
    /// A token for that Pulsar (scripts/pulsar.sh's super-user token by default).
    #[arg(
        long,
        global = true,
        env = "TEST_PULSAR_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pulsar_token: Option<String>,
    /// The CA of that Pulsar's TLS certificate.
    #[arg(long, global = true, env = "TEST_PULSAR_CA_FILE")]
    pulsar_ca_file: Option<String>,
    /// That Pulsar's admin REST API (`https://…`): the cell's processes provision its
    /// namespaces there (with the token above, which must be a super-user's).
    #[arg(long, global = true, env = "TEST_PULSAR_ADMIN_URL")]
    pulsar_admin_url: Option<String>,
    /// Extra environment for the child server, e.g. STARLING_GATEWAY__OUTBOUND_QUEUE=1024
    /// (repeatable).
    #[arg(long = "server-env", global = true, value_parser = parse_kv)]
    server_env: Vec<(String, String)>,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Client processes for `idle` and `storm`: each holds its share of the connections and
    /// binds them to its own source address (127.0.0.2, 127.0.0.3, …), to get past the
    /// per-process open-file limit and the ~28k ephemeral ports of one source address.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    procs: u32,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Server memory per idle WebSocket connection (RSS slope between 1,000 and N connections).
    Idle(IdleArgs),
    /// 1:1 chat: P pairs, one direct conversation each, R messages per second in all.
    Chat(ChatArgs),
    /// Fan-out: L listeners in one broadcast room, S senders posting R messages per second.
    Room(RoomArgs),
    /// Reconnect storm: N clients in group conversations all drop at once and reconnect within
    /// a window while messages keep coming; each catches up with `sync` by seq.
    Storm(StormArgs),
    /// A client process of `--procs` (started by starling-bench itself; reads its job on stdin).
    #[command(hide = true)]
    Worker,
}

#[derive(Args, Debug)]
struct StormArgs {
    /// Clients (one user and one socket each; at most 18,000 per client process).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    clients: u32,
    /// Members per group conversation.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    group_size: u32,
    /// Seconds over which the clients reconnect, after all dropped at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    window: u64,
    /// System messages per second over all conversations, from `--lead` seconds before the
    /// storm until a second after its window.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// Seconds of sending before the storm.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    lead: u64,
    /// Seconds to wait at most, after the last send, for every client to hold every seq.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
    drain: u64,
    /// New connections per second at first, at most (all client processes together).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    connect_rate: u32,
    /// Handshakes in flight at once at first, at most (all client processes together).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    in_flight: u32,
}

#[derive(Args, Debug)]
struct RoomArgs {
    /// Listeners (one socket each; one client process: at most 18,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=18_000))]
    listeners: u32,
    /// Senders (members of the room).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    senders: u32,
    /// Messages per second offered by all senders together.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// Seconds to send.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Seconds to wait at most, after sending, for outstanding deliveries.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=120))]
    drain: u64,
    /// New listener connections per second, at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_rate: u32,
    /// Percentage of listeners that stop reading once joined (slow consumers): the server must
    /// cut them off and keep its memory flat. Their deliveries are not expected.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=50))]
    slow_percent: u32,
    /// Bytes of padding in each message, to fill slow consumers' buffers sooner.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pad_bytes: u32,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// Connections to open (at most 18,000 per client process: see `--procs`).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    connections: u32,
    /// Connections per user (the gateway allows 10 per user by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    per_user: u32,
    /// New connections per second, at most (all client processes together).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    connect_rate: u32,
    /// Handshakes in flight at once, at most (all client processes together).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    in_flight: u32,
    /// Seconds to wait before each memory sample.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=60))]
    settle: u64,
    /// Seconds to hold all connections open before closing them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    hold: u64,
    /// Attempts again (after 0.25 s, doubling up to 4 s) a handshake the server refused with
    /// 503 or 429, at most this many times per connection; 0 counts the refusal as a failure.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=20))]
    retries: u32,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// Pairs of users (2 sockets each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pairs: u32,
    /// Messages per second offered by all senders together.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Seconds to send.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Seconds to wait at most, after sending, for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=120))]
    drain: u64,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = if matches!(cli.scenario, Scenario::Worker) {
        rt.block_on(bench::worker::main())
    } else {
        rt.block_on(run(cli))
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let per_proc = |n: u32| n.div_ceil(cli.procs);
    match &cli.scenario {
        Scenario::Idle(a) if per_proc(a.connections) > 18_000 => {
            bail!(
                "at most 18,000 connections per client process: use --procs {}",
                a.connections.div_ceil(18_000)
            )
        }
        Scenario::Storm(a) if per_proc(a.clients) > 18_000 => {
            bail!(
                "at most 18,000 clients per client process: use --procs {}",
                a.clients.div_ceil(18_000)
            )
        }
        Scenario::Chat(_) | Scenario::Room(_) if cli.procs > 1 => {
            bail!("--procs is for idle and storm; chat and room run in one process")
        }
        _ => {}
    }
    let mut server = match &cli.url {
        Some(url) => {
            if cli.bin.is_some() || cli.cell.is_some() {
                bail!("--url excludes --bin and --cell");
            }
            let token = cli
                .operator_token
                .as_deref()
                .context("--url needs --operator-token (or STARLING_TOKEN)")?;
            Server::attach(url, token, cli.server_pid).await?
        }
        None => {
            let bin = match &cli.bin {
                Some(b) => b.clone(),
                None => tokio::task::spawn_blocking(build_release_starling).await??,
            };
            match cli.cell {
                None => {
                    eprintln!("starting {} standalone …", bin.display());
                    Server::spawn(&bin, &cli.server_env).await?
                }
                Some(n) => {
                    let need = |v: &Option<String>, what: &str| {
                        v.clone().with_context(|| {
                            format!("--cell needs --{what}-url (scripts/services.sh starts one)")
                        })
                    };
                    let services = CellServices {
                        database_url: need(&cli.database_url, "database")?,
                        redis_url: need(&cli.redis_url, "redis")?,
                        pulsar_url: need(&cli.pulsar_url, "pulsar")?,
                        pulsar_token: cli.pulsar_token.clone(),
                        pulsar_ca_file: cli.pulsar_ca_file.clone(),
                        pulsar_admin_url: cli.pulsar_admin_url.clone(),
                    };
                    eprintln!(
                        "starting a cell: {} control-plane and {n} × data-plane …",
                        bin.display()
                    );
                    Server::spawn_cell(&bin, n as usize, &services, &cli.server_env).await?
                }
            }
        }
    };
    eprintln!(
        "server {} (gateways {}; pids {:?})",
        server.base,
        server.gateways.join(" "),
        server.pids
    );

    let started = stats::now_us();
    let load_before = stats::loadavg();
    let procs = cli.procs as usize;
    let outcome = tokio::select! {
        r = run_scenario(&server, &cli.scenario, procs) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let stopped = server.stop().await;
    let (warnings, errors, first) = server.log_counts();
    eprintln!("server: {stopped}; {warnings} warning and {errors} error lines on its stderr");
    for line in first {
        eprintln!("  {line}");
    }
    let mut result = match outcome {
        Ok(v) => v,
        Err(e) => {
            let tail = server.log_tail();
            if !tail.is_empty() {
                eprintln!("server stderr (last lines):\n{tail}");
            }
            return Err(e);
        }
    };
    if errors > 0 {
        eprintln!("server stderr (last lines):\n{}", server.log_tail());
    }

    result["server"] = json!({
        "url": server.base,
        "gateways": server.gateways,
        "cell_nodes": server.cell_nodes,
        "binary": server.bin.as_ref().map(|b| b.display().to_string()),
        "quota_overrides": bench_quotas(),
        "stderr_warning_lines": warnings,
        "stderr_error_lines": errors,
        "stop": stopped,
    });
    result["machine"] = stats::machine();
    result["started_at_unix_us"] = json!(started);
    result["loadavg_1m"] = json!({"before": load_before, "after": stats::loadavg()});
    match &cli.scenario {
        Scenario::Idle(_) => idle::print_summary(&result),
        Scenario::Chat(_) => chat::print_summary(&result),
        Scenario::Room(_) => room::print_summary(&result),
        Scenario::Storm(_) => storm::print_summary(&result),
        Scenario::Worker => {}
    }
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn run_scenario(server: &Server, scenario: &Scenario, procs: usize) -> anyhow::Result<Value> {
    match scenario {
        Scenario::Worker => bail!("`worker` is started by starling-bench itself"),
        Scenario::Storm(a) => {
            storm::run(
                server,
                &StormOpts {
                    clients: a.clients as usize,
                    group_size: a.group_size as usize,
                    window: Duration::from_secs(a.window),
                    rate: f64::from(a.rate),
                    lead: Duration::from_secs(a.lead),
                    drain: Duration::from_secs(a.drain),
                    connect_rate: a.connect_rate,
                    in_flight: a.in_flight as usize,
                },
                procs,
            )
            .await
        }
        Scenario::Idle(a) => {
            idle::run(
                server,
                &IdleOpts {
                    connections: a.connections as usize,
                    per_user: a.per_user as usize,
                    rate: a.connect_rate,
                    in_flight: a.in_flight as usize,
                    settle: Duration::from_secs(a.settle),
                    hold: Duration::from_secs(a.hold),
                    retries: a.retries,
                },
                procs,
            )
            .await
        }
        Scenario::Room(a) => {
            room::run(
                server,
                &RoomOpts {
                    listeners: a.listeners as usize,
                    senders: a.senders as usize,
                    rate: f64::from(a.rate),
                    duration: Duration::from_secs(a.duration),
                    drain: Duration::from_secs(a.drain),
                    connect_rate: a.connect_rate,
                    slow: (a.listeners as usize * a.slow_percent as usize).div_ceil(100),
                    pad_bytes: a.pad_bytes as usize,
                },
            )
            .await
        }
        Scenario::Chat(a) => {
            chat::run(
                server,
                &ChatOpts {
                    pairs: a.pairs as usize,
                    rate: f64::from(a.rate),
                    duration: Duration::from_secs(a.duration),
                    drain: Duration::from_secs(a.drain),
                },
            )
            .await
        }
    }
}

//! Client worker processes: one process holds at most ~19,000 sockets (its open-file limit) and
//! one source address gives at most ~28,000 ephemeral ports, so `--procs N` spreads a scenario's
//! connections over N child processes of `starling-bench` itself (`starling-bench worker`, not
//! for direct use), worker `w` binding its sockets to `127.0.0.(2 + w)`.
//!
//! The parent ([`Pool`]) writes the worker's job as the first JSON line of its stdin, then
//! commands (`{"cmd": …}`), one per line; the worker answers with JSON lines on its stdout
//! (`{"event": …}`): a `progress` line every second, and one reply per command. Latency
//! histograms travel as bucket counts ([`super::client::histogram_to_json`]) and are merged
//! by the parent. A worker whose stdin closes exits (so a dying parent leaves no orphans).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// The source address of worker `w`: 127.0.0.2, 127.0.0.3, … (127.0.0.1 is the servers').
pub fn source_ip(w: usize) -> anyhow::Result<IpAddr> {
    if w > 250 {
        bail!("at most 251 worker processes (127.0.0.2 … 127.0.0.252)");
    }
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + w as u8)))
}

/// The worker processes of one run.
pub struct Pool {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::UnboundedReceiver<(usize, Value)>,
    /// Each worker's latest `progress` event.
    pub progress: Vec<Value>,
}

impl Pool {
    /// Starts one worker per job (`starling-bench worker`, this same executable) and hands each
    /// its job.
    pub async fn start(jobs: Vec<Value>) -> anyhow::Result<Pool> {
        let exe = std::env::current_exe().context("the path of starling-bench")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pool = Pool {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
            progress: vec![Value::Null; jobs.len()],
        };
        for (w, job) in jobs.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {w} ({})", exe.display()))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            let _ = tx.send((w, v));
                        }
                        Err(_) => eprintln!("[worker {w}] {line}"),
                    }
                }
                let _ = tx.send((w, json!({"event": "exit"})));
            });
            pool.stdins
                .push(child.stdin.take().context("worker stdin")?);
            pool.children.push(child);
            pool.send(w, &job).await?;
        }
        Ok(pool)
    }

    /// How many workers.
    fn len(&self) -> usize {
        self.children.len()
    }

    /// The workers' process ids (for their RSS and CPU).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    /// Sends one JSON line to worker `w`.
    pub async fn send(&mut self, w: usize, v: &Value) -> anyhow::Result<()> {
        let line = v.to_string() + "\n";
        self.stdins[w]
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("writing to worker {w}"))?;
        self.stdins[w].flush().await?;
        Ok(())
    }

    /// Sends the same command to every worker.
    pub async fn broadcast(&mut self, v: &Value) -> anyhow::Result<()> {
        for w in 0..self.len() {
            self.send(w, v).await?;
        }
        Ok(())
    }

    /// Waits until every worker has sent `event` (at most `timeout`), keeping `progress` up to
    /// date and calling `tick` with it every second. Returns the events in worker order.
    pub async fn gather(
        &mut self,
        event: &str,
        timeout: Duration,
        mut tick: impl FnMut(&[Value]),
    ) -> anyhow::Result<Vec<Value>> {
        let mut got: Vec<Option<Value>> = vec![None; self.len()];
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while got.iter().any(Option::is_none) {
            tokio::select! {
                m = self.rx.recv() => {
                    let Some((w, v)) = m else { bail!("every worker's output closed") };
                    match v["event"].as_str() {
                        Some("progress") => self.progress[w] = v,
                        Some("exit") if got[w].is_none() => {
                            bail!("worker {w} exited before `{event}`")
                        }
                        Some("error") => bail!("worker {w}: {}", v["message"]),
                        Some(e) if e == event => got[w] = Some(v),
                        _ => {}
                    }
                }
                _ = ticker.tick() => tick(&self.progress),
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("workers did not all answer `{event}` within {} s", timeout.as_secs())
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Keeps `progress` up to date for `d`, calling `tick` with it every second and once at
    /// the end.
    pub async fn pump(
        &mut self,
        d: Duration,
        mut tick: impl FnMut(&[Value]),
    ) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + d;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        loop {
            tokio::select! {
                m = self.rx.recv() => {
                    let Some((w, v)) = m else { bail!("every worker's output closed") };
                    match v["event"].as_str() {
                        Some("progress") => self.progress[w] = v,
                        Some("exit") => bail!("worker {w} exited"),
                        Some("error") => bail!("worker {w}: {}", v["message"]),
                        _ => {}
                    }
                }
                _ = ticker.tick() => tick(&self.progress),
                _ = tokio::time::sleep_until(end) => {
                    tick(&self.progress);
                    return Ok(());
                }
            }
        }
    }

    /// Waits for every worker to exit (after its last reply), killing those that take longer
    /// than 10 s.
    pub async fn finish(mut self) {
        self.stdins.clear(); // EOF on their stdin
        for mut c in self.children.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

/// The sum over `events` of the number field `key`.
pub fn sum(events: &[Value], key: &str) -> u64 {
    events.iter().filter_map(|e| e[key].as_u64()).sum()
}

/// Where a worker writes its events (a task writes them to stdout, one line each).
#[derive(Clone)]
pub struct Out(mpsc::UnboundedSender<Value>);

impl Out {
    /// Sends one event.
    pub fn emit(&self, v: Value) {
        let _ = self.0.send(v);
    }
}

/// A worker's commands: its stdin after the job line.
pub struct Commands(Lines<BufReader<Stdin>>);

impl Commands {
    /// The next command; `None` when the parent closed the pipe.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        match self.0.next_line().await? {
            None => Ok(None),
            Some(l) => Ok(Some(
                serde_json::from_str(&l).context("a command that is not JSON")?,
            )),
        }
    }
}

/// `starling-bench worker`: reads the job, runs it, and writes events until done.
pub async fn main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let job: Value = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .context("no job on stdin (this subcommand is for starling-bench itself)")?,
    )
    .context("the job is not JSON")?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(v) = rx.recv().await {
            let line = v.to_string() + "\n";
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let out = Out(tx);
    let cmds = Commands(lines);
    let r = match job["scenario"].as_str() {
        Some("idle") => super::idle::worker(&job, cmds, out.clone()).await,
        Some("storm") => super::storm::worker(&job, cmds, out.clone()).await,
        other => Err(anyhow::anyhow!("unknown worker scenario {other:?}")),
    };
    if let Err(e) = &r {
        out.emit(json!({"event": "error", "message": format!("{e:#}")}));
    }
    drop(out);
    let _ = writer.await;
    r
}

//! A TCP proxy between a node and PostgreSQL that injects faults at the one moment that
//! matters: the `COMMIT` of a transaction that wrote messages (the node's committer). It reads
//! the frontend protocol (type byte + length) to know which statements a connection runs:
//! `INSERT INTO message` arrives once per connection as a `Parse` of a named statement, then
//! as `Bind`s of that name.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

/// What the proxy does to the next committer `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every byte passes.
    None,
    /// Forward the `COMMIT`, let PostgreSQL commit, then cut the connection before its answer
    /// reaches the node (the outcome is ambiguous to the node).
    CutAfterCommit,
    /// Hold the `COMMIT` (and everything after it on that connection) until the fault is set
    /// back to `None`: a database that hangs.
    HangAtCommit,
}

pub struct PgProxy {
    /// `postgres://…` through the proxy.
    pub url: String,
    fault: watch::Sender<Fault>,
    /// How many committer `COMMIT`s met a fault.
    pub hits: Arc<AtomicUsize>,
}

impl PgProxy {
    /// A proxy in front of the PostgreSQL of `url`.
    pub async fn start(url: &str) -> PgProxy {
        let u = reqwest::Url::parse(url).expect("a database URL");
        let upstream = format!(
            "{}:{}",
            u.host_str().expect("a host"),
            u.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxied = u.clone();
        proxied.set_host(Some("127.0.0.1")).unwrap();
        proxied.set_port(Some(port)).unwrap();
        let (fault, rx) = watch::channel(Fault::None);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(client, server, rx.clone(), h.clone()));
            }
        });
        PgProxy {
            url: proxied.to_string(),
            fault,
            hits,
        }
    }

    /// Sets the fault for the committer `COMMIT`s from now on.
    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }
}

/// One frontend message's type and payload, split off `buf` when complete.
fn next_message(buf: &mut Vec<u8>, started: &mut bool) -> Option<(u8, Vec<u8>)> {
    if !*started {
        // The startup (and SSL request) messages have no type byte.
        if buf.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        if buf.len() < n {
            return None;
        }
        let body: Vec<u8> = buf.drain(..n).collect();
        // An SSLRequest (80877103) is followed by another untyped startup message.
        if !(n == 8 && body[4..8] == 80877103u32.to_be_bytes()) {
            *started = true;
        }
        return Some((0, body));
    }
    if buf.len() < 5 {
        return None;
    }
    let n = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
    if buf.len() < 1 + n {
        return None;
    }
    let m: Vec<u8> = buf.drain(..1 + n).collect();
    Some((m[0], m[5..].to_vec()))
}

/// The NUL-terminated strings at the start of a payload.
fn cstrings(p: &[u8], k: usize) -> Vec<String> {
    p.split(|b| *b == 0)
        .take(k)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut fault: watch::Receiver<Fault>,
    hits: Arc<AtomicUsize>,
) {
    let (mut cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(Mutex::new(cw));
    // Server to client: passes unless the connection is being cut.
    let cut = Arc::new(tokio::sync::Notify::new());
    let cut2 = cut.clone();
    let cw2 = cw.clone();
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                r = sr.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if cw2.lock().await.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
                _ = cut2.notified() => {
                    // The COMMIT went out: wait for PostgreSQL's answer, swallow it, and cut.
                    let _ = sr.read(&mut buf).await;
                    let _ = cw2.lock().await.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut pending = Vec::new();
    let mut started = false;
    let mut message_statements: HashSet<String> = HashSet::new();
    let mut writes_messages = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some((ty, payload)) = next_message(&mut pending, &mut started) {
            let mut raw = Vec::with_capacity(payload.len() + 5);
            if ty == 0 {
                raw = payload.clone();
            } else {
                raw.push(ty);
                raw.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
                raw.extend_from_slice(&payload);
            }
            match ty {
                b'P' => {
                    let s = cstrings(&payload, 2);
                    let is_msg = s.get(1).is_some_and(|q| q.contains("INSERT INTO message "));
                    if is_msg {
                        message_statements.insert(s[0].clone());
                        writes_messages = true;
                    }
                }
                b'B' => {
                    let s = cstrings(&payload, 2);
                    if s.get(1).is_some_and(|n| message_statements.contains(n)) {
                        writes_messages = true;
                    }
                }
                b'Q' => {
                    let q = cstrings(&payload, 1).remove(0);
                    let q = q.trim().to_ascii_uppercase();
                    if q.starts_with("COMMIT") && writes_messages {
                        writes_messages = false;
                        let f = *fault.borrow_and_update();
                        match f {
                            Fault::None => {}
                            Fault::CutAfterCommit => {
                                hits.fetch_add(1, Ordering::SeqCst);
                                let _ = sw.write_all(&raw).await;
                                cut.notify_one();
                                let _ = back.await;
                                return;
                            }
                            Fault::HangAtCommit => {
                                hits.fetch_add(1, Ordering::SeqCst);
                                while *fault.borrow_and_update() == Fault::HangAtCommit {
                                    if fault.changed().await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    } else if q.starts_with("BEGIN") || q.starts_with("ROLLBACK") {
                        writes_messages = false;
                    }
                }
                _ => {}
            }
            if sw.write_all(&raw).await.is_err() {
                return;
            }
        }
    }
    back.abort();
}

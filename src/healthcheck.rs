//! `starling healthcheck`: the container image's health probe. The runtime image has no shell and
//! no curl, so the binary probes itself: it reads the same configuration as the server (so
//! `STARLING_SERVER__LISTEN` tells it the port), sends one `GET` to loopback, and exits 0 on a 200.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use starling_control_plane::config::ControlPlaneConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to probe.
pub struct Options {
    /// The path to ask for (`/readyz` or `/healthz`).
    pub path: String,
    /// The port, when not the configured `server.listen`'s.
    pub port: Option<u16>,
    /// Config file, as given to the server.
    pub config: Option<PathBuf>,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Probes the local server; `Ok` only for a 200 answer.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.path.starts_with('/') || opts.path.bytes().any(|b| b.is_ascii_whitespace()) {
        bail!("--path: must start with '/' and hold no spaces");
    }
    let cfg: ControlPlaneConfig = starling_core::config::load(opts.config.as_deref())?;
    let listen = cfg.listen_addr()?;
    // A server listening on every interface is reached on loopback.
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, opts.port.unwrap_or(listen.port()));
    let status = tokio::time::timeout(opts.timeout, get_status(addr, &opts.path))
        .await
        .with_context(|| format!("no answer from {addr} within {:?}", opts.timeout))??;
    if status != 200 {
        bail!("GET http://{addr}{} answered {status}", opts.path);
    }
    println!("ok: GET http://{addr}{} answered 200", opts.path);
    Ok(())
}

/// One HTTP/1.1 `GET` on a fresh connection; returns the status code.
async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    // The status line fits in the first bytes; no need to read the body.
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 16 {
        let m = s.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP answer from {addr}: {head:?}"))?;
    Ok(code)
}

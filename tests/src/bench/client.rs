//! The client side of a connection: a WebSocket to a gateway, opened from a chosen loopback
//! source address (so that several client processes each get their own ~28k ephemeral ports),
//! and the wait for the server's `hello`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::idle::{client_config, connect_error};
#[cfg(test)]
use super::stats::histogram;

/// A client WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (a `ws://` loopback URL) from `source` (port chosen by the
/// kernel) when given, and waits for the `hello` frame, at most 15 s. The error is short enough
/// to count failures by.
pub async fn connect_hello(url: &str, source: Option<IpAddr>) -> Result<Ws, String> {
    let connect = async {
        let addr = starling_e2e::url_addr(url);
        let sock = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            sock.bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let tcp = sock
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
            Some(client_config()),
        )
        .await
        .map_err(|e| connect_error(&e))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "hello" {
                        return Ok(ws);
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(format!(
                        "closed before hello ({})",
                        c.map(|c| u16::from(c.code)).unwrap_or(1005)
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(connect_error(&e)),
                None => return Err("closed before hello".into()),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(r) => r,
        Err(_) => Err("no hello within 15 s".into()),
    }
}

/// A histogram as JSON: `[[value, count], …]` of its recorded buckets (exact: every value of a
/// bucket is equivalent at the histogram's precision), to send between processes.
pub fn histogram_to_json(h: &Histogram<u64>) -> Value {
    json!(
        h.iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect::<Vec<_>>()
    )
}

/// Adds a histogram written by [`histogram_to_json`] to `into`.
pub fn merge_histogram_json(into: &mut Histogram<u64>, v: &Value) {
    for pair in v.as_array().into_iter().flatten() {
        if let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) {
            into.saturating_record_n(value, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_from_json(v: &Value) -> Histogram<u64> {
        let mut h = histogram();
        merge_histogram_json(&mut h, v);
        h
    }

    #[test]
    fn a_histogram_survives_json_and_merges() {
        let mut a = histogram();
        for v in [1, 5, 900, 1_234, 20_000, 20_001, 3_000_000] {
            a.record(v).unwrap();
        }
        let mut b = histogram();
        b.record_n(40, 7).unwrap();
        let mut merged = histogram_from_json(&histogram_to_json(&a));
        assert_eq!(merged.len(), a.len());
        assert_eq!(merged.max(), a.max());
        assert_eq!(
            merged.value_at_quantile(0.5),
            a.value_at_quantile(0.5),
            "same buckets"
        );
        merge_histogram_json(&mut merged, &histogram_to_json(&b));
        assert_eq!(merged.len(), a.len() + 7);
        assert_eq!(merged.count_at(40), 7);
    }
}

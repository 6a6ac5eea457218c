//! Usage reports: what a data-plane node counted for one app in one hour, sent to the control
//! plane, which aggregates them (see `starling_control_plane::service::usage`).
//!
//! Every report has an id chosen by the node when it is cut. A node re-sends a report (same id)
//! until the transport confirms it, and the control plane records report ids, so a report sent
//! twice counts once. In standalone the transport is in-process ([`InProcessUsageFeed`]: a send
//! is confirmed once the report is aggregated); in a cell it is a Pulsar topic
//! ([`crate::pulsar::PulsarUsageFeed`]: confirmed once the broker has it; the control plane acks
//! a message only after aggregating it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::id::AppId;

/// What one node counted for one app in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Unique per report; re-sends keep it.
    pub id: String,
    /// The app.
    pub app_id: AppId,
    /// The node that counted.
    pub node_id: String,
    /// Start of the hour the counts belong to.
    pub hour: DateTime<Utc>,
    /// Messages sent.
    pub messages: u64,
    /// Server API requests.
    pub api_calls: u64,
    /// Users active (connected or sending) in this hour on this node.
    pub active_users: Vec<String>,
    /// Most WebSocket connections of the app open at once on this node in this hour.
    pub peak_connections: u64,
    /// Bytes of message content stored in this hour.
    pub stored_bytes: u64,
}

/// Sending or receiving reports failed.
#[derive(Debug, thiserror::Error)]
#[error("usage feed: {0}")]
pub struct UsageError(pub String);

/// A received report, the cell it came from when the transport knows it (the cell's own usage
/// topic; `None` in process), and how to confirm it: send `true` once it is aggregated (or
/// refused for good), `false` to have it delivered again later.
pub type Received = (UsageReport, Option<String>, oneshot::Sender<bool>);

/// The usage transport from cells to the control plane.
#[async_trait]
pub trait UsageFeed: Send + Sync + 'static {
    /// Sends a report; `Ok` once the transport has it.
    async fn publish(&self, report: &UsageReport) -> Result<(), UsageError>;
    /// Takes the receiving side (the control plane; one subscriber).
    async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, UsageError>;
}

/// The in-process transport of a standalone process. A send waits until the receiver confirmed
/// the report, so a report the control plane failed to store is re-sent by the node.
pub struct InProcessUsageFeed {
    tx: mpsc::Sender<Received>,
    rx: tokio::sync::Mutex<Option<mpsc::Receiver<Received>>>,
}

impl Default for InProcessUsageFeed {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        Self {
            tx,
            rx: tokio::sync::Mutex::new(Some(rx)),
        }
    }
}

impl InProcessUsageFeed {
    /// A feed with no subscriber yet (sends wait for one).
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UsageFeed for InProcessUsageFeed {
    async fn publish(&self, report: &UsageReport) -> Result<(), UsageError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((report.clone(), None, ack))
            .await
            .map_err(|_| UsageError("the control plane stopped receiving usage".into()))?;
        match done.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(UsageError(
                "the control plane did not store the report".into(),
            )),
            Err(_) => Err(UsageError("the report was dropped unconfirmed".into())),
        }
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, UsageError> {
        self.rx
            .lock()
            .await
            .take()
            .ok_or_else(|| UsageError("the usage feed has a subscriber already".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str) -> UsageReport {
        UsageReport {
            id: id.into(),
            app_id: AppId::generate(),
            node_id: "n1".into(),
            hour: crate::clock::hour_start(Utc::now()),
            messages: 3,
            api_calls: 1,
            active_users: vec!["u1".into()],
            peak_connections: 2,
            stored_bytes: 10,
        }
    }

    #[tokio::test]
    async fn in_process_send_waits_for_confirmation() {
        let feed = std::sync::Arc::new(InProcessUsageFeed::new());
        let mut rx = feed.subscribe().await.unwrap();
        assert!(feed.subscribe().await.is_err(), "one subscriber only");
        let f = feed.clone();
        let sent = tokio::spawn(async move { f.publish(&report("r1")).await });
        let (r, _, ack) = rx.recv().await.unwrap();
        assert_eq!(r.id, "r1");
        ack.send(false).unwrap();
        assert!(
            sent.await.unwrap().is_err(),
            "an unstored report is an error"
        );
        let f = feed.clone();
        let sent = tokio::spawn(async move { f.publish(&report("r2")).await });
        let (_, _, ack) = rx.recv().await.unwrap();
        ack.send(true).unwrap();
        sent.await.unwrap().unwrap();
    }
}

//! The bus between gateway nodes: each node has one inbox; a delivery names the users on that
//! node it is for and carries the frame already serialized. In standalone the bus is in-process;
//! in a cell it is Apache Pulsar.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A frame for some users of one app, all connected to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The app.
    pub app_id: String,
    /// The users to push to.
    pub users: Vec<String>,
    /// The frame, as JSON text.
    pub frame: Arc<str>,
    /// W3C `traceparent` of the operation that caused it, so one trace spans the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// For a new message: its conversation and seq, so the receiving node can push a
    /// conversation's messages in order ([`crate::sequencer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Set when the delivery ends sessions instead of carrying a frame: the users' matching
    /// connections on the node are closed ([`crate::hub::Hub::end`]); `frame` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<crate::hub::Ending>,
}

/// Where a delivery stands in its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The conversation.
    pub conversation_id: String,
    /// The message's seq in it.
    pub seq: i64,
}

/// Publishing or subscribing failed.
#[derive(Debug, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends a delivery to a node's inbox.
    async fn publish(&self, node: &str, delivery: Delivery) -> Result<(), BusError>;
    /// Takes a node's inbox (one subscriber per node).
    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Delivery>, BusError>;
}

/// The in-process bus of a standalone process.
#[derive(Default)]
pub struct InProcessBus {
    inboxes: Mutex<HashMap<String, mpsc::Sender<Delivery>>>,
}

impl InProcessBus {
    /// A bus with no inboxes yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, node: &str, delivery: Delivery) -> Result<(), BusError> {
        let tx = self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        match tx {
            // A full inbox waits: deliveries are never dropped on the bus.
            Some(tx) => tx
                .send(delivery)
                .await
                .map_err(|_| BusError(format!("node {node} is gone"))),
            None => Err(BusError(format!("no inbox for node {node}"))),
        }
    }

    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let (tx, rx) = mpsc::channel(8192);
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), tx);
        Ok(rx)
    }
}

/// The one behaviour suite every [`Bus`] must pass.
pub mod conformance {
    use super::*;
    use std::time::Duration;

    /// Runs every check; node names are unique per run.
    pub async fn run(bus: &dyn Bus) {
        let a = format!("node-{}", ulid::Ulid::new());
        let b = format!("node-{}", ulid::Ulid::new());
        let mut ra = bus.subscribe(&a).await.unwrap();
        let mut rb = bus.subscribe(&b).await.unwrap();
        let d = |i: usize| Delivery {
            app_id: "app".into(),
            users: vec![format!("u{i}")],
            frame: Arc::from(format!("{{\"i\":{i}}}")),
            // The trace context travels with the delivery.
            trace: i
                .is_multiple_of(2)
                .then(|| format!("00-{:032x}-{:016x}-01", i + 1, i + 1)),
            // So does a new message's place in its conversation.
            order: i.is_multiple_of(3).then(|| Order {
                conversation_id: format!("conv{i}"),
                seq: i as i64,
            }),
            // And an ending of sessions.
            end: i.is_multiple_of(5).then(|| crate::hub::Ending {
                why: crate::directory::SessionEnd::TokenRevoked,
                issued_until: Some(i as i64),
                token_id: Some(format!("utk_{i}")),
            }),
        };
        for i in 0..100 {
            bus.publish(&a, d(i)).await.unwrap();
        }
        bus.publish(&b, d(1000)).await.unwrap();
        for i in 0..100 {
            let got = tokio::time::timeout(Duration::from_secs(10), ra.recv())
                .await
                .expect("in time")
                .expect("open");
            assert_eq!(got, d(i), "in order, to the right node");
        }
        let got = tokio::time::timeout(Duration::from_secs(10), rb.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, d(1000));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), ra.recv())
                .await
                .is_err(),
            "nothing extra"
        );
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_process_bus_conforms() {
        super::conformance::run(&super::InProcessBus::new()).await;
    }
}

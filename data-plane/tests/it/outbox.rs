//! The outbox: a message committed while the bus refuses is still delivered, once, when the bus
//! is back (the relay publishes what the sender's publish did not confirm).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use starling_core::limits::Limits;
use starling_data_plane::bus::{Bus, BusError, Delivery, InProcessBus};
use tokio::sync::mpsc;

use crate::backend_tests;
use crate::harness::{Backend, Cell};

/// A bus that refuses to publish while `down` is set (a broker outage, or a node that died
/// between commit and publish).
struct FlakyBus {
    inner: InProcessBus,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Bus for FlakyBus {
    async fn publish(&self, node: &str, d: Delivery) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError("broker unavailable (test)".into()));
        }
        self.inner.publish(node, d).await
    }
    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Delivery>, BusError> {
        self.inner.subscribe(node).await
    }
}

backend_tests!(committed_messages_survive_a_failed_publish);

async fn committed_messages_survive_a_failed_publish(b: Backend) {
    let down = Arc::new(AtomicBool::new(false));
    let bus = Arc::new(FlakyBus {
        inner: InProcessBus::new(),
        down: down.clone(),
    });
    let cell = Cell::start_full(b, |_| {}, Some(bus)).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;

    down.store(true, Ordering::SeqCst);
    let r = a.ok(json!({"type": "send", "conversation_id": cid, "client_msg_id": "during-outage", "text": "are you there?"})).await;
    let id = r["message"]["id"].clone();
    assert_eq!(r["message"]["seq"], 1, "acknowledged: it is committed");
    bob.none(|f| f["type"] == "message.new", Duration::from_millis(500))
        .await;
    down.store(false, Ordering::SeqCst);

    let got = bob.event("message.new").await;
    assert_eq!(got["message"]["id"], id, "the relay delivered it");
    // Nothing else arrives. The same message again is allowed: in a cell every node runs the
    // relay, so two may publish it (at least once; clients dedupe by id).
    bob.none(
        |f| f["type"] == "message.new" && f["message"]["id"] != id,
        Duration::from_millis(1500),
    )
    .await;
    let hist = cell
        .node
        .messaging
        .history(app.cfg.app_id.as_str(), &cid, &Default::default())
        .await
        .unwrap();
    assert_eq!(hist.messages.len(), 1);
}

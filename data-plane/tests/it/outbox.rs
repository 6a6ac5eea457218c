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

backend_tests!(
    orphaned_outbox_rows_do_not_stop_the_relay,
    two_relays_never_publish_the_same_row,
);

/// Outbox rows of an app no node serves (moved to another cell, or deleted), older than
/// anything else: more than the relay reads at once.
async fn orphaned_outbox_rows_do_not_stop_the_relay(b: Backend) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use starling_data_plane::entity::outbox;
    let down = Arc::new(AtomicBool::new(false));
    let bus = Arc::new(FlakyBus {
        inner: InProcessBus::new(),
        down: down.clone(),
    });
    let cell = Cell::start_full(b, |_| {}, Some(bus)).await;
    let db = &cell.node.messaging.db;
    let ghost = starling_core::id::AppId::generate().into_string();
    let old = chrono::Utc::now() - chrono::Duration::hours(1);
    for chunk in (0..250).collect::<Vec<_>>().chunks(50) {
        outbox::Entity::insert_many(chunk.iter().map(|i| outbox::ActiveModel {
            app_id: sea_orm::Set(ghost.clone()),
            message_id: sea_orm::Set(format!("msg_ghost{i:05}")),
            conversation_id: sea_orm::Set("cnv_ghost".into()),
            seq: sea_orm::Set(*i as i64 + 1),
            created_at: sea_orm::Set(old),
        }))
        .exec_without_returning(db)
        .await
        .unwrap();
    }
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let mut bob = cell.ws(&app, "bob").await;
    down.store(true, Ordering::SeqCst);
    let r = a
        .ok(json!({"type": "send", "conversation_id": cid, "text": "behind the orphans"}))
        .await;
    down.store(false, Ordering::SeqCst);
    let got = bob.event("message.new").await;
    assert_eq!(
        got["message"]["id"], r["message"]["id"],
        "the relay got to it"
    );
    let left = outbox::Entity::find()
        .filter(outbox::Column::AppId.eq(ghost.as_str()))
        .all(db)
        .await
        .unwrap();
    assert_eq!(
        left.len(),
        250,
        "the orphans are kept for a node that serves their app"
    );
    outbox::Entity::delete_many()
        .filter(outbox::Column::AppId.eq(ghost.as_str()))
        .exec(db)
        .await
        .unwrap();
}

/// Every node runs the relay; each unconfirmed message is published by one of them.
async fn two_relays_never_publish_the_same_row(b: Backend) {
    let down = Arc::new(AtomicBool::new(false));
    let bus = Arc::new(FlakyBus {
        inner: InProcessBus::new(),
        down: down.clone(),
    });
    let cell = Cell::start_full(b, |_| {}, Some(bus)).await;
    let app = cell.app(Limits::default()).await;
    let cid = cell.alice_and_bob(&app).await;
    let mut a = cell.ws(&app, "alice").await;
    let _bob = cell.ws(&app, "bob").await;
    down.store(true, Ordering::SeqCst);
    for i in 0..5 {
        a.ok(json!({"type": "send", "conversation_id": cid, "text": format!("m{i}")}))
            .await;
    }
    down.store(false, Ordering::SeqCst);
    // Two nodes' relays at the same moment, for rows older than 1 s (the nodes' own relays
    // wait 3 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m1 = cell.nodes[0].messaging.clone();
    let m2 = cell.nodes[cell.nodes.len() - 1].messaging.clone();
    let second = Duration::from_secs(1);
    let (r1, r2) = tokio::join!(m1.relay_outbox(second, 200), m2.relay_outbox(second, 200));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1 + r2, 5, "each row published once ({r1} + {r2})");
}

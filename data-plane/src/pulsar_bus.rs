//! The bus over Apache Pulsar: one inbox topic per node (`<prefix>inbox-<node>`), a durable
//! exclusive subscription per node, producers batched per destination. A delivery is acked only
//! after it was pushed to the node's connections, so a node that restarts gets what it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use pulsar::{ConsumerOptions, SubType, TokioExecutor};
use starling_core::pulsar::Client;
use tokio::sync::{Mutex, mpsc};

use crate::bus::{Bus, BusError, Delivery};

/// The Pulsar bus.
pub struct PulsarBus {
    client: Client,
    prefix: String,
    producers: Mutex<HashMap<String, Arc<Mutex<pulsar::Producer<TokioExecutor>>>>>,
}

fn berr(e: impl std::fmt::Display) -> BusError {
    BusError(e.to_string())
}

impl PulsarBus {
    /// A bus on `client`, with topics named `<prefix>inbox-<node>`
    /// (e.g. prefix `persistent://public/default/starling-`).
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            producers: Mutex::new(HashMap::new()),
        }
    }

    fn topic(&self, node: &str) -> String {
        format!("{}inbox-{node}", self.prefix)
    }

    async fn producer(
        &self,
        node: &str,
    ) -> Result<Arc<Mutex<pulsar::Producer<TokioExecutor>>>, BusError> {
        let mut m = self.producers.lock().await;
        if let Some(p) = m.get(node) {
            return Ok(p.clone());
        }
        let p = self
            .client
            .producer()
            .with_topic(self.topic(node))
            .with_name(format!("to-{node}-{}", ulid::Ulid::new()))
            .build()
            .await
            .map_err(berr)?;
        let p = Arc::new(Mutex::new(p));
        m.insert(node.to_owned(), p.clone());
        Ok(p)
    }
}

#[async_trait]
impl Bus for PulsarBus {
    async fn publish(&self, node: &str, delivery: Delivery) -> Result<(), BusError> {
        let mut properties = std::collections::HashMap::new();
        if let Some(tp) = &delivery.trace {
            // Trace context in the message properties, where Pulsar tooling looks for it.
            properties.insert("traceparent".to_owned(), tp.clone());
        }
        let msg = pulsar::producer::Message {
            payload: serde_json::to_vec(&Delivery {
                trace: None,
                ..delivery
            })
            .map_err(berr)?,
            properties,
            ..Default::default()
        };
        let p = self.producer(node).await?;
        let receipt = p.lock().await.send_non_blocking(msg).await.map_err(berr)?;
        receipt.await.map_err(berr)?;
        Ok(())
    }

    async fn subscribe(&self, node: &str) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let mut consumer = self
            .client
            .consumer()
            .with_topic(self.topic(node))
            .with_subscription(format!("node-{node}"))
            .with_subscription_type(SubType::Failover)
            .with_consumer_name(format!("node-{node}-{}", ulid::Ulid::new()))
            .with_options(ConsumerOptions::default().durable(true))
            .build::<Vec<u8>>()
            .await
            .map_err(berr)?;
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(async move {
            loop {
                match consumer.try_next().await {
                    Ok(Some(msg)) => {
                        match serde_json::from_slice::<Delivery>(&msg.payload.data) {
                            Ok(mut d) => {
                                d.trace = msg
                                    .metadata()
                                    .properties
                                    .iter()
                                    .find(|kv| kv.key == "traceparent")
                                    .map(|kv| kv.value.clone());
                                if tx.send(d).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "unreadable delivery skipped"),
                        }
                        if let Err(e) = consumer.ack(&msg).await {
                            tracing::warn!(error = %e, "ack failed; the delivery may come again");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "inbox read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(rx)
    }
}

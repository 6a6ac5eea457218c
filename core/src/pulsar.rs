//! Apache Pulsar: the client, and the app-config feed as a compacted topic.
//!
//! The feed topic is keyed by app id, so topic compaction keeps the latest configuration of
//! every app. A [`PulsarFeed`] reads the topic from the start (compacted view) in a background
//! task, keeps the latest update per app, and broadcasts every update it reads: the same
//! behaviour as the in-process feed, over the network, for every node of every cell.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, Pulsar, TokioExecutor};
use tokio::sync::{Mutex, broadcast, watch};

use crate::appconfig::{ConfigFeed, ConfigUpdate, FeedError};
use crate::id::AppId;

/// A Pulsar client (cheap to clone).
pub type Client = Pulsar<TokioExecutor>;

/// Connects to a broker (`pulsar://host:6650`), failing after `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Client> {
    let fut = Pulsar::builder(url, TokioExecutor).build();
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to Pulsar at {url}"))??)
}

fn ferr(e: impl std::fmt::Display) -> FeedError {
    FeedError(e.to_string())
}

/// The app-config feed on a compacted Pulsar topic.
pub struct PulsarFeed {
    topic: String,
    producer: Mutex<pulsar::Producer<TokioExecutor>>,
    latest: Arc<RwLock<HashMap<AppId, ConfigUpdate>>>,
    tx: broadcast::Sender<ConfigUpdate>,
    ready: watch::Receiver<bool>,
}

impl PulsarFeed {
    /// Opens the feed on `topic` (e.g. `persistent://public/default/starling-app-config`) and
    /// starts following it from the beginning.
    pub async fn open(client: &Client, topic: &str) -> anyhow::Result<Arc<Self>> {
        let producer = client
            .producer()
            .with_topic(topic)
            .with_name(format!("app-config-{}", ulid::Ulid::new()))
            .build()
            .await?;
        let mut reader = client
            .reader()
            .with_topic(topic)
            .with_consumer_name(format!("app-config-reader-{}", ulid::Ulid::new()))
            .with_options(
                ConsumerOptions::default()
                    .read_compacted(true)
                    .durable(false)
                    .with_initial_position(InitialPosition::Earliest),
            )
            .into_reader::<Vec<u8>>()
            .await?;
        let last = reader.get_last_message_id().await.ok();
        let latest: Arc<RwLock<HashMap<AppId, ConfigUpdate>>> = Arc::default();
        let (tx, _) = broadcast::channel(4096);
        let (ready_tx, ready) = watch::channel(false);
        // An empty topic reports a last id with entry_id u64::MAX (or none): nothing to wait for.
        let empty = last
            .as_ref()
            .is_none_or(|l| l.entry_id == u64::MAX || l.ledger_id == u64::MAX);
        if empty {
            let _ = ready_tx.send(true);
        }
        let (l2, t2) = (latest.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                match reader.try_next().await {
                    Ok(Some(msg)) => {
                        let id = msg.message_id().clone();
                        match serde_json::from_slice::<ConfigUpdate>(&msg.payload.data) {
                            Ok(u) => {
                                {
                                    let mut m = l2.write().unwrap_or_else(|p| p.into_inner());
                                    if m.get(u.app_id())
                                        .is_none_or(|old| old.version() <= u.version())
                                    {
                                        m.insert(u.app_id().clone(), u.clone());
                                    }
                                }
                                let _ = t2.send(u);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable app-config message skipped")
                            }
                        }
                        if let Some(last) = &last
                            && (id.ledger_id, id.entry_id) >= (last.ledger_id, last.entry_id)
                        {
                            let _ = ready_tx.send(true);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "app-config feed read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Arc::new(Self {
            topic: topic.to_owned(),
            producer: Mutex::new(producer),
            latest,
            tx,
            ready,
        }))
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait]
impl ConfigFeed for PulsarFeed {
    async fn publish(&self, update: ConfigUpdate) -> Result<(), FeedError> {
        let msg = pulsar::producer::Message {
            payload: serde_json::to_vec(&update).map_err(ferr)?,
            // The compaction key: the latest message per app survives compaction.
            partition_key: Some(update.app_id().to_string()),
            ..Default::default()
        };
        let receipt = self
            .producer
            .lock()
            .await
            .send_non_blocking(msg)
            .await
            .map_err(ferr)?;
        receipt.await.map_err(ferr)?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<ConfigUpdate>, FeedError> {
        let mut ready = self.ready.clone();
        tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
            .await
            .map_err(|_| ferr("timed out reading the app-config topic to its end"))?
            .map_err(ferr)?;
        Ok(self
            .latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    fn updates(&self) -> broadcast::Receiver<ConfigUpdate> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the Pulsar started by `scripts/test` (`TEST_PULSAR_URL`); fails loudly without it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pulsar_feed_conforms() {
        let url = std::env::var("TEST_PULSAR_URL").expect(
            "TEST_PULSAR_URL is not set: run the tests with scripts/test, which starts Pulsar",
        );
        let client = connect(&url, Duration::from_secs(30))
            .await
            .expect("connect to Pulsar");
        let topic = format!(
            "persistent://public/default/test-app-config-{}",
            ulid::Ulid::new()
        );
        let feed = PulsarFeed::open(&client, &topic).await.expect("open feed");
        crate::appconfig::conformance::run(feed.as_ref()).await;

        // A second reader, opened later, rebuilds the same view from the topic.
        let again = PulsarFeed::open(&client, &topic).await.unwrap();
        let mut a: Vec<_> = feed
            .snapshot()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.app_id().clone(), u.version()))
            .collect();
        let mut b: Vec<_> = again
            .snapshot()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.app_id().clone(), u.version()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "a late reader sees the latest update of every app");
    }
}

//! Apache Pulsar: the client, the provisioning of Starling's tenant, namespace and topic policies
//! through Pulsar's admin REST API, and the app-config feed as a compacted topic.
//!
//! Each cell has its own feed topic ([`feed_topic`]), keyed by app id, so topic compaction keeps
//! the latest configuration of every app placed on that cell. A [`PulsarFeed`] reads the topic
//! from the start (compacted view) in a background task, keeps the latest update per app, and
//! broadcasts every update it reads: the same behaviour as the in-process feed, over the
//! network, for every node of the cell. The control plane publishes through
//! [`PulsarCellFeeds`], one producer per cell topic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, Pulsar, TokioExecutor};
use tokio::sync::{Mutex, broadcast, watch};

use crate::appconfig::{CellFeeds, ConfigFeed, FeedError, SignedUpdate};
use crate::id::AppId;

mod admin;
#[cfg(test)]
mod authz_tests;
pub mod probe;

pub use admin::{
    CellTopics, Provisioned, cell_role, cell_topic_prefix, grant_cell, grant_control_plane,
    provision, provision_cell, provision_feed_topic,
};

/// A Pulsar client (cheap to clone).
pub type Client = Pulsar<TokioExecutor>;

/// How a client proves who it is to Pulsar, and which CA it trusts for the broker's TLS
/// certificate. Used for the binary protocol ([`connect`]) and the admin REST API alike.
#[derive(Clone, Default)]
pub struct PulsarAuth {
    /// A token (JWT) for Pulsar's `AuthenticationProviderToken`: its role is what the broker
    /// authorizes. `None`: no authentication (only a broker without it accepts that).
    pub token: Option<String>,
    /// PEM file of the CA(s) that signed the broker's certificate, trusted in addition to the
    /// public web roots (for `pulsar+ssl://` and `https://` admin URLs).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PulsarAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Connects to a broker (`pulsar+ssl://host:6651`, or `pulsar://host:6650` without TLS) with
/// `auth`, failing after `timeout`. TLS always verifies the broker's certificate and that it
/// names the host of `url` (rustls does not allow otherwise; the flags below say so for
/// other TLS back-ends too).
pub async fn connect(url: &str, auth: &PulsarAuth, timeout: Duration) -> anyhow::Result<Client> {
    let mut b = Pulsar::builder(url, TokioExecutor);
    if let Some(t) = &auth.token {
        b = b.with_auth(pulsar::Authentication {
            name: "token".into(),
            data: t.clone().into_bytes(),
        });
    }
    if let Some(ca) = &auth.ca_file {
        b = b.with_certificate_chain_file(ca).map_err(|e| {
            anyhow::anyhow!("pulsar.tls_ca_file: cannot read {}: {e}", ca.display())
        })?;
    }
    let fut = b
        .with_allow_insecure_connection(false)
        .with_tls_hostname_verification_enabled(true)
        .build();
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to Pulsar at {url}"))??)
}

/// An HS256 token for `role` (claim `sub`), signed with the broker's secret key, without
/// expiry: what `pulsar tokens create --secret-key … --subject ROLE` makes. For tests and
/// development brokers (scripts/pulsar.sh); production tokens come from the operator's tooling.
pub fn hs256_token(secret: &[u8], role: &str) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": role }),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}

fn ferr(e: impl std::fmt::Display) -> FeedError {
    FeedError(e.to_string())
}

/// The app-config feed on a compacted Pulsar topic.
pub struct PulsarFeed {
    client: Client,
    topic: String,
    // Made on the first publish: a cell only reads the feed, and its role may not produce on it.
    producer: Mutex<Option<pulsar::Producer<TokioExecutor>>>,
    latest: Arc<RwLock<HashMap<AppId, SignedUpdate>>>,
    tx: broadcast::Sender<SignedUpdate>,
    ready: watch::Receiver<bool>,
}

impl PulsarFeed {
    /// Opens the feed on `topic` (e.g. `persistent://public/default/starling-app-config`) and
    /// starts following it from the beginning.
    pub async fn open(client: &Client, topic: &str) -> anyhow::Result<Arc<Self>> {
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
        let latest: Arc<RwLock<HashMap<AppId, SignedUpdate>>> = Arc::default();
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
                        match serde_json::from_slice::<SignedUpdate>(&msg.payload.data) {
                            Ok(u) => {
                                // Last message per app wins, as compaction keeps it; the
                                // version is checked by the nodes, after the signature.
                                l2.write()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(u.app_id().clone(), u.clone());
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
            client: client.clone(),
            topic: topic.to_owned(),
            producer: Mutex::new(None),
            latest,
            tx,
            ready,
        }))
    }

    /// A feed that only publishes on `topic` (the control plane's side): no reader, so its
    /// snapshot is empty and it sees no updates.
    pub fn publisher(client: &Client, topic: &str) -> Arc<Self> {
        Arc::new(Self {
            client: client.clone(),
            topic: topic.to_owned(),
            producer: Mutex::new(None),
            latest: Arc::default(),
            tx: broadcast::channel(1).0,
            ready: watch::channel(true).1,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// The app-config topic of the cell `cluster_id` under `topic_prefix`.
pub fn feed_topic(topic_prefix: &str, cluster_id: &str) -> String {
    format!("{topic_prefix}app-config-{}", cluster_id.to_lowercase())
}

/// The control plane's publishers, one per cell's app-config topic, opened on first use. When an
/// admin API is configured, first use also provisions the cell ([`provision_cell`]): its feed's
/// policies, its namespace and its role's grants.
pub struct PulsarCellFeeds {
    client: Client,
    topic_prefix: String,
    admin: Option<(String, PulsarAuth, u64)>,
    feeds: Mutex<HashMap<String, Arc<dyn ConfigFeed>>>,
}

impl PulsarCellFeeds {
    /// Publishers under `topic_prefix`; with `admin` (`(admin_url, auth, compaction
    /// threshold)`), each new cell topic gets the feed's policies before its first message.
    pub fn new(
        client: Client,
        topic_prefix: &str,
        admin: Option<(String, PulsarAuth, u64)>,
    ) -> Self {
        Self {
            client,
            topic_prefix: topic_prefix.to_owned(),
            admin,
            feeds: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl CellFeeds for PulsarCellFeeds {
    async fn feed(&self, cluster_id: &str) -> Result<Arc<dyn ConfigFeed>, FeedError> {
        let mut feeds = self.feeds.lock().await;
        if let Some(f) = feeds.get(cluster_id) {
            return Ok(f.clone());
        }
        let topic = feed_topic(&self.topic_prefix, cluster_id);
        if let Some((admin, auth, threshold)) = &self.admin {
            provision_cell(admin, auth, &self.topic_prefix, cluster_id, *threshold)
                .await
                .map_err(ferr)?;
        }
        let feed: Arc<dyn ConfigFeed> = PulsarFeed::publisher(&self.client, &topic);
        feeds.insert(cluster_id.to_owned(), feed.clone());
        Ok(feed)
    }
}

#[async_trait]
impl ConfigFeed for PulsarFeed {
    async fn publish(&self, update: SignedUpdate) -> Result<(), FeedError> {
        let msg = pulsar::producer::Message {
            payload: serde_json::to_vec(&update).map_err(ferr)?,
            // The compaction key: the latest message per app survives compaction.
            partition_key: Some(update.app_id().to_string()),
            ..Default::default()
        };
        let mut p = self.producer.lock().await;
        if p.is_none() {
            *p = Some(
                self.client
                    .producer()
                    .with_topic(&self.topic)
                    .with_name(format!("app-config-{}", ulid::Ulid::new()))
                    .build()
                    .await
                    .map_err(ferr)?,
            );
        }
        let producer = p.as_mut().expect("producer set above");
        let receipt = match producer.send_non_blocking(msg).await {
            Ok(r) => r,
            Err(e) => {
                // A fresh producer next time.
                *p = None;
                return Err(ferr(e));
            }
        };
        drop(p);
        receipt.await.map_err(ferr)?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<SignedUpdate>, FeedError> {
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

    fn updates(&self) -> broadcast::Receiver<SignedUpdate> {
        self.tx.subscribe()
    }
}

/// The usage topic of the cell `cluster_id` under `topic_prefix`: its nodes publish there.
pub fn usage_topic(topic_prefix: &str, cluster_id: &str) -> String {
    format!("{topic_prefix}usage-{}", cluster_id.to_lowercase())
}

/// Usage reports from cells to the control plane on Pulsar topics (see [`crate::usage`]).
/// Each cell's nodes publish on their cell's topic ([`usage_topic`]); the control plane reads
/// every cell's topic with one shared durable subscription and acks a report only after
/// aggregating it, so a report is never lost between the planes (and a redelivered one is
/// recognised by its id). The topic a report came on names the cell that sent it, so the
/// control plane can refuse a cell's report about an app placed on another cell (with the
/// broker's authorization, only a cell's nodes may produce on its topic).
pub struct PulsarUsageFeed {
    client: Client,
    topic: String,
    /// For the control plane: read every `<prefix>usage-<cell>` topic (not only `topic`).
    cells_prefix: Option<String>,
    producer: Mutex<Option<pulsar::Producer<TokioExecutor>>>,
}

impl PulsarUsageFeed {
    /// The feed on one `topic` (a cell node's: [`usage_topic`]).
    pub fn new(client: Client, topic: &str) -> Self {
        Self {
            client,
            topic: topic.to_owned(),
            cells_prefix: None,
            producer: Mutex::new(None),
        }
    }

    /// The control plane's side: reads the usage topic of every cell under `topic_prefix`
    /// (found by pattern, new cells' topics within a minute), each report with the cell it came
    /// from.
    pub fn for_cells(client: Client, topic_prefix: &str) -> Self {
        let prefix = format!("{topic_prefix}usage-");
        Self {
            client,
            topic: prefix.clone(),
            cells_prefix: Some(prefix),
            producer: Mutex::new(None),
        }
    }
}

/// The cell a message's topic belongs to, for a consumer of the cells' usage topics.
fn cell_of_topic(cells_prefix: &str, topic: &str) -> Option<String> {
    // A partitioned topic's messages name the partition: `…-partition-N`.
    let topic = topic.split("-partition-").next().unwrap_or(topic);
    let cell = topic.strip_prefix(cells_prefix)?;
    (!cell.is_empty()).then(|| cell.to_owned())
}

fn uerr(e: impl std::fmt::Display) -> crate::usage::UsageError {
    crate::usage::UsageError(e.to_string())
}

#[async_trait]
impl crate::usage::UsageFeed for PulsarUsageFeed {
    async fn publish(
        &self,
        report: &crate::usage::UsageReport,
    ) -> Result<(), crate::usage::UsageError> {
        if self.cells_prefix.is_some() {
            // The control plane's reader of every cell's topic has no topic of its own.
            return Err(uerr(
                "the control plane's usage feed only reads: a node publishes on its cell's topic",
            ));
        }
        let mut p = self.producer.lock().await;
        if p.is_none() {
            *p = Some(
                self.client
                    .producer()
                    .with_topic(&self.topic)
                    .with_name(format!("usage-{}", ulid::Ulid::new()))
                    .build()
                    .await
                    .map_err(uerr)?,
            );
        }
        let msg = pulsar::producer::Message {
            payload: serde_json::to_vec(report).map_err(uerr)?,
            partition_key: Some(report.app_id.to_string()),
            ..Default::default()
        };
        let producer = p.as_mut().expect("producer set above");
        let receipt = match producer.send_non_blocking(msg).await {
            Ok(r) => r,
            Err(e) => {
                // A fresh producer next time.
                *p = None;
                return Err(uerr(e));
            }
        };
        drop(p);
        receipt.await.map_err(uerr)?;
        Ok(())
    }

    async fn subscribe(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<crate::usage::Received>, crate::usage::UsageError> {
        let builder = self.client.consumer();
        let builder = match &self.cells_prefix {
            Some(prefix) => builder
                .with_topic_regex(
                    regex::Regex::new(&format!("^{}.+$", regex::escape(prefix))).map_err(uerr)?,
                )
                .with_topic_refresh(Duration::from_secs(30)),
            None => builder.with_topic(&self.topic),
        };
        let cells_prefix = self.cells_prefix.clone();
        let mut consumer = builder
            .with_subscription("control-plane-usage")
            .with_subscription_type(pulsar::SubType::Shared)
            .with_consumer_name(format!("usage-{}", ulid::Ulid::new()))
            .with_options(
                ConsumerOptions::default()
                    .durable(true)
                    .with_initial_position(InitialPosition::Earliest),
            )
            .with_unacked_message_resend_delay(Some(Duration::from_secs(5)))
            .build::<Vec<u8>>()
            .await
            .map_err(uerr)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                match consumer.try_next().await {
                    Ok(Some(msg)) => {
                        let report = match serde_json::from_slice::<crate::usage::UsageReport>(
                            &msg.payload.data,
                        ) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable usage report skipped");
                                let _ = consumer.ack(&msg).await;
                                continue;
                            }
                        };
                        let from = match &cells_prefix {
                            Some(prefix) => match cell_of_topic(prefix, &msg.topic) {
                                Some(cell) => Some(cell),
                                None => {
                                    tracing::warn!(topic = %msg.topic, "usage report on an unexpected topic skipped");
                                    let _ = consumer.ack(&msg).await;
                                    continue;
                                }
                            },
                            None => None,
                        };
                        let (ack, done) = tokio::sync::oneshot::channel();
                        if tx.send((report, from, ack)).await.is_err() {
                            break;
                        }
                        let stored = done.await.unwrap_or(false);
                        let r = if stored {
                            consumer.ack(&msg).await
                        } else {
                            consumer.nack(&msg).await
                        };
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "usage ack failed; the report may come again");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "usage feed read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The broker of `scripts/pulsar.sh` as the tests see it: URLs, CA and tokens from `TEST_PULSAR_*`.
#[cfg(test)]
pub(crate) mod testenv {
    use super::{PulsarAuth, hs256_token};
    use base64::Engine;

    /// A `TEST_PULSAR_*` variable; panics (the test fails loudly) when it is missing.
    pub(crate) fn env(k: &str) -> String {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the tests with scripts/test, which starts Pulsar")
        })
    }

    /// The super-user's token and the broker's CA.
    pub(crate) fn admin_auth() -> PulsarAuth {
        PulsarAuth {
            token: Some(env("TEST_PULSAR_ADMIN_TOKEN")),
            ca_file: Some(env("TEST_PULSAR_CA_FILE").into()),
        }
    }

    /// A token of `role`, minted with the broker's secret key, and the broker's CA.
    pub(crate) fn role_auth(role: &str) -> PulsarAuth {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(env("TEST_PULSAR_TOKEN_SECRET"))
            .expect("TEST_PULSAR_TOKEN_SECRET is base64");
        PulsarAuth {
            token: Some(hs256_token(&secret, role).unwrap()),
            ca_file: Some(env("TEST_PULSAR_CA_FILE").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testenv::{admin_auth, env};
    use super::*;

    /// Needs the Pulsar started by `scripts/test` (`TEST_PULSAR_URL`); fails loudly without it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pulsar_feed_conforms() {
        let url = env("TEST_PULSAR_URL");
        let client = connect(&url, &admin_auth(), Duration::from_secs(30))
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

    #[test]
    fn usage_topics_name_their_cell() {
        let p = "persistent://s/cells/starling-usage-";
        let t = usage_topic("persistent://s/cells/starling-", "cls_01ABC");
        assert_eq!(cell_of_topic(p, &t).as_deref(), Some("cls_01abc"));
        assert_eq!(
            cell_of_topic(p, &format!("{t}-partition-3")).as_deref(),
            Some("cls_01abc")
        );
        assert_eq!(
            cell_of_topic(p, "persistent://s/cells/starling-usage-"),
            None
        );
        assert_eq!(cell_of_topic(p, "persistent://s/other/x"), None);
    }
}

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
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, Pulsar, TokioExecutor};
use tokio::sync::{Mutex, broadcast, watch};

use crate::appconfig::{CellFeeds, ConfigFeed, FeedError, SignedUpdate};
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
    latest: Arc<RwLock<HashMap<AppId, SignedUpdate>>>,
    tx: broadcast::Sender<SignedUpdate>,
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
            topic: topic.to_owned(),
            producer: Mutex::new(producer),
            latest,
            tx,
            ready,
        }))
    }

    /// A feed that only publishes on `topic` (the control plane's side): no reader, so its
    /// snapshot is empty and it sees no updates.
    pub async fn publisher(client: &Client, topic: &str) -> anyhow::Result<Arc<Self>> {
        let producer = client
            .producer()
            .with_topic(topic)
            .with_name(format!("app-config-{}", ulid::Ulid::new()))
            .build()
            .await?;
        Ok(Arc::new(Self {
            topic: topic.to_owned(),
            producer: Mutex::new(producer),
            latest: Arc::default(),
            tx: broadcast::channel(1).0,
            ready: watch::channel(true).1,
        }))
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

/// The control plane's publishers, one per cell's app-config topic, opened on first use (and
/// given their topic policies through the admin API when one is configured).
pub struct PulsarCellFeeds {
    client: Client,
    topic_prefix: String,
    admin: Option<(String, u64)>,
    feeds: Mutex<HashMap<String, Arc<dyn ConfigFeed>>>,
}

impl PulsarCellFeeds {
    /// Publishers under `topic_prefix`; with `admin` (`(admin_url, compaction_threshold)`), each
    /// new cell topic gets the feed's policies before its first message.
    pub fn new(client: Client, topic_prefix: &str, admin: Option<(String, u64)>) -> Self {
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
        if let Some((admin, threshold)) = &self.admin {
            provision_feed_topic(admin, &topic, *threshold)
                .await
                .map_err(ferr)?;
        }
        let feed: Arc<dyn ConfigFeed> = PulsarFeed::publisher(&self.client, &topic)
            .await
            .map_err(ferr)?;
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

/// What [`provision`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The Pulsar tenant of the topic prefix.
    pub tenant: String,
    /// The namespace (`tenant/namespace`).
    pub namespace: String,
    /// Whether this call created the tenant (false: it was there).
    pub created_tenant: bool,
    /// Whether this call created the namespace.
    pub created_namespace: bool,
}

/// Splits `persistent://tenant/namespace/rest` into `(tenant, namespace, rest)`.
fn split_topic(topic: &str) -> anyhow::Result<(&str, &str, &str)> {
    let rest = topic.strip_prefix("persistent://").ok_or_else(|| {
        anyhow::anyhow!("{topic:?}: provisioning needs a persistent:// topic (tenant/namespace/…)")
    })?;
    let mut it = rest.splitn(3, '/');
    match (it.next(), it.next(), it.next()) {
        (Some(t), Some(n), Some(r)) if !t.is_empty() && !n.is_empty() => Ok((t, n, r)),
        _ => anyhow::bail!("{topic:?}: expected persistent://tenant/namespace/name"),
    }
}

/// Makes sure Starling's place in Pulsar exists and is configured, through the broker's admin
/// REST API at `admin_url` (e.g. `http://pulsar:8080`), idempotently:
///
/// - the tenant and namespace of `topic_prefix` (the tenant allowed on every cluster the broker
///   knows): a platform's own namespace, so its quotas, policies and permissions are its own and
///   not those of `public/default`;
/// - on an app-config feed topic `feed_topic` (a cell's): its policies, see
///   [`provision_feed_topic`]. The control plane provisions each cell's topic when it first
///   publishes to it.
///
/// Node inbox topics keep the namespace defaults: they are consumed by a durable subscription,
/// and what is acknowledged may go.
pub async fn provision(
    admin_url: &str,
    topic_prefix: &str,
    feed_topic: Option<&str>,
    compaction_threshold_bytes: u64,
) -> anyhow::Result<Provisioned> {
    use reqwest::StatusCode;
    let (tenant, namespace, _) = split_topic(topic_prefix)?;
    if let Some(feed_topic) = feed_topic {
        let (ft, fns, _) = split_topic(feed_topic)?;
        // Checked before any call, so a bad pair of names changes nothing in Pulsar.
        if (ft, fns) != (tenant, namespace) {
            anyhow::bail!("{feed_topic:?} is not under the topic prefix {topic_prefix:?}");
        }
    }
    let base = admin_url.trim_end_matches('/');
    let http = admin_http()?;
    let ctx = |what: &str| format!("Pulsar admin API at {base}: {what}");
    let clusters: Vec<String> = http
        .get(format!("{base}/admin/v2/clusters"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| anyhow::anyhow!("{}: {e}", ctx("listing clusters")))?
        .json()
        .await?;
    let created_tenant = admin_send(
        http.put(format!("{base}/admin/v2/tenants/{tenant}"))
            .json(&serde_json::json!({"allowedClusters": clusters, "adminRoles": []})),
        ctx(&format!("creating tenant {tenant}")),
        &[StatusCode::CONFLICT],
    )
    .await?
        != StatusCode::CONFLICT;
    let created_namespace = admin_send(
        http.put(format!("{base}/admin/v2/namespaces/{tenant}/{namespace}")),
        ctx(&format!("creating namespace {tenant}/{namespace}")),
        &[StatusCode::CONFLICT],
    )
    .await?
        != StatusCode::CONFLICT;
    if let Some(feed_topic) = feed_topic {
        provision_feed_topic(admin_url, feed_topic, compaction_threshold_bytes).await?;
    }
    Ok(Provisioned {
        tenant: tenant.to_owned(),
        namespace: format!("{tenant}/{namespace}"),
        created_tenant,
        created_namespace,
    })
}

/// The HTTP client for Pulsar's admin REST API.
fn admin_http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Sends one admin request; `ok` lists the statuses that also mean done (409: it exists).
async fn admin_send(
    req: reqwest::RequestBuilder,
    what: String,
    ok: &'static [reqwest::StatusCode],
) -> anyhow::Result<reqwest::StatusCode> {
    let res = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let status = res.status();
    if status.is_success() || ok.contains(&status) {
        Ok(status)
    } else {
        let body = res.text().await.unwrap_or_default();
        anyhow::bail!(
            "{what}: {status} {}",
            body.chars().take(300).collect::<String>()
        )
    }
}

/// Gives one app-config feed topic (one per cell) its policies, idempotently: infinite
/// retention and no deletion while inactive (without a durable subscription Pulsar may
/// otherwise drop the ledgers that hold the configuration of apps that have not changed for a
/// long time), and a compaction threshold so the broker compacts it by itself and a node's
/// start-up read stays short. Its namespace must exist.
pub async fn provision_feed_topic(
    admin_url: &str,
    feed_topic: &str,
    compaction_threshold_bytes: u64,
) -> anyhow::Result<()> {
    use reqwest::StatusCode;
    let (ft, fns, fname) = split_topic(feed_topic)?;
    let base = admin_url.trim_end_matches('/');
    let http = admin_http()?;
    let ctx = |what: &str| format!("Pulsar admin API at {base}: {what}");
    let topic = format!("{base}/admin/v2/persistent/{ft}/{fns}/{fname}");
    admin_send(
        http.put(&topic),
        ctx(&format!("creating topic {feed_topic}")),
        &[StatusCode::CONFLICT],
    )
    .await?;
    admin_send(
        http.post(format!("{topic}/retention"))
            .json(&serde_json::json!({"retentionTimeInMinutes": -1, "retentionSizeInMB": -1})),
        ctx(&format!("setting the retention of {feed_topic}")),
        &[],
    )
    .await?;
    admin_send(
        http.post(format!("{topic}/inactiveTopicPolicies"))
            .json(&serde_json::json!({
                "inactiveTopicDeleteMode": "delete_when_no_subscriptions",
                "maxInactiveDurationSeconds": 60,
                "deleteWhileInactive": false,
            })),
        ctx(&format!("keeping {feed_topic} while inactive")),
        &[],
    )
    .await?;
    admin_send(
        http.post(format!("{topic}/compactionThreshold"))
            .json(&compaction_threshold_bytes),
        ctx(&format!("setting the compaction threshold of {feed_topic}")),
        &[],
    )
    .await?;
    Ok(())
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
        Self {
            client,
            topic: format!("{topic_prefix}usage-"),
            cells_prefix: Some(format!("{topic_prefix}usage-")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appconfig::ConfigUpdate;
    use crate::appconfig::conformance::signed;

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

    /// Provisioning against the real broker's admin API (`TEST_PULSAR_ADMIN_URL`): a fresh tenant
    /// and namespace are made, a second run finds them, the feed topic gets its policies, and
    /// once the broker has compacted the topic it holds one message per app, from which a new
    /// reader rebuilds the latest configuration of every app.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn provisioning_makes_a_compacted_feed_namespace() {
        let env = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: run the tests with scripts/test, which starts Pulsar")
            })
        };
        let (url, admin) = (env("TEST_PULSAR_URL"), env("TEST_PULSAR_ADMIN_URL"));
        let run = ulid::Ulid::new().to_string().to_lowercase();
        let prefix = format!("persistent://starling-test-{run}/cell/starling-");
        let topic = format!("{prefix}app-config");
        let first = provision(&admin, &prefix, Some(&topic), 1024)
            .await
            .unwrap();
        assert_eq!(first.namespace, format!("starling-test-{run}/cell"));
        assert!(first.created_tenant && first.created_namespace, "{first:?}");
        let second = provision(&admin, &prefix, Some(&topic), 1024)
            .await
            .unwrap();
        assert!(
            !second.created_tenant && !second.created_namespace,
            "{second:?}"
        );
        let http = reqwest::Client::new();
        let topic_url =
            format!("{admin}/admin/v2/persistent/starling-test-{run}/cell/starling-app-config");
        let get = |what: &'static str| {
            let (http, u) = (http.clone(), format!("{topic_url}/{what}"));
            async move {
                http.get(u)
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get("retention").await["retentionTimeInMinutes"], -1);
        assert_eq!(get("compactionThreshold").await, 1024);
        assert_eq!(
            get("inactiveTopicPolicies").await["deleteWhileInactive"],
            false
        );

        let client = connect(&url, Duration::from_secs(30)).await.unwrap();
        let feed = PulsarFeed::open(&client, &topic).await.unwrap();
        let (a, b) = (AppId::generate(), AppId::generate());
        let mut last_a = 0;
        for _ in 0..3 {
            last_a = crate::appconfig::next_version();
            feed.publish(signed(ConfigUpdate::Delete {
                app_id: a.clone(),
                version: last_a,
            }))
            .await
            .unwrap();
        }
        let last_b = crate::appconfig::next_version();
        feed.publish(signed(ConfigUpdate::Delete {
            app_id: b.clone(),
            version: last_b,
        }))
        .await
        .unwrap();
        // Compact now rather than wait for the threshold check (every 60 s by default).
        let r = http
            .put(format!("{topic_url}/compaction"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = get("compaction").await;
            if st["status"] == "SUCCESS" {
                break;
            }
            assert_ne!(st["status"], "ERROR", "{st}");
            assert!(std::time::Instant::now() < deadline, "not compacted: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stats = get("internalStats").await;
        assert_eq!(
            stats["compactedLedger"]["entries"], 2,
            "one message per app after compaction: {stats}"
        );
        let late = PulsarFeed::open(&client, &topic).await.unwrap();
        let mut view: Vec<_> = late
            .snapshot()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.app_id().clone(), u.version()))
            .collect();
        view.sort();
        let mut want = vec![(a, last_a), (b, last_b)];
        want.sort();
        assert_eq!(
            view, want,
            "the latest update of each app survives compaction"
        );
    }

    /// Port 1 on loopback answers nothing: the error must come from the check, before any call.
    #[tokio::test]
    async fn a_feed_topic_outside_the_prefix_is_refused_before_any_call() {
        let e = provision(
            "http://127.0.0.1:1",
            "persistent://a/b/x-",
            Some("persistent://a/c/x-app-config"),
            1,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not under the topic prefix"), "{e}");
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

    #[test]
    fn topic_names_split_into_tenant_and_namespace() {
        assert_eq!(
            split_topic("persistent://starling/cell-1/starling-").unwrap(),
            ("starling", "cell-1", "starling-")
        );
        assert!(split_topic("non-persistent://a/b/c").is_err());
        assert!(split_topic("persistent://a").is_err());
        assert!(split_topic("persistent:///b/c").is_err());
    }
}

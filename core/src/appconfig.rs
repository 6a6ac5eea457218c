//! The app configuration that flows from the control plane to data-plane cells: each app's
//! status, effective limits, API-key hashes and user-token secrets, keyed by app id.
//!
//! The feed behaves like a compacted topic: a subscriber first reads the latest value of every
//! app (the snapshot), then follows updates. Updates carry a version, so applying one twice or
//! out of order is harmless. In standalone the feed is in-process ([`InProcessFeed`]); in a cell
//! it is a Pulsar compacted topic.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::{ApiKeyId, AppId, TenantId};
use crate::limits::Limits;

/// One API key as a cell needs it to authenticate requests locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfig {
    /// Public key id.
    pub id: ApiKeyId,
    /// Keyed hash of the secret (see [`crate::secret::KeyHasher`]).
    pub secret_hash: String,
    /// Scope names (`server_full`, `read_only`).
    pub scopes: Vec<String>,
    /// When the key stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked keys stop at once.
    pub revoked: bool,
}

/// A secret that user tokens (HS256 JWTs) of the app are signed with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSecret {
    /// Key id, in the JWT header's `kid`.
    pub kid: String,
    /// The HMAC secret.
    pub secret: String,
    /// After this, tokens signed with it are refused (rotation overlap end).
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSecret")
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A webhook signing secret (`whsec_…`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// The secret.
    pub secret: String,
    /// After this the secret no longer signs (rotation overlap end); `None`: current.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A customer's webhook endpoint, as the cell delivering to it needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointConfig {
    /// Endpoint id (`ep_…`).
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event types it subscribed to; empty: every type that is not opt-in.
    pub event_types: Vec<String>,
    /// Signing secrets, newest first; expired ones are left out when signing.
    pub secrets: Vec<WebhookSecret>,
    /// Disabled endpoints get nothing.
    pub enabled: bool,
    /// When it was last enabled: an automatic disabling older than this no longer holds.
    pub enabled_at: DateTime<Utc>,
    /// Most deliveries per second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// Deliver one event at a time, in order (a failing event holds the later ones back).
    pub ordered: bool,
}

/// An app's pre-send hook: called before a message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreSendHookConfig {
    /// Where the message is POSTed.
    pub url: String,
    /// The signing secret (`whsec_…`).
    pub secret: WebhookSecret,
    /// How long to wait for the answer, in milliseconds.
    pub timeout_ms: u64,
    /// On timeout or error: `true` stores the message as it is, `false` refuses it.
    pub fail_open: bool,
}

/// Everything a cell knows about one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// The app.
    pub app_id: AppId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// `None` when the app may be used; else why not (`app_suspended`, `tenant_suspended`).
    pub suspended: Option<String>,
    /// The limits in force (plan with the app's overrides).
    pub limits: Limits,
    /// Names of the limits that only warn (counted, never refused); the rest are hard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft_limits: Vec<String>,
    /// API keys, including revoked and expired ones (so the refusal can say why).
    pub keys: Vec<KeyConfig>,
    /// Token secrets, newest first.
    pub token_secrets: Vec<TokenSecret>,
    /// Webhook endpoints.
    #[serde(default)]
    pub webhooks: Vec<WebhookEndpointConfig>,
    /// The pre-send hook, if the app has one.
    #[serde(default)]
    pub pre_send_hook: Option<PreSendHookConfig>,
    /// Increases with every change of this app.
    pub version: i64,
}

/// A change on the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// Updates are rare and short-lived (a config change, not a message): boxing the upsert would
// only add an allocation and churn every producer and consumer.
#[allow(clippy::large_enum_variant)]
pub enum ConfigUpdate {
    /// The app's new configuration.
    Upsert(AppConfig),
    /// The app is gone.
    Delete {
        /// The app.
        app_id: AppId,
        /// Version of the deletion.
        version: i64,
    },
}

impl ConfigUpdate {
    /// The app the update is about.
    pub fn app_id(&self) -> &AppId {
        match self {
            ConfigUpdate::Upsert(c) => &c.app_id,
            ConfigUpdate::Delete { app_id, .. } => app_id,
        }
    }

    /// Its version.
    pub fn version(&self) -> i64 {
        match self {
            ConfigUpdate::Upsert(c) => c.version,
            ConfigUpdate::Delete { version, .. } => *version,
        }
    }
}

/// Publishing or reading the feed failed.
#[derive(Debug, thiserror::Error)]
#[error("config feed: {0}")]
pub struct FeedError(pub String);

/// The app-config feed between the planes.
#[async_trait]
pub trait ConfigFeed: Send + Sync + 'static {
    /// Publishes a change (the latest per app wins).
    async fn publish(&self, update: ConfigUpdate) -> Result<(), FeedError>;
    /// The latest update of every app.
    async fn snapshot(&self) -> Result<Vec<ConfigUpdate>, FeedError>;
    /// Updates from now on. Subscribe before taking the snapshot so nothing falls between.
    fn updates(&self) -> broadcast::Receiver<ConfigUpdate>;
}

/// The in-process feed of a standalone process: a map of the latest update per app, plus a
/// broadcast channel for followers.
pub struct InProcessFeed {
    latest: RwLock<HashMap<AppId, ConfigUpdate>>,
    tx: broadcast::Sender<ConfigUpdate>,
}

impl Default for InProcessFeed {
    fn default() -> Self {
        Self {
            latest: RwLock::new(HashMap::new()),
            tx: broadcast::channel(4096).0,
        }
    }
}

impl InProcessFeed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConfigFeed for InProcessFeed {
    async fn publish(&self, update: ConfigUpdate) -> Result<(), FeedError> {
        {
            let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
            let newer = latest
                .get(update.app_id())
                .is_none_or(|old| old.version() <= update.version());
            if !newer {
                return Ok(());
            }
            latest.insert(update.app_id().clone(), update.clone());
        }
        // No subscriber is fine.
        let _ = self.tx.send(update);
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<ConfigUpdate>, FeedError> {
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

/// A version for a change made now: milliseconds since the epoch times 1000 plus a counter, so
/// it increases within one process even for changes in the same millisecond.
pub fn next_version() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_millis() * 1000;
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// The one behaviour suite every [`ConfigFeed`] must pass.
pub mod conformance {
    use super::*;
    use std::time::Duration;

    fn config(app: &AppId, version: i64, suspended: Option<&str>) -> ConfigUpdate {
        ConfigUpdate::Upsert(AppConfig {
            app_id: app.clone(),
            tenant_id: TenantId::generate(),
            suspended: suspended.map(str::to_owned),
            limits: Limits::default(),
            soft_limits: vec![],
            keys: vec![],
            token_secrets: vec![],
            webhooks: vec![],
            pre_send_hook: None,
            version,
        })
    }

    /// Runs every check against `feed` (which may hold other apps' updates).
    pub async fn run(feed: &dyn ConfigFeed) {
        let a = AppId::generate();
        let b = AppId::generate();
        let mut rx = feed.updates();
        feed.publish(config(&a, next_version(), None))
            .await
            .unwrap();
        let v2 = next_version();
        feed.publish(config(&a, v2, Some("app_suspended")))
            .await
            .unwrap();
        feed.publish(config(&b, next_version(), None))
            .await
            .unwrap();
        feed.publish(ConfigUpdate::Delete {
            app_id: b.clone(),
            version: next_version(),
        })
        .await
        .unwrap();

        // Followers see every update, in order.
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let u = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("update within 10s")
                .expect("receive");
            if u.app_id() == &a || u.app_id() == &b {
                seen.push(u);
            }
        }
        assert_eq!(seen[1].version(), v2);

        // The snapshot holds the latest update per app only.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let snap = feed.snapshot().await.unwrap();
            let of_a: Vec<_> = snap.iter().filter(|u| u.app_id() == &a).collect();
            let of_b: Vec<_> = snap.iter().filter(|u| u.app_id() == &b).collect();
            if of_a.len() == 1 && of_a[0].version() == v2 && of_b.len() == 1 {
                assert!(
                    matches!(of_b[0], ConfigUpdate::Delete { .. }),
                    "b's latest is its deletion"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "snapshot never compacted: {of_a:?} {of_b:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_feed_conforms() {
        conformance::run(&InProcessFeed::new()).await;
    }

    #[test]
    fn versions_increase() {
        let a = next_version();
        let b = next_version();
        assert!(b > a);
    }
}

//! The app configuration that flows from the control plane to data-plane cells: each app's
//! status, effective limits, API-key hashes and user-token secrets, keyed by app id.
//!
//! Each cell has a feed of its own, carrying only the apps placed on it. The feed behaves like a
//! compacted topic: a subscriber first reads the latest value of every app (the snapshot), then
//! follows updates. In standalone the feed is in-process ([`InProcessFeed`]); in a cell it is a
//! Pulsar compacted topic per cell.
//!
//! Every update travels as a [`SignedUpdate`]: the update and the cell it is meant for, signed
//! with the control plane's Ed25519 key ([`crate::signing`]). A node applies an update only if
//! the signature verifies with a public key it trusts and the update names its own cell, so
//! whoever can write to the bus can neither forge an app's configuration (a token secret, a
//! lifted suspension, a version so high that later revocations are ignored) nor move one
//! cell's configuration into another. Versions are inside the signed bytes, so no producer but
//! the control plane can choose one; a replayed older update loses to the newer one already
//! applied.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::{ApiKeyId, AppId, TenantId};
use crate::limits::Limits;
use crate::signing::{SigningError, SigningKey, Verifier};

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

/// The signature context of app-config updates (see [`crate::signing`]).
pub const SIGNING_CONTEXT: &str = "starling-app-config-v1";

/// What is signed: an update and the cell it is meant for.
#[derive(Serialize, Deserialize)]
struct Addressed {
    cluster_id: String,
    update: ConfigUpdate,
}

/// An update as it travels on a cell's feed, signed by the control plane.
///
/// `app_id` and `version` are repeated outside the signed payload only so that a feed can key
/// and order messages without verifying; [`SignedUpdate::open`] refuses an envelope whose copies
/// differ from the signed ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// The app (the feed's compaction key).
    pub app_id: AppId,
    /// The update's version.
    pub version: i64,
    /// The id of the control-plane key that signed.
    pub kid: String,
    /// When set, `payload` is sealed to the cell's key of this id (`cek_…`, see
    /// [`crate::cellkey`]): only that cell's nodes can read the update. Unset: `payload` is
    /// the JSON itself (a cell with no registered key; standalone's in-process feed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
    /// The signed bytes: the update and its cell, as JSON, or that JSON sealed to the cell
    /// (`enc`). The signature is over these bytes as sent.
    pub payload: String,
    /// Ed25519 signature of `payload` (base64url).
    pub sig: String,
}

/// Why a node refused an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not signed by a key this node trusts, or altered after signing.
    #[error("signature: {0}")]
    Signature(#[from] SigningError),
    /// Signed for another cell.
    #[error("meant for cluster {0}, not this one")]
    OtherCell(String),
    /// Sealed to a cell key this node does not hold, or it does not open.
    #[error("sealed: {0}")]
    Sealed(#[from] crate::cellkey::CellKeyError),
    /// The signed payload does not parse, or the envelope disagrees with it.
    #[error("malformed: {0}")]
    Malformed(String),
}

impl Rejected {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Signature(SigningError::UnknownKey(_)) => "unknown_key",
            Rejected::Signature(_) => "bad_signature",
            Rejected::OtherCell(_) => "other_cell",
            Rejected::Sealed(_) => "sealed",
            Rejected::Malformed(_) => "malformed",
        }
    }
}

impl SignedUpdate {
    /// Signs `update` for the cell `cluster_id`, in clear (a cell with no registered key).
    pub fn sign(key: &SigningKey, cluster_id: &str, update: &ConfigUpdate) -> Self {
        Self::sign_for(key, cluster_id, update, None)
    }

    /// Signs `update` for the cell `cluster_id`, sealed to `cell_key` when given
    /// (encrypt-then-sign: the signature covers the sealed text).
    pub fn sign_for(
        key: &SigningKey,
        cluster_id: &str,
        update: &ConfigUpdate,
        cell_key: Option<&crate::cellkey::CellPublicKey>,
    ) -> Self {
        let json = serde_json::to_string(&Addressed {
            cluster_id: cluster_id.to_owned(),
            update: update.clone(),
        })
        .expect("config updates serialize");
        let (enc, payload) = match cell_key {
            Some(k) => (
                Some(k.kid().to_owned()),
                k.seal(SIGNING_CONTEXT, json.as_bytes()),
            ),
            None => (None, json),
        };
        Self {
            app_id: update.app_id().clone(),
            version: update.version(),
            kid: key.kid().to_owned(),
            sig: key.sign(SIGNING_CONTEXT, payload.as_bytes()),
            enc,
            payload,
        }
    }

    /// The app the update is about (as the envelope says; checked by [`Self::open`]).
    pub fn app_id(&self) -> &AppId {
        &self.app_id
    }

    /// Its version (as the envelope says; checked by [`Self::open`]).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The update, if a trusted key signed it for the cell `cluster_id` (in clear; a sealed
    /// one is refused: see [`Self::open_with`]).
    pub fn open(&self, verifier: &Verifier, cluster_id: &str) -> Result<ConfigUpdate, Rejected> {
        self.open_with(verifier, cluster_id, &crate::cellkey::CellKeys::default())
    }

    /// The update, if a trusted key signed it for the cell `cluster_id`, opened with one of
    /// `keys` when it is sealed.
    pub fn open_with(
        &self,
        verifier: &Verifier,
        cluster_id: &str,
        keys: &crate::cellkey::CellKeys,
    ) -> Result<ConfigUpdate, Rejected> {
        verifier.verify(
            SIGNING_CONTEXT,
            &self.kid,
            self.payload.as_bytes(),
            &self.sig,
        )?;
        let opened;
        let json = match &self.enc {
            Some(kid) => {
                opened = keys.open(kid, SIGNING_CONTEXT, &self.payload)?;
                std::str::from_utf8(&opened).map_err(|e| Rejected::Malformed(e.to_string()))?
            }
            None => self.payload.as_str(),
        };
        let a: Addressed =
            serde_json::from_str(json).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if a.cluster_id != cluster_id {
            return Err(Rejected::OtherCell(a.cluster_id));
        }
        if a.update.app_id() != &self.app_id || a.update.version() != self.version {
            return Err(Rejected::Malformed(
                "the envelope's app or version differs from the signed update".into(),
            ));
        }
        Ok(a.update)
    }
}

/// Publishing or reading the feed failed.
#[derive(Debug, thiserror::Error)]
#[error("config feed: {0}")]
pub struct FeedError(pub String);

/// One cell's app-config feed between the planes. It moves signed updates and never checks
/// them: the nodes do ([`SignedUpdate::open`]).
#[async_trait]
pub trait ConfigFeed: Send + Sync + 'static {
    /// Publishes a change (the latest per app wins).
    async fn publish(&self, update: SignedUpdate) -> Result<(), FeedError>;
    /// The latest update of every app.
    async fn snapshot(&self) -> Result<Vec<SignedUpdate>, FeedError>;
    /// Updates from now on. Subscribe before taking the snapshot so nothing falls between.
    fn updates(&self) -> broadcast::Receiver<SignedUpdate>;
}

/// The feeds of every cell, by cluster id: where the control plane publishes.
#[async_trait]
pub trait CellFeeds: Send + Sync + 'static {
    /// The feed of the cell `cluster_id` (opened on first use).
    async fn feed(&self, cluster_id: &str) -> Result<std::sync::Arc<dyn ConfigFeed>, FeedError>;
}

/// In-process feeds, one per cell (standalone and tests).
#[derive(Default)]
pub struct InProcessCellFeeds {
    feeds: RwLock<HashMap<String, std::sync::Arc<dyn ConfigFeed>>>,
}

impl InProcessCellFeeds {
    /// No feeds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `feed` for the cell `cluster_id` (e.g. one that also applies to a local node).
    pub fn insert(&self, cluster_id: &str, feed: std::sync::Arc<dyn ConfigFeed>) {
        self.feeds
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster_id.to_owned(), feed);
    }
}

#[async_trait]
impl CellFeeds for InProcessCellFeeds {
    async fn feed(&self, cluster_id: &str) -> Result<std::sync::Arc<dyn ConfigFeed>, FeedError> {
        let mut feeds = self.feeds.write().unwrap_or_else(|p| p.into_inner());
        Ok(feeds
            .entry(cluster_id.to_owned())
            .or_insert_with(|| std::sync::Arc::new(InProcessFeed::new()))
            .clone())
    }
}

/// The in-process feed of a standalone process: a map of the latest update per app, plus a
/// broadcast channel for followers.
pub struct InProcessFeed {
    latest: RwLock<HashMap<AppId, SignedUpdate>>,
    tx: broadcast::Sender<SignedUpdate>,
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
    async fn publish(&self, update: SignedUpdate) -> Result<(), FeedError> {
        // The last message per app wins, as in a compacted topic. The feed does not order by
        // version: that number is only trustworthy once a node has verified the signature, so
        // a forged envelope with a huge version must not be able to hold back later genuine
        // updates here (nodes drop stale ones themselves).
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(update.app_id().clone(), update.clone());
        // No subscriber is fine.
        let _ = self.tx.send(update);
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<SignedUpdate>, FeedError> {
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

    /// The key the suite signs with (feeds do not verify; nodes do).
    fn key() -> &'static SigningKey {
        static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
        KEY.get_or_init(SigningKey::generate)
    }

    /// `update` signed for the suite's cell.
    pub fn signed(update: ConfigUpdate) -> SignedUpdate {
        SignedUpdate::sign(key(), "cls_conformance", &update)
    }

    fn config(app: &AppId, version: i64, suspended: Option<&str>) -> SignedUpdate {
        signed(ConfigUpdate::Upsert(AppConfig {
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
        }))
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
        feed.publish(signed(ConfigUpdate::Delete {
            app_id: b.clone(),
            version: next_version(),
        }))
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
                let verifier = Verifier::new([key().public_key()]);
                assert!(
                    matches!(
                        of_b[0].open(&verifier, "cls_conformance"),
                        Ok(ConfigUpdate::Delete { .. })
                    ),
                    "b's latest is its deletion, intact"
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

    fn deletion(version: i64) -> ConfigUpdate {
        ConfigUpdate::Delete {
            app_id: AppId::generate(),
            version,
        }
    }

    #[test]
    fn a_signed_update_opens_only_for_its_cell_with_a_trusted_key() {
        let cp = SigningKey::generate();
        let trust = Verifier::new([cp.public_key()]);
        let u = deletion(next_version());
        let s = SignedUpdate::sign(&cp, "cls_a", &u);
        assert_eq!(s.open(&trust, "cls_a"), Ok(u.clone()));
        // Cell B is handed cell A's genuine update.
        assert_eq!(
            s.open(&trust, "cls_b"),
            Err(Rejected::OtherCell("cls_a".into()))
        );
        // Anyone else's key, whatever version it claims.
        let forger = SigningKey::generate();
        let forged = SignedUpdate::sign(&forger, "cls_a", &deletion(i64::MAX));
        assert_eq!(
            forged.open(&trust, "cls_a").unwrap_err().reason(),
            "unknown_key"
        );
        // The forger reuses the control plane's key id.
        let mut lying = forged.clone();
        lying.kid = cp.kid().to_owned();
        assert_eq!(
            lying.open(&trust, "cls_a").unwrap_err().reason(),
            "bad_signature"
        );
        // A genuine signature over an altered payload.
        let mut altered = s.clone();
        altered.payload = altered.payload.replace("cls_a", "cls_b");
        assert_eq!(
            altered.open(&trust, "cls_b").unwrap_err().reason(),
            "bad_signature"
        );
        // The unsigned copy of the version is raised to win the feed's ordering.
        let mut bumped = s.clone();
        bumped.version = i64::MAX;
        assert_eq!(
            bumped.open(&trust, "cls_a").unwrap_err().reason(),
            "malformed"
        );
    }

    /// A cell's secrets are sealed to its key: the envelope on the bus holds none of them in
    /// clear, only that cell's keys open it, and it still needs the control plane's signature.
    #[test]
    fn a_sealed_update_carries_no_secret_in_clear_and_opens_for_its_cell_only() {
        use crate::cellkey::{CellKeys, CellSecretKey};
        let cp = SigningKey::generate();
        let trust = Verifier::new([cp.public_key()]);
        let (cell_a, cell_b) = (CellSecretKey::generate(), CellSecretKey::generate());
        let u = ConfigUpdate::Upsert(AppConfig {
            app_id: AppId::generate(),
            tenant_id: TenantId::generate(),
            suspended: None,
            limits: Limits::default(),
            soft_limits: vec![],
            keys: vec![],
            token_secrets: vec![TokenSecret {
                kid: "k1".into(),
                secret: "tok-secret-in-transit".into(),
                expires_at: None,
            }],
            webhooks: vec![],
            pre_send_hook: None,
            version: next_version(),
        });
        let s = SignedUpdate::sign_for(&cp, "cls_a", &u, Some(&cell_a.public_key()));
        let on_the_bus = serde_json::to_string(&s).unwrap();
        assert!(
            !on_the_bus.contains("tok-secret-in-transit"),
            "{on_the_bus}"
        );
        assert!(
            !on_the_bus.contains("cls_a"),
            "not even the cell is readable"
        );
        assert_eq!(s.enc.as_deref(), Some(cell_a.kid()));
        let keys_a = CellKeys::new([cell_a.clone()]);
        assert_eq!(s.open_with(&trust, "cls_a", &keys_a), Ok(u.clone()));
        // Cell B (or the broker, or a node without the key) cannot read it.
        for keys in [CellKeys::new([cell_b]), CellKeys::default()] {
            assert_eq!(
                s.open_with(&trust, "cls_a", &keys).unwrap_err().reason(),
                "sealed"
            );
        }
        // Sealed by someone else to cell A's public key: refused for its signature.
        let forger = SigningKey::generate();
        let forged = SignedUpdate::sign_for(&forger, "cls_a", &u, Some(&cell_a.public_key()));
        assert_eq!(
            forged
                .open_with(&trust, "cls_a", &keys_a)
                .unwrap_err()
                .reason(),
            "unknown_key"
        );
        // Dropping the seal marker leaves ciphertext that is not an update.
        let mut unmarked = s.clone();
        unmarked.enc = None;
        assert_eq!(
            unmarked
                .open_with(&trust, "cls_a", &keys_a)
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn versions_increase() {
        let a = next_version();
        let b = next_version();
        assert!(b > a);
    }
}

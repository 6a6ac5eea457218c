//! What this node knows about apps, fed by the control plane (see `starling_core::appconfig`):
//! it authenticates API keys and verifies user tokens locally, with no control-plane call per
//! request. A revoked key stops working as soon as its update arrives.
//!
//! The node applies only updates the control plane signed for this node's cell ([`CellTrust`]);
//! anything else is refused, logged and counted in `starling_config_updates_rejected_total`
//! by reason (`unknown_key`, `bad_signature`, `other_cell`, `malformed`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use starling_core::appconfig::{AppConfig, ConfigFeed, ConfigUpdate, Rejected, SignedUpdate};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::{ApiKeyId, AppId, TenantId};
use starling_core::limits::Limits;
use starling_core::secret::{KeyHasher, split_api_key};
use starling_core::signing::Verifier;

/// Whose configuration a node accepts: updates the control plane signed (verified with its
/// public keys) for this node's cell.
#[derive(Debug, Clone)]
pub struct CellTrust {
    /// This node's cell (`gateway.cluster_id`).
    pub cluster_id: String,
    /// The control plane's public keys (`auth.control_plane_public_keys`).
    pub verifier: Verifier,
    /// This cell's secret keys (`gateway.config_keys`), which open updates sealed to the cell.
    /// Empty: only updates in clear can be read (standalone, or a cell with no registered key).
    pub keys: starling_core::cellkey::CellKeys,
}

/// Who is calling the server API.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    /// The app the key belongs to.
    pub app_id: AppId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The key.
    pub key_id: ApiKeyId,
    /// Its scopes' names, as the control plane gave them.
    pub scopes: Vec<String>,
    /// What they grant (checked per route by [`crate::scope::Allowed`]).
    pub grants: crate::scope::Grants,
    /// The app's limits.
    pub limits: Limits,
}

/// Who is on the other end of a WebSocket.
#[derive(Debug, Clone)]
pub struct UserPrincipal {
    /// The app.
    pub app_id: AppId,
    /// The user.
    pub user_id: String,
    /// The app's limits.
    pub limits: Limits,
    /// The token the connection was opened with: what can end it later.
    pub token: TokenFacts,
}

/// What a connection keeps of its user token, to close it when that token is revoked: by its
/// id, by the user's "not before", or with the secret that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// The token secret that signed it (`kid`).
    pub kid: String,
    /// Its id (`jti`), when it has one (tokens the server API mints always do).
    pub jti: Option<String>,
    /// When it was issued (`iat`, seconds since the epoch).
    pub iat: i64,
}

/// Why a session ends (each maps to a WebSocket close code: [`SessionEnd::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The user was banned from the app.
    Banned,
    /// The user was deactivated.
    Deactivated,
    /// The user was deleted.
    Deleted,
    /// The app was suspended.
    AppSuspended,
    /// The app was deleted or moved off this cell.
    AppGone,
    /// The connection's token was revoked (by id, or by the user's "not before").
    TokenRevoked,
    /// The secret that signed the connection's token was retired or revoked.
    SigningKeyRetired,
}

impl SessionEnd {
    /// The close code: 4003 when access ended (do not reconnect until the customer's backend
    /// restores it), 4001 when only the token ended (reconnect with a new token).
    pub fn close_code(self) -> u16 {
        match self {
            Self::TokenRevoked | Self::SigningKeyRetired => 4001,
            _ => 4003,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Banned => "access ended: the user is banned",
            Self::Deactivated => "access ended: the user is deactivated",
            Self::Deleted => "access ended: the user was deleted",
            Self::AppSuspended => "access ended: the app is suspended",
            Self::AppGone => "access ended: the app no longer exists",
            Self::TokenRevoked => "token revoked: connect with a new token",
            Self::SigningKeyRetired => "token revoked: its signing secret was retired",
        }
    }
}

/// Claims of a user token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    /// The user id.
    pub sub: String,
    /// The app id.
    pub app_id: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at. Required: a revocation by "not before" compares it.
    pub iat: i64,
    /// Not valid before (seconds since the epoch), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The token's id, for revoking this one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// A freshly minted user token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The JWT.
    pub token: String,
    /// Its id (`jti`).
    pub id: String,
    /// When it expires.
    pub expires_at: chrono::DateTime<Utc>,
}

#[derive(Default)]
struct State {
    apps: HashMap<AppId, Arc<AppConfig>>,
    /// Version of the latest update seen per app, deletions included.
    versions: HashMap<AppId, i64>,
    key_to_app: HashMap<ApiKeyId, AppId>,
    kid_to_app: HashMap<String, AppId>,
}

/// The app directory of a node.
pub struct Directory {
    state: RwLock<State>,
    hasher: KeyHasher,
    trust: CellTrust,
    rejected: std::sync::atomic::AtomicU64,
    /// Counts applied updates, so that a node re-checks its connections against the new
    /// configuration at once (a suspension or a retired token secret ends sessions).
    applied: tokio::sync::watch::Sender<u64>,
}

fn unauthorized(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, msg)
}

impl Directory {
    /// An empty directory; keys are checked with `hasher`, updates with `trust`.
    pub fn new(hasher: KeyHasher, trust: CellTrust) -> Self {
        Self {
            state: RwLock::new(State::default()),
            hasher,
            trust,
            rejected: std::sync::atomic::AtomicU64::new(0),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes whenever an update is applied: the node then checks its open connections
    /// ([`Directory::session_ended`]).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Whether a session opened with `token` for `app` must end now, and why: the app is
    /// gone or suspended (access ended), or the secret that signed the token was removed or
    /// has expired (token revoked). In memory only: it runs for every connection of the node
    /// after each config update and once a second.
    pub fn session_ended(&self, app: &str, token: &TokenFacts) -> Option<SessionEnd> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let Some(c) = s.apps.get(app) else {
            return Some(SessionEnd::AppGone);
        };
        if c.suspended.is_some() {
            return Some(SessionEnd::AppSuspended);
        }
        let now = Utc::now();
        match c.token_secrets.iter().find(|t| t.kid == token.kid) {
            Some(t) if t.expires_at.is_none_or(|e| e > now) => None,
            _ => Some(SessionEnd::SigningKeyRetired),
        }
    }

    /// How many updates this node refused (also in the metrics, by reason).
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This node's cell.
    pub fn cluster_id(&self) -> &str {
        &self.trust.cluster_id
    }

    /// Applies a signed update if the control plane signed it for this cell (and it is newer
    /// than what this node has); else refuses it, logs and counts why.
    pub fn accept(&self, signed: &SignedUpdate) -> Result<(), Rejected> {
        match signed.open_with(
            &self.trust.verifier,
            &self.trust.cluster_id,
            &self.trust.keys,
        ) {
            Ok(update) => {
                self.apply(update);
                Ok(())
            }
            Err(e) => {
                self.rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!("starling_config_updates_rejected_total", "reason" => e.reason())
                    .increment(1);
                tracing::warn!(
                    app_id = %signed.app_id,
                    version = signed.version,
                    reason = e.reason(),
                    error = %e,
                    "app-config update refused"
                );
                Err(e)
            }
        }
    }

    /// Applies an update unless an equal or newer one was applied already. Only for updates
    /// already verified ([`Self::accept`] checks them).
    fn apply(&self, update: ConfigUpdate) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let app = update.app_id().clone();
        if s.versions.get(&app).is_some_and(|v| *v >= update.version()) {
            return;
        }
        s.versions.insert(app.clone(), update.version());
        if let Some(old) = s.apps.remove(&app) {
            for k in &old.keys {
                s.key_to_app.remove(&k.id);
            }
            for t in &old.token_secrets {
                s.kid_to_app.remove(&t.kid);
            }
        }
        if let ConfigUpdate::Upsert(c) = update {
            for k in &c.keys {
                s.key_to_app.insert(k.id.clone(), app.clone());
            }
            for t in &c.token_secrets {
                s.kid_to_app.insert(t.kid.clone(), app.clone());
            }
            s.apps.insert(app, Arc::new(c));
        }
        drop(s);
        self.applied.send_modify(|n| *n += 1);
    }

    /// Loads the feed's snapshot, then follows it until the feed closes. Returns once the
    /// snapshot is applied; following goes on in a task.
    pub async fn follow(self: &Arc<Self>, feed: Arc<dyn ConfigFeed>) -> anyhow::Result<()> {
        let mut rx = feed.updates();
        for u in feed.snapshot().await? {
            let _ = self.accept(&u);
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(u) => {
                        let _ = me.accept(&u);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "app config feed lagged; reloading the snapshot"
                        );
                        match feed.snapshot().await {
                            Ok(all) => all.iter().for_each(|u| {
                                let _ = me.accept(u);
                            }),
                            Err(e) => tracing::error!(error = %e, "reloading app config failed"),
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(())
    }

    /// The app's configuration, if known.
    pub fn app(&self, app: &AppId) -> Option<Arc<AppConfig>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .apps
            .get(app)
            .cloned()
    }

    /// The ids of the apps this node knows.
    pub fn app_ids(&self) -> Vec<String> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .apps
            .keys()
            .map(|a| a.to_string())
            .collect()
    }

    fn check_active(c: &AppConfig) -> Result<(), ApiError> {
        match c.suspended.as_deref() {
            None => Ok(()),
            Some(why) => Err(ApiError::new(
                ErrorCode::AppSuspended,
                format!(
                    "app {} is suspended ({why}); contact the operator",
                    c.app_id
                ),
            )),
        }
    }

    /// Authenticates a presented API key (`Authorization: Bearer key_….secret`).
    pub fn authenticate_key(&self, presented: &str) -> Result<KeyPrincipal, ApiError> {
        let (id, secret) = split_api_key(presented.trim())
            .ok_or_else(|| unauthorized("malformed API key: expected key_<id>.<secret>"))?;
        let app = {
            let s = self.state.read().unwrap_or_else(|p| p.into_inner());
            s.key_to_app.get(&id).and_then(|a| s.apps.get(a).cloned())
        }
        .ok_or_else(|| unauthorized("unknown API key"))?;
        let key = app
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| unauthorized("unknown API key"))?;
        if !self.hasher.verify(secret, &key.secret_hash) {
            return Err(unauthorized("unknown API key"));
        }
        if key.revoked {
            return Err(unauthorized(format!("API key {id} was revoked")));
        }
        if key.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(unauthorized(format!("API key {id} has expired")));
        }
        Self::check_active(&app)?;
        Ok(KeyPrincipal {
            app_id: app.app_id.clone(),
            tenant_id: app.tenant_id.clone(),
            key_id: id,
            scopes: key.scopes.clone(),
            grants: crate::scope::Grants::of(&key.scopes),
            limits: app.limits.clone(),
        })
    }

    /// Mints a user token signed with the app's newest valid secret.
    pub fn mint_token(
        &self,
        app: &AppId,
        user_id: &str,
        ttl_secs: u64,
    ) -> Result<MintedToken, ApiError> {
        let c = self
            .app(app)
            .ok_or_else(|| ApiError::not_found("app", app))?;
        let now = Utc::now();
        let secret = c
            .token_secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|e| e > now))
            .max_by(|a, b| a.kid.cmp(&b.kid))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    "the app has no valid token secret; rotate one",
                )
            })?;
        let exp = now + chrono::Duration::seconds(ttl_secs as i64);
        let id = starling_core::id::UserTokenId::generate().into_string();
        let claims = UserClaims {
            sub: user_id.to_owned(),
            app_id: app.to_string(),
            exp: exp.timestamp(),
            iat: now.timestamp(),
            nbf: None,
            jti: Some(id.clone()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(secret.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.secret.as_bytes()),
        )
        .map_err(ApiError::internal)?;
        Ok(MintedToken {
            token,
            id,
            expires_at: exp,
        })
    }

    /// Verifies a user token: HS256 only, signed with a valid secret of the app its `kid`
    /// names, not expired, and its `app_id` claim is that app.
    pub fn verify_token(&self, token: &str) -> Result<UserPrincipal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(format!("malformed user token: {e}")))?;
        if header.alg != Algorithm::HS256 {
            return Err(unauthorized("user token must be signed with HS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("user token has no kid in its header"))?;
        let (app, secret) = {
            let s = self.state.read().unwrap_or_else(|p| p.into_inner());
            let app = s
                .kid_to_app
                .get(&kid)
                .and_then(|a| s.apps.get(a).cloned())
                .ok_or_else(|| unauthorized("user token signed with an unknown key"))?;
            let secret = app.token_secrets.iter().find(|t| t.kid == kid).cloned();
            (app, secret)
        };
        let secret = secret.ok_or_else(|| unauthorized("user token signed with an unknown key"))?;
        if secret.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(unauthorized("user token signed with a retired key"));
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "sub"]);
        // jsonwebtoken checks `nbf` only when told to: a token not valid yet is refused.
        v.validate_nbf = true;
        v.leeway = 5;
        let data = jsonwebtoken::decode::<UserClaims>(
            token,
            &DecodingKey::from_secret(secret.secret.as_bytes()),
            &v,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                unauthorized("user token has expired")
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                unauthorized("user token is not valid yet (nbf is in the future)")
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                unauthorized("user token signature is invalid")
            }
            _ => unauthorized(format!("invalid user token: {e}")),
        })?;
        if data.claims.app_id != app.app_id.as_str() {
            return Err(unauthorized("user token is for another app"));
        }
        if data
            .claims
            .jti
            .as_ref()
            .is_some_and(|j| j.is_empty() || j.len() > 128)
        {
            return Err(unauthorized("user token jti must be 1..=128 bytes"));
        }
        Self::check_active(&app)?;
        Ok(UserPrincipal {
            app_id: app.app_id.clone(),
            user_id: data.claims.sub,
            limits: app.limits.clone(),
            token: TokenFacts {
                kid,
                jti: data.claims.jti,
                iat: data.claims.iat,
            },
        })
    }
}

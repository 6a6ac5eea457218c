//! Configuration of a control-plane process (and of `starling standalone`).
//!
//! Layers: built-in defaults → TOML file (`--config`) → `STARLING_*` env (`__` between sections,
//! e.g. `STARLING_DATABASE__URL`). Secrets come from env or files and are never logged.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use starling_core::config::ConfigError;
use starling_core::seal::{SealKey, Sealer};
use starling_core::telemetry::TelemetryConfig;

/// Everything a control-plane process needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// HTTP server.
    pub server: ServerConfig,
    /// The control-plane database.
    pub database: DatabaseConfig,
    /// Shared cache (idempotency keys).
    pub cache: CacheConfig,
    /// Operator authentication and key hashing.
    pub auth: AuthConfig,
    /// Logs, traces, metrics.
    pub telemetry: TelemetryConfig,
    /// The data-plane gateway of a standalone process (or of a `data-plane` node).
    pub gateway: starling_core::config::GatewayConfig,
    /// Apache Pulsar, the bus between the planes and the nodes of a cell.
    pub pulsar: PulsarConfig,
    /// The GraphQL console API for tenant admins.
    pub console: ConsoleConfig,
    /// Stripe billing (off unless a secret key is set).
    pub billing: BillingConfig,
    /// The demo chat page of `standalone` (development only).
    pub demo: DemoConfig,
}

/// `[billing]`: Stripe. Billing is on only when a Stripe secret key is configured.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// The Stripe secret key (`sk_live_…`/`sk_test_…`); prefer
    /// `STARLING_BILLING__STRIPE_SECRET_KEY` or `stripe_secret_key_file`.
    pub stripe_secret_key: Option<String>,
    /// A file holding the Stripe secret key.
    pub stripe_secret_key_file: Option<PathBuf>,
    /// The signing secret of the Stripe webhook endpoint (`whsec_…`); without it inbound
    /// webhooks are refused.
    pub stripe_webhook_secret: Option<String>,
    /// A file holding the webhook signing secret.
    pub stripe_webhook_secret_file: Option<PathBuf>,
    /// Base URL of the Stripe API (stripe-mock in tests).
    pub stripe_api_base: String,
    /// Webhooks whose signature timestamp is further than this from now are refused (replays).
    pub webhook_tolerance_secs: u64,
    /// After a failed payment, how long the tenant's apps keep working before they are
    /// suspended (a payment restores them).
    pub grace_period_secs: u64,
    /// Seconds between billing runs: suspending tenants whose grace ended, reporting metered
    /// usage to Stripe.
    pub sync_interval_secs: u64,
    /// The Stripe billing meter's event name that message usage is reported under.
    pub meter_event_name: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            stripe_secret_key: None,
            stripe_secret_key_file: None,
            stripe_webhook_secret: None,
            stripe_webhook_secret_file: None,
            stripe_api_base: "https://api.stripe.com/".into(),
            webhook_tolerance_secs: 300,
            grace_period_secs: 3 * 24 * 3600,
            sync_interval_secs: 300,
            meter_event_name: "starling_messages".into(),
        }
    }
}

/// `[console]`: the GraphQL console API (`/console/graphql`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console API at all.
    pub enabled: bool,
    /// Serve GraphiQL on `GET /console/graphql`. Unset: on in `standalone`, off in `control-plane`.
    pub graphiql: Option<bool>,
    /// Answer introspection queries. Unset: on in `standalone`, off in `control-plane`.
    pub introspection: Option<bool>,
    /// Largest calculated cost of one query; costlier queries are refused before they run.
    pub max_cost: u32,
    /// Deepest selection nesting of one query.
    pub max_depth: u32,
    /// Points in each account's bucket; every query spends its cost from it.
    pub budget_points: u32,
    /// Points given back to each bucket per second.
    pub budget_restore_per_second: u32,
    /// Lifetime of a session access token (JWT), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds; each refresh issues a new one.
    pub refresh_token_ttl_secs: u64,
    /// Failed logins in a row after which an account is locked.
    pub login_max_failures: u32,
    /// How long a locked account stays locked, in seconds.
    pub lockout_secs: u64,
    /// How long an invitation can be accepted, in seconds.
    pub invitation_ttl_secs: u64,
    /// Largest GraphQL request body, in bytes. A larger one is refused with HTTP 413 and a
    /// GraphQL error with `extensions.code = payload_too_large`, before it is read when it
    /// declares its length, else as soon as it passes the limit (never buffered whole). Multipart
    /// requests (file uploads) are refused: no console operation takes a file. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Proxies (CIDR blocks or single addresses, e.g. `["10.0.0.0/8"]`) whose `X-Forwarded-For`
    /// is believed. The client's address (the per-address login limit, sessions, the audit log)
    /// is the peer's address unless the peer is one of these: then it is the right-most address in
    /// `X-Forwarded-For` that is not a trusted proxy. Default empty: the header is ignored, since
    /// anyone can send it. Set it when the console is behind a reverse proxy or load balancer,
    /// else every user shares the proxy's address (and its login limit).
    pub trusted_proxies: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            graphiql: None,
            introspection: None,
            max_cost: 1000,
            max_depth: 15,
            budget_points: 2000,
            budget_restore_per_second: 100,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            login_max_failures: 5,
            lockout_secs: 900,
            invitation_ttl_secs: 7 * 24 * 3600,
            max_body_bytes: 256 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field(
                "stripe_secret_key",
                &self.stripe_secret_key.as_ref().map(|_| "***"),
            )
            .field("stripe_secret_key_file", &self.stripe_secret_key_file)
            .field(
                "stripe_webhook_secret",
                &self.stripe_webhook_secret.as_ref().map(|_| "***"),
            )
            .field(
                "stripe_webhook_secret_file",
                &self.stripe_webhook_secret_file,
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("grace_period_secs", &self.grace_period_secs)
            .field("sync_interval_secs", &self.sync_interval_secs)
            .field("meter_event_name", &self.meter_event_name)
            .finish()
    }
}

fn plain_secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    field: &str,
) -> Result<Option<String>, ConfigError> {
    let v = match (value, file) {
        (Some(v), _) => Some(v.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::field(
                        &format!("{field}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if v.as_deref().is_some_and(str::is_empty) {
        return Err(ConfigError::field(field, "must not be empty"));
    }
    Ok(v)
}

impl BillingConfig {
    /// The Stripe secret key; `None`: billing is off.
    pub fn stripe_secret_key(&self) -> Result<Option<String>, ConfigError> {
        plain_secret(
            &self.stripe_secret_key,
            &self.stripe_secret_key_file,
            "billing.stripe_secret_key",
        )
    }

    /// The webhook signing secret.
    pub fn stripe_webhook_secret(&self) -> Result<Option<String>, ConfigError> {
        plain_secret(
            &self.stripe_webhook_secret,
            &self.stripe_webhook_secret_file,
            "billing.stripe_webhook_secret",
        )
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.stripe_secret_key()?;
        self.stripe_webhook_secret()?;
        if !(self.stripe_api_base.starts_with("https://")
            || self.stripe_api_base.starts_with("http://"))
        {
            return Err(ConfigError::field(
                "billing.stripe_api_base",
                "must start with https:// or http://",
            ));
        }
        if self.sync_interval_secs == 0 {
            return Err(ConfigError::field(
                "billing.sync_interval_secs",
                "must be at least 1",
            ));
        }
        if self.meter_event_name.is_empty() || self.meter_event_name.len() > 100 {
            return Err(ConfigError::field(
                "billing.meter_event_name",
                "must be 1..=100 characters",
            ));
        }
        Ok(())
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("console.max_cost", self.max_cost as u64),
            ("console.max_depth", self.max_depth as u64),
            ("console.budget_points", self.budget_points as u64),
            (
                "console.budget_restore_per_second",
                self.budget_restore_per_second as u64,
            ),
            ("console.access_token_ttl_secs", self.access_token_ttl_secs),
            (
                "console.refresh_token_ttl_secs",
                self.refresh_token_ttl_secs,
            ),
            ("console.login_max_failures", self.login_max_failures as u64),
            ("console.lockout_secs", self.lockout_secs),
            ("console.invitation_ttl_secs", self.invitation_ttl_secs),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::field(field, "must be at least 1"));
            }
        }
        if self.max_cost > self.budget_points {
            return Err(ConfigError::field(
                "console.max_cost",
                "must not exceed console.budget_points",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::field(
                "console.max_body_bytes",
                "must be at least 1024",
            ));
        }
        self.trusted_proxy_nets()?;
        Ok(())
    }

    /// `trusted_proxies` parsed: CIDR blocks, a bare address being a block of one.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::field(
                            &format!("console.trusted_proxies[{i}]"),
                            format!("{s:?} is not an address or a CIDR block (e.g. 10.0.0.0/8)"),
                        )
                    })
            })
            .collect()
    }
}

/// `[demo]`: the demo chat page at `/demo`, served by `standalone` only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve the demo page and its token endpoint. Anyone who reaches the server can then act
    /// as any user of the demo app, so it is off by default and refused unless `server.listen`
    /// is a loopback address. Never enable it in production.
    pub enabled: bool,
}

/// `[pulsar]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PulsarConfig {
    /// `pulsar+ssl://host:6651` (production: TLS, with `tls_ca_file` unless the broker's
    /// certificate is from a public CA) or `pulsar://host:6650` (plain: loopback only, unless
    /// `allow_insecure`). Required by `data-plane`; when set for `control-plane`, app
    /// configuration is published, signed, on each cell's feed topic. Unset in standalone:
    /// in-process.
    pub url: Option<String>,
    /// The token (JWT) this process shows the broker, for the binary protocol and the admin REST
    /// API; its role is what the broker authorizes. Secret: prefer `STARLING_PULSAR__TOKEN` or
    /// `token_file`. Unset: no authentication (a broker with authentication refuses the client).
    pub token: Option<String>,
    /// A file holding the token (e.g. a mounted Kubernetes secret).
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate, for `pulsar+ssl://` and
    /// `https://` admin URLs (trusted in addition to the public web roots). The broker's
    /// certificate must name the host of `url`: hostname verification is always on.
    pub tls_ca_file: Option<PathBuf>,
    /// Allow a plain `pulsar://` (or `http://` admin) URL to a host that is not loopback.
    /// Everything on the bus — app configuration with webhook secrets, messages — then crosses
    /// the network in clear text: for development only.
    pub allow_insecure: bool,
    /// Prefix of every topic name: each cell's feed is `<prefix>app-config-<cluster id>`, its
    /// usage `<prefix>usage-<cluster id>`; a cell's node inboxes `<prefix>inbox-<node>` live in
    /// the cell's own namespace, `<namespace>-cell-<cluster id>` (see
    /// `starling_core::pulsar::cell_topic_prefix`).
    pub topic_prefix: String,
    /// The broker's admin REST API, `https://host:8443` (with a super-user's token). When set,
    /// `control-plane` makes sure at start that the tenant and namespace of `topic_prefix`
    /// exist and provisions every cell (at registration and at start): feed policies, usage
    /// topic, the cell's namespace and its role's grants (`starling_core::pulsar::provision_cell`);
    /// a `data-plane` node provisions its own cell the same way (development). Unset: all of it
    /// must exist already.
    pub admin_url: Option<String>,
    /// Backlog size in bytes at which the broker compacts the app-config topic by itself
    /// (applied when `admin_url` is set).
    pub compaction_threshold_bytes: u64,
}

impl std::fmt::Debug for PulsarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("allow_insecure", &self.allow_insecure)
            .field("topic_prefix", &self.topic_prefix)
            .field("admin_url", &self.admin_url)
            .field(
                "compaction_threshold_bytes",
                &self.compaction_threshold_bytes,
            )
            .finish()
    }
}

impl PulsarConfig {
    /// The token and CA to reach the broker with (binary protocol and admin REST API).
    pub fn auth(&self) -> Result<starling_core::pulsar::PulsarAuth, ConfigError> {
        Ok(starling_core::pulsar::PulsarAuth {
            token: plain_secret(&self.token, &self.token_file, "pulsar.token")?,
            ca_file: self.tls_ca_file.clone(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.auth()?;
        if let Some(ca) = &self.tls_ca_file {
            let pem = std::fs::read_to_string(ca).map_err(|e| {
                ConfigError::field(
                    "pulsar.tls_ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                )
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::field(
                    "pulsar.tls_ca_file",
                    format!("{} holds no PEM certificate", ca.display()),
                ));
            }
        }
        if self.allow_insecure {
            return Ok(());
        }
        let plain = [
            (
                "pulsar.url",
                self.url.as_deref(),
                "pulsar://",
                "pulsar+ssl://",
            ),
            (
                "pulsar.admin_url",
                self.admin_url.as_deref(),
                "http://",
                "https://",
            ),
        ];
        for (field, url, scheme, tls) in plain {
            if let Some(rest) = url.and_then(|u| u.strip_prefix(scheme))
                && !only_loopback_hosts(rest)
            {
                return Err(ConfigError::field(
                    field,
                    format!(
                        "{scheme} to a host that is not loopback sends the bus in clear text: \
                         use {tls} (with pulsar.tls_ca_file), or set pulsar.allow_insecure = true \
                         (development only)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether every host of `hosts` (`host:port[,host:port…][/path]`, the part of a URL after the
/// scheme) is `localhost` or a loopback IP.
fn only_loopback_hosts(hosts: &str) -> bool {
    let authority = hosts.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    authority.split(',').all(|hp| {
        let host = if let Some(v6) = hp.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            hp.rsplit_once(':').map_or(hp, |(h, _)| h)
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

impl Default for PulsarConfig {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            token_file: None,
            tls_ca_file: None,
            allow_insecure: false,
            topic_prefix: "persistent://public/default/starling-".into(),
            admin_url: None,
            compaction_threshold_bytes: 1024 * 1024,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:7400` (`0.0.0.0:7400` for every interface).
    pub listen: String,
    /// Where a `data-plane` node serves its internal API (`/internal/v1`, the control plane's
    /// moderation calls), apart from the public listener: bind it to the pod network (e.g.
    /// `0.0.0.0:7401`) and never expose it outside the platform. Every call needs a token the
    /// control plane signed for this cell. `standalone` binds its own on a loopback port.
    pub internal_listen: String,
    /// Largest request body, in bytes, on every route of the control plane's listener (the admin
    /// API, the internal API, and in `standalone` the data plane's routes; the console's GraphQL
    /// has its own, smaller `console.max_body_bytes`). A larger body is refused with 413 `payload_too_large`, before
    /// it is read when it declares its length, else as soon as it passes the limit. Default
    /// 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".into(),
            internal_listen: "127.0.0.1:7401".into(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[database]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:pass@host:port/db` or `sqlite://path?mode=rwc`. Standalone defaults to a
    /// SQLite file in its data dir; `control-plane` requires it.
    pub url: Option<String>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// PostgreSQL `statement_timeout` of every connection, in milliseconds (0: none): a
    /// statement running longer fails and its transaction rolls back. Ignored on SQLite.
    pub statement_timeout_ms: u64,
    /// PostgreSQL `lock_timeout` of every connection, in milliseconds (0: none): a statement
    /// waiting longer for a row or table lock (held by a stuck transaction, say) fails, and a
    /// send answers `unavailable` instead of holding the node's committer. Ignored on SQLite.
    pub lock_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let t = starling_core::db::Timeouts::default();
        Self {
            url: None,
            max_connections: 20,
            statement_timeout_ms: t.statement_ms,
            lock_timeout_ms: t.lock_ms,
        }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL timeouts set.
    pub fn timeouts(&self) -> starling_core::db::Timeouts {
        starling_core::db::Timeouts {
            statement_ms: self.statement_timeout_ms,
            lock_ms: self.lock_timeout_ms,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .finish()
    }
}

/// A URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `[cache]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `redis://host:port/db`. Unset: an in-process cache (fine for one process only).
    pub redis_url: Option<String>,
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .finish()
    }
}

/// `[auth]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The operator's bearer token for the admin API (at least 32 characters). Prefer
    /// `STARLING_AUTH__OPERATOR_TOKEN` or `operator_token_file`.
    pub operator_token: Option<String>,
    /// A file holding the operator token.
    pub operator_token_file: Option<PathBuf>,
    /// The secret that API-key hashes are keyed with (at least 32 characters). Changing it
    /// invalidates every API key.
    pub key_hash_secret: Option<String>,
    /// A file holding the key-hash secret.
    pub key_hash_secret_file: Option<PathBuf>,
    /// The control plane's Ed25519 signing key (base64url of 32 random bytes; `starling keygen`
    /// makes one): it signs every app-configuration update and every call to a cell's internal
    /// API. Only the control plane holds it. Required by `control-plane` with a Pulsar feed;
    /// standalone makes one on first start. Prefer `STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY`
    /// or the file.
    pub control_plane_signing_key: Option<String>,
    /// A file holding the signing key.
    pub control_plane_signing_key_file: Option<PathBuf>,
    /// The public keys a cell node trusts for the control plane's signatures (base64url; two
    /// while the signing key is rotated). Required by `data-plane`. Public: safe to publish.
    pub control_plane_public_keys: Vec<String>,
    /// The key that seals the secrets the database holds (webhook and token secrets), as
    /// `<key id>:<base64 of 32 random bytes>`, e.g. `k1:$(openssl rand -base64 32)`. Its own
    /// root secret, not derived from `key_hash_secret`. Required by `control-plane`; `standalone`
    /// makes one. Prefer `STARLING_AUTH__SEALING_KEY` or `sealing_key_file`.
    pub sealing_key: Option<String>,
    /// A file holding the sealing key (`<key id>:<base64>`).
    pub sealing_key_file: Option<PathBuf>,
    /// Older sealing keys (`<key id>:<base64>` each), still accepted for opening values sealed
    /// before a rotation; `starling secrets reseal` moves every value to `sealing_key`, after
    /// which they can be dropped.
    pub previous_sealing_keys: Vec<String>,
    /// A file holding older sealing keys, one `<key id>:<base64>` a line (added to
    /// `previous_sealing_keys`).
    pub previous_sealing_keys_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "***"),
            )
            .field("operator_token_file", &self.operator_token_file)
            .field(
                "key_hash_secret",
                &self.key_hash_secret.as_ref().map(|_| "***"),
            )
            .field("key_hash_secret_file", &self.key_hash_secret_file)
            .field(
                "control_plane_signing_key",
                &self.control_plane_signing_key.as_ref().map(|_| "***"),
            )
            .field(
                "control_plane_signing_key_file",
                &self.control_plane_signing_key_file,
            )
            .field("control_plane_public_keys", &self.control_plane_public_keys)
            .field("sealing_key", &self.sealing_key.as_ref().map(|_| "***"))
            .field("sealing_key_file", &self.sealing_key_file)
            .field(
                "previous_sealing_keys",
                &self
                    .previous_sealing_keys
                    .iter()
                    .map(|_| "***")
                    .collect::<Vec<_>>(),
            )
            .field(
                "previous_sealing_keys_file",
                &self.previous_sealing_keys_file,
            )
            .finish()
    }
}

fn secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    field: &str,
) -> Result<Option<String>, ConfigError> {
    let v = match (value, file) {
        (Some(v), _) => Some(v.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::field(
                        &format!("{field}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(v) = &v
        && v.len() < 32
    {
        return Err(ConfigError::field(field, "must be at least 32 characters"));
    }
    Ok(v)
}

impl AuthConfig {
    /// The operator token, from the value or the file.
    pub fn operator_token(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.operator_token,
            &self.operator_token_file,
            "auth.operator_token",
        )
    }

    /// The key-hash secret, from the value or the file.
    pub fn key_hash_secret(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.key_hash_secret,
            &self.key_hash_secret_file,
            "auth.key_hash_secret",
        )
    }

    /// The control plane's signing key, from the value or the file.
    pub fn control_plane_signing_key(
        &self,
    ) -> Result<Option<starling_core::signing::SigningKey>, ConfigError> {
        const FIELD: &str = "auth.control_plane_signing_key";
        secret(
            &self.control_plane_signing_key,
            &self.control_plane_signing_key_file,
            FIELD,
        )?
        .map(|t| {
            starling_core::signing::SigningKey::from_text(&t)
                .map_err(|e| ConfigError::field(FIELD, format!("{e} (run `starling keygen`)")))
        })
        .transpose()
    }

    /// The public keys a cell trusts for the control plane's signatures.
    pub fn control_plane_verifier(&self) -> Result<starling_core::signing::Verifier, ConfigError> {
        starling_core::signing::Verifier::from_texts(&self.control_plane_public_keys)
            .map_err(|e| ConfigError::field("auth.control_plane_public_keys", e.to_string()))
    }

    /// The current sealing key, from the value or the file; `None` when neither is set.
    pub fn sealing_key(&self) -> Result<Option<SealKey>, ConfigError> {
        plain_secret(
            &self.sealing_key,
            &self.sealing_key_file,
            "auth.sealing_key",
        )?
        .map(|k| SealKey::parse(&k).map_err(|e| ConfigError::field("auth.sealing_key", e)))
        .transpose()
    }

    /// The older sealing keys, from the list and the file.
    pub fn previous_sealing_keys(&self) -> Result<Vec<SealKey>, ConfigError> {
        let mut keys = Vec::new();
        for (i, k) in self.previous_sealing_keys.iter().enumerate() {
            keys.push(
                SealKey::parse(k).map_err(|e| {
                    ConfigError::field(&format!("auth.previous_sealing_keys[{i}]"), e)
                })?,
            );
        }
        if let Some(path) = &self.previous_sealing_keys_file {
            let field = "auth.previous_sealing_keys_file";
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::field(field, format!("cannot read {}: {e}", path.display()))
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(
                    SealKey::parse(line)
                        .map_err(|e| ConfigError::field(field, format!("line {}: {e}", n + 1)))?,
                );
            }
        }
        Ok(keys)
    }

    /// The sealer: `current` (the configured `sealing_key`, or a standalone process's stored
    /// one) seals; the previous keys still open.
    pub fn sealer(&self, current: SealKey) -> Result<Sealer, ConfigError> {
        Sealer::new(current, self.previous_sealing_keys()?)
            .map_err(|e| ConfigError::field("auth.previous_sealing_keys", e))
    }

    /// The sealer from configuration alone: an error naming `STARLING_AUTH__SEALING_KEY`
    /// when no sealing key is configured (what `control-plane` and `secrets reseal` need).
    pub fn required_sealer(&self, command: &str) -> Result<Sealer, ConfigError> {
        let current = self.sealing_key()?.ok_or_else(|| {
            ConfigError::field(
                "auth.sealing_key",
                format!(
                    "required for {command}: set STARLING_AUTH__SEALING_KEY (or \
                     auth.sealing_key_file) to <key id>:<base64 of 32 random bytes>, e.g. \
                     k1:$(openssl rand -base64 32); keep it outside the database, it opens \
                     every secret the database holds"
                ),
            )
        })?;
        self.sealer(current)
    }
}

impl ControlPlaneConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.internal_listen_addr()?;
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::field(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err(ConfigError::field(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::field(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if let Some(url) = &self.cache.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::field(
                "cache.redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        self.auth.operator_token()?;
        self.auth.key_hash_secret()?;
        self.auth.control_plane_signing_key()?;
        self.auth.control_plane_verifier()?;
        if let Some(k) = self.auth.sealing_key()? {
            self.auth.sealer(k)?;
        } else {
            self.auth.previous_sealing_keys()?;
        }
        self.telemetry.validate()?;
        self.gateway.validate()?;
        self.console.validate()?;
        self.billing.validate()?;
        if self.demo.enabled && !self.listen_addr()?.ip().is_loopback() {
            return Err(ConfigError::field(
                "demo.enabled",
                "the demo hands out user tokens to anyone: it is only allowed with a loopback \
                 server.listen (e.g. 127.0.0.1:7400)",
            ));
        }
        if let Some(u) = &self.pulsar.url
            && !(u.starts_with("pulsar://") || u.starts_with("pulsar+ssl://"))
        {
            return Err(ConfigError::field(
                "pulsar.url",
                "must start with pulsar:// or pulsar+ssl://",
            ));
        }
        if !self.pulsar.topic_prefix.starts_with("persistent://")
            && !self.pulsar.topic_prefix.starts_with("non-persistent://")
        {
            return Err(ConfigError::field(
                "pulsar.topic_prefix",
                "must start with persistent:// (e.g. persistent://public/default/starling-)",
            ));
        }
        if let Some(u) = &self.pulsar.admin_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ConfigError::field(
                    "pulsar.admin_url",
                    "must start with http:// or https:// (the broker's web service, port 8080 by default)",
                ));
            }
            if !self.pulsar.topic_prefix.starts_with("persistent://") {
                return Err(ConfigError::field(
                    "pulsar.topic_prefix",
                    "must be persistent://tenant/namespace/… when pulsar.admin_url is set",
                ));
            }
        }
        self.pulsar.validate()?;
        Ok(())
    }

    /// The address a data-plane node serves its internal API on.
    pub fn internal_listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.internal_listen.parse().map_err(|e| {
            ConfigError::field(
                "server.internal_listen",
                format!("{e} (expected host:port, e.g. 0.0.0.0:7401)"),
            )
        })
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|e| {
            ConfigError::field(
                "server.listen",
                format!("{e} (expected host:port, e.g. 127.0.0.1:7400)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        let c = ControlPlaneConfig {
            auth: AuthConfig {
                operator_token: Some("s".repeat(40)),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("ssss"));
    }

    #[test]
    fn demo_only_on_loopback() {
        let mut c = ControlPlaneConfig::default();
        c.demo.enabled = true;
        c.validate().expect("loopback default listen is fine");
        c.server.listen = "0.0.0.0:7400".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("demo.enabled"), "{e}");
        c.demo.enabled = false;
        c.validate().expect("no demo, any address");
    }

    #[test]
    fn sealing_keys_are_checked_at_load() {
        let key = |kid: &str| starling_core::seal::SealKey::generate(kid).unwrap();
        let mut c = ControlPlaneConfig::default();
        c.validate()
            .expect("no sealing key is valid config (standalone makes one)");
        let e = c
            .auth
            .required_sealer("control-plane")
            .unwrap_err()
            .to_string();
        assert!(e.contains("STARLING_AUTH__SEALING_KEY"), "{e}");
        c.auth.sealing_key = Some("k1:short".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.sealing_key:"), "{e}");
        c.auth.sealing_key = Some(key("k2").to_config_string());
        c.auth.previous_sealing_keys = vec![key("k1").to_config_string(), "bad".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.previous_sealing_keys[1]"), "{e}");
        c.auth.previous_sealing_keys = vec![key("k2").to_config_string()];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("auth.previous_sealing_keys") && e.contains("\"k2\""),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old-keys");
        std::fs::write(
            &file,
            format!("# retired 2026-12\n{}\n\n", key("k0").to_config_string()),
        )
        .unwrap();
        c.auth.previous_sealing_keys = vec![key("k1").to_config_string()];
        c.auth.previous_sealing_keys_file = Some(file.clone());
        c.validate().unwrap();
        let s = c.auth.required_sealer("control-plane").unwrap();
        assert_eq!(s.current_kid(), "k2");
        assert_eq!(c.auth.previous_sealing_keys().unwrap().len(), 2);
        std::fs::write(&file, "k0:nope\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.previous_sealing_keys_file: line 1"), "{e}");
        assert!(!format!("{c:?}").contains(c.auth.sealing_key.as_deref().unwrap()));
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ControlPlaneConfig::default();
        c.server.listen = "nope".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.listen")
        );
        let mut c = ControlPlaneConfig::default();
        c.auth.operator_token = Some("short".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.operator_token")
        );
        let mut c = ControlPlaneConfig::default();
        c.database.url = Some("mysql://x".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("database.url")
        );
        for bad in ["cp:7400", "ftp://cp", "http://", "http://u:p@cp:7400"] {
            let mut c = ControlPlaneConfig::default();
            c.gateway.control_plane_url = Some(bad.into());
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("gateway.control_plane_url"), "{bad}: {e}");
        }
        let mut c = ControlPlaneConfig::default();
        c.gateway.control_plane_url = Some("https://cp.internal:7400/starling".into());
        c.validate().expect("an https base URL with a path is fine");
        // Retention shorter than the retry schedule would delete dead letters unseen.
        let mut c = ControlPlaneConfig::default();
        c.gateway.webhooks.retention_secs = 86_400;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("gateway.webhooks.retention_secs"), "{e}");
        c.gateway.webhooks.retention_secs = 0;
        c.validate().expect("0 keeps events for good");
        c.gateway.webhooks.prune_interval_secs = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("gateway.webhooks.prune_interval_secs"), "{e}");
    }

    /// Plain Pulsar is refused beyond loopback unless allowed; the token is a secret.
    #[test]
    fn plain_pulsar_only_on_loopback_unless_allowed() {
        let check = |url: &str, admin: Option<&str>, insecure: bool| {
            let mut c = ControlPlaneConfig::default();
            c.pulsar.url = Some(url.into());
            c.pulsar.admin_url = admin.map(Into::into);
            c.pulsar.allow_insecure = insecure;
            c.validate().map_err(|e| e.to_string())
        };
        for ok in [
            "pulsar://127.0.0.1:6650",
            "pulsar://localhost:6650",
            "pulsar://[::1]:6650",
            "pulsar://127.0.0.1:6650,127.0.0.2:6650",
            "pulsar+ssl://pulsar.internal:6651",
        ] {
            check(ok, None, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "pulsar://pulsar.internal:6650",
            "pulsar://10.0.0.5:6650",
            "pulsar://127.0.0.1:6650,pulsar.internal:6650",
            "pulsar://localhost.evil.example:6650",
        ] {
            let e = check(bad, None, false).unwrap_err();
            assert!(
                e.contains("pulsar.url") && e.contains("allow_insecure"),
                "{bad}: {e}"
            );
            check(bad, None, true).unwrap_or_else(|e| panic!("{bad} allowed: {e}"));
        }
        let e = check(
            "pulsar+ssl://p:6651",
            Some("http://pulsar.internal:8080"),
            false,
        )
        .unwrap_err();
        assert!(e.contains("pulsar.admin_url"), "{e}");
        check("pulsar+ssl://p:6651", Some("https://p:8443"), false).unwrap();

        let mut c = ControlPlaneConfig::default();
        c.pulsar.tls_ca_file = Some("/nonexistent/ca.pem".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("pulsar.tls_ca_file"), "{e}");
        let mut c = ControlPlaneConfig::default();
        c.pulsar.token = Some("eyJ.tok3n-v4lue".into());
        assert!(!format!("{c:?}").contains("tok3n"));
        assert_eq!(
            c.pulsar.auth().unwrap().token.as_deref(),
            Some("eyJ.tok3n-v4lue")
        );
        c.pulsar.token = Some(" ".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("pulsar.token"), "{e}");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(map) = v.as_object() {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    keys(&path, v, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    /// docs/CONFIGURATION.md describes every setting there is.
    #[test]
    fn every_setting_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/CONFIGURATION.md"
        ))
        .unwrap();
        let mut all = Vec::new();
        let mut cfg = ControlPlaneConfig::default();
        // Fill the optional fields so that they appear in the serialized form.
        cfg.database.url = Some(String::new());
        cfg.cache.redis_url = Some(String::new());
        cfg.auth = AuthConfig {
            operator_token: Some(String::new()),
            operator_token_file: Some(PathBuf::new()),
            key_hash_secret: Some(String::new()),
            key_hash_secret_file: Some(PathBuf::new()),
            control_plane_signing_key: Some(String::new()),
            control_plane_signing_key_file: Some(PathBuf::new()),
            control_plane_public_keys: vec![],
            sealing_key: Some(String::new()),
            sealing_key_file: Some(PathBuf::new()),
            previous_sealing_keys: vec![],
            previous_sealing_keys_file: Some(PathBuf::new()),
        };
        cfg.gateway.cluster_id = Some(String::new());
        cfg.gateway.cell_credential = Some(Default::default());
        cfg.gateway.cell_credential_file = Some(PathBuf::new());
        cfg.gateway.config_keys_file = Some(PathBuf::new());
        cfg.telemetry.otlp_endpoint = Some(String::new());
        cfg.pulsar.url = Some(String::new());
        cfg.pulsar.token = Some(String::new());
        cfg.pulsar.token_file = Some(PathBuf::new());
        cfg.pulsar.tls_ca_file = Some(PathBuf::new());
        cfg.gateway.control_plane_url = Some(String::new());
        cfg.console.graphiql = Some(false);
        cfg.console.introspection = Some(false);
        cfg.billing.stripe_secret_key = Some(String::new());
        cfg.billing.stripe_secret_key_file = Some(PathBuf::new());
        cfg.billing.stripe_webhook_secret = Some(String::new());
        cfg.billing.stripe_webhook_secret_file = Some(PathBuf::new());
        keys("", &serde_json::to_value(&cfg).unwrap(), &mut all);
        assert!(all.len() > 10, "{all:?}");
        let mut section = "";
        let mut documented = std::collections::HashSet::new();
        for line in doc.lines() {
            let l = line.trim().trim_start_matches("# ");
            if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s;
            } else if let Some((k, _)) = l.split_once(" = ") {
                documented.insert(format!("{section}.{}", k.trim()));
            }
        }
        let missing: Vec<_> = all.iter().filter(|k| !documented.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "settings missing from docs/CONFIGURATION.md: {missing:?}"
        );
    }
}

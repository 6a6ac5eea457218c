//! Layered configuration: built-in defaults → a TOML file → `STARLING_*` environment variables
//! (`__` separates sections: `STARLING_SERVER__LISTEN=0.0.0.0:7400`).
//!
//! Every error names the field (`server.listen: …`), so a bad config fails at start, clearly.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a bad value (or the file could not be parsed).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// An error about one field.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::Invalid(format!("{field}: {message}"))
    }
}

/// Loads `T` from its defaults, then `file` (if given; it must exist), then the environment.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    // Every setting lives in a section, so its variable has a `__` (`STARLING_SERVER__LISTEN`);
    // other STARLING_* variables (STARLING_DATA_DIR, a shell's STARLING_TOKEN) are not config.
    fig = fig.merge(
        Env::prefixed("STARLING_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    fig.extract::<T>().map_err(|e| {
        // figment already says which key and which source; keep each error on its own line.
        let msgs: Vec<String> = e
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let src = match e.metadata.as_ref() {
                    Some(m) if m.name.contains("environment") && !key.is_empty() => {
                        format!(" (from STARLING_{})", e.path.join("__").to_uppercase())
                    }
                    Some(m) => format!(" (from {})", m.name),
                    None => String::new(),
                };
                if key.is_empty() {
                    format!("{}{src}", e.kind)
                } else {
                    format!("{key}: {}{src}", e.kind)
                }
            })
            .collect();
        ConfigError::Invalid(msgs.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        server: Server,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        port: u16,
    }
    impl Default for Server {
        fn default() -> Self {
            Server { port: 1 }
        }
    }

    #[test]
    fn file_layers_over_defaults_and_errors_name_the_field() {
        let dir = std::env::temp_dir().join(format!("starling-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(&f, "[server]\nport = 7\n").unwrap();
        let c: Cfg = load(Some(&f)).unwrap();
        assert_eq!(c.server.port, 7);

        std::fs::write(&f, "[server]\nport = \"x\"\n").unwrap();
        let e = load::<Cfg>(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("server.port"), "{e}");

        std::fs::write(&f, "[server]\nprot = 1\n").unwrap();
        let e = load::<Cfg>(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");

        assert!(load::<Cfg>(Some(&dir.join("missing.toml"))).is_err());

        // Env wins over the file; STARLING_* variables without a section are not config.
        std::fs::write(&f, "[server]\nport = 7\n").unwrap();
        #[allow(clippy::result_large_err)] // figment's Jail closure signature is fixed
        figment::Jail::expect_with(|jail| {
            jail.set_env("STARLING_SERVER__PORT", "9");
            jail.set_env("STARLING_TOKEN", "not config");
            let c: Cfg = load(Some(&f)).unwrap();
            assert_eq!(c.server.port, 9);
            jail.set_env("STARLING_SERVER__PORT", "nine");
            let e = load::<Cfg>(Some(&f)).unwrap_err().to_string();
            assert!(
                e.contains("server.port") && e.contains("STARLING_SERVER__PORT"),
                "{e}"
            );
            Ok(())
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `[gateway]`: how a data-plane node serves WebSocket clients and user tokens.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// This node's id within its cell (`STARLING_GATEWAY__NODE_ID`).
    pub node_id: String,
    /// The data-plane cluster (cell) this node serves: its id (`cls_…`) as registered with the
    /// control plane (`POST /admin/v1/clusters`). Required by `data-plane`: the node reads only
    /// its cell's app-configuration feed and accepts only updates and internal calls meant for
    /// this cell. Standalone serves its `local` cluster and ignores this.
    pub cluster_id: Option<String>,
    /// Largest WebSocket message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Frames queued for one connection before it counts as a slow consumer and is cut off.
    pub outbound_queue: usize,
    /// Least milliseconds between two writes to one connection (0: no wait). A busy connection
    /// then gets the frames that arrived meanwhile in one write, one system call per batch
    /// instead of per frame, at the price of up to this much latency; a quiet one is written
    /// at once.
    pub write_delay_ms: u64,
    /// Seconds between server pings; a connection silent for three of them is closed.
    pub heartbeat_secs: u64,
    /// Connections one user may hold at once (devices, tabs).
    pub max_connections_per_user: usize,
    /// Longest lifetime of a user token minted by the server API, in seconds.
    pub max_token_ttl_secs: u64,
    /// How long the registry keeps a connection after the node's last heartbeat (a dead node's
    /// connections vanish after this); nodes heartbeat every third of it.
    pub registry_ttl_secs: u64,
    /// Milliseconds between usage reports from this node to the control plane (and so how
    /// fresh the usage figures are).
    pub usage_flush_ms: u64,
    /// Most messages a node writes in one transaction (group commit): sends that arrive while
    /// the previous transaction runs are committed together, up to this many. `1` writes each
    /// message in its own transaction.
    pub send_batch_max: usize,
    /// Sends waiting for the node's committer at most; further sends wait to join the queue
    /// (back-pressure) instead of growing it.
    pub send_queue: usize,
    /// Longest time, in milliseconds, the node's committer spends on one batch of sends,
    /// retries included. A send not written by then is answered `unavailable` (retry with the
    /// same `client_msg_id`), and the committer goes on with the next batch: a database that
    /// hangs holds it this long at most, not once per send.
    pub commit_timeout_ms: u64,
    /// The control plane's base URL (`http://host:7400`), for a node of a cell: the server API
    /// manages webhook endpoints through its internal routes. Unset: those calls answer 503
    /// (standalone has the control plane in its process and ignores this).
    pub control_plane_url: Option<String>,
    /// This cell's credential for the control plane's internal routes (`scc_<id>.<secret>`, from
    /// `POST /admin/v1/clusters/{id}/credentials`). Required with `control_plane_url`. A
    /// secret: prefer `STARLING_GATEWAY__CELL_CREDENTIAL` or `cell_credential_file`.
    pub cell_credential: Option<SecretString>,
    /// A file holding the cell credential.
    pub cell_credential_file: Option<std::path::PathBuf>,
    /// This cell's config keys: X25519 secret keys (32 bytes, unpadded base64url; `starling
    /// keygen --cell` makes a pair), whose public halves are registered with the cluster
    /// (`config_public_key`). App-config updates sealed to any of them can be read; during a
    /// rotation list the new key and the old one. Secrets: prefer
    /// `STARLING_GATEWAY__CONFIG_KEYS='["…"]'` or `config_keys_file`.
    pub config_keys: Vec<SecretString>,
    /// A file holding config keys, one per line (added to `config_keys`).
    pub config_keys_file: Option<std::path::PathBuf>,
    /// `[gateway.webhooks]`: delivering events to customers' endpoints.
    pub webhooks: WebhookConfig,
}

/// A secret setting: `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `[gateway.webhooks]`: how a node delivers webhooks and calls pre-send hooks.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Whether this node delivers webhooks (events are recorded either way; another node, or
    /// this one later, delivers them).
    pub deliver: bool,
    /// Networks (CIDR, e.g. `10.0.0.0/8`, `127.0.0.1/32`) outbound requests may reach although
    /// they are private, loopback or link-local. Everything else of that kind is refused, after
    /// DNS resolution (SSRF guard).
    pub allow_networks: Vec<String>,
    /// Timeout of one delivery attempt, in milliseconds.
    pub attempt_timeout_ms: u64,
    /// Delays before each retry, in seconds; after the last one a delivery is dead-lettered.
    /// The default reaches about 4 days.
    pub retry_schedule_secs: Vec<u64>,
    /// An endpoint failing without a success for this long is disabled (seconds).
    pub disable_after_secs: u64,
    /// Multiplies every delay above (retries, disabling): `1.0` in production; tests compress
    /// the schedule with e.g. `0.0001`.
    pub time_scale: f64,
    /// Deliveries in flight at once on this node.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint on this node (at most `concurrency`): a
    /// slow endpoint cannot take every slot from the others. Ordered endpoints get one.
    pub endpoint_concurrency: usize,
    /// How often the node looks for due deliveries when it was not woken, in milliseconds.
    pub poll_interval_ms: u64,
    /// Longest timeout an app may give its pre-send hook, in milliseconds.
    pub max_pre_send_timeout_ms: u64,
    /// How long events and their deliveries and attempts are kept once nothing is due for them
    /// any more (every delivery delivered, dead-lettered or skipped), in seconds; `0` keeps
    /// them for good. Not scaled by `time_scale`.
    pub retention_secs: u64,
    /// How often a delivering node deletes what is past `retention_secs`, in seconds.
    pub prune_interval_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            deliver: true,
            allow_networks: Vec::new(),
            attempt_timeout_ms: 15_000,
            retry_schedule_secs: vec![
                5, 300, 1800, 7200, 18_000, 36_000, 36_000, 86_400, 86_400, 86_400,
            ],
            disable_after_secs: 5 * 86_400,
            time_scale: 1.0,
            concurrency: 64,
            endpoint_concurrency: 32,
            poll_interval_ms: 500,
            max_pre_send_timeout_ms: 5_000,
            retention_secs: 30 * 86_400,
            prune_interval_secs: 3_600,
        }
    }
}

impl WebhookConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, n) in self.allow_networks.iter().enumerate() {
            if n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::field(
                    &format!("gateway.webhooks.allow_networks[{i}]"),
                    "must be a network in CIDR notation (10.0.0.0/8) or an address",
                ));
            }
        }
        if !(100..=120_000).contains(&self.attempt_timeout_ms) {
            return Err(ConfigError::field(
                "gateway.webhooks.attempt_timeout_ms",
                "must be 100..=120000",
            ));
        }
        if self.retry_schedule_secs.is_empty() || self.retry_schedule_secs.len() > 50 {
            return Err(ConfigError::field(
                "gateway.webhooks.retry_schedule_secs",
                "must hold 1..=50 delays",
            ));
        }
        if !(self.time_scale > 0.0 && self.time_scale <= 1.0) {
            return Err(ConfigError::field(
                "gateway.webhooks.time_scale",
                "must be greater than 0 and at most 1",
            ));
        }
        if !(1..=4096).contains(&self.concurrency) {
            return Err(ConfigError::field(
                "gateway.webhooks.concurrency",
                "must be 1..=4096",
            ));
        }
        if !(1..=self.concurrency).contains(&self.endpoint_concurrency) {
            return Err(ConfigError::field(
                "gateway.webhooks.endpoint_concurrency",
                "must be 1..=concurrency",
            ));
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(ConfigError::field(
                "gateway.webhooks.poll_interval_ms",
                "must be 10..=60000",
            ));
        }
        if !(10..=30_000).contains(&self.max_pre_send_timeout_ms) {
            return Err(ConfigError::field(
                "gateway.webhooks.max_pre_send_timeout_ms",
                "must be 10..=30000",
            ));
        }
        // Shorter than the retry schedule would delete dead letters before anyone saw them.
        let schedule: u64 = self.retry_schedule_secs.iter().sum();
        if self.retention_secs != 0 && self.retention_secs < schedule.max(3_600) {
            return Err(ConfigError::field(
                "gateway.webhooks.retention_secs",
                format!(
                    "must be 0 (keep for good) or at least the whole retry schedule and an hour \
                     ({} s)",
                    schedule.max(3_600)
                ),
            ));
        }
        if !(1..=86_400).contains(&self.prune_interval_secs) {
            return Err(ConfigError::field(
                "gateway.webhooks.prune_interval_secs",
                "must be 1..=86400",
            ));
        }
        Ok(())
    }

    /// A delay of the schedule, scaled.
    pub fn scaled(&self, secs: u64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(secs as f64 * self.time_scale)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            cluster_id: None,
            max_frame_bytes: 64 * 1024,
            outbound_queue: 256,
            write_delay_ms: 0,
            heartbeat_secs: 25,
            max_connections_per_user: 10,
            max_token_ttl_secs: 30 * 24 * 3600,
            registry_ttl_secs: 30,
            control_plane_url: None,
            cell_credential: None,
            cell_credential_file: None,
            config_keys: vec![],
            config_keys_file: None,
            webhooks: WebhookConfig::default(),
            usage_flush_ms: 60_000,
            send_batch_max: 256,
            send_queue: 4096,
            commit_timeout_ms: 10_000,
        }
    }
}

impl GatewayConfig {
    /// The cell credential, from the value or the file; checked for shape.
    pub fn cell_credential(&self) -> Result<Option<String>, ConfigError> {
        const FIELD: &str = "gateway.cell_credential";
        let v = match (&self.cell_credential, &self.cell_credential_file) {
            (Some(v), _) => Some(v.0.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        ConfigError::field(
                            "gateway.cell_credential_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let Some(c) = &v
            && crate::internal_auth::split_cell_credential(c).is_none()
        {
            return Err(ConfigError::field(
                FIELD,
                "must be scc_<id>.<secret> as POST /admin/v1/clusters/{id}/credentials returned it",
            ));
        }
        Ok(v)
    }

    /// This cell's config keys, from the list and the file.
    pub fn config_keys(&self) -> Result<crate::cellkey::CellKeys, ConfigError> {
        let mut texts: Vec<String> = self.config_keys.iter().map(|k| k.0.clone()).collect();
        if let Some(path) = &self.config_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::field(
                    "gateway.config_keys_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            texts.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        crate::cellkey::CellKeys::from_texts(&texts).map_err(|e| {
            ConfigError::field(
                "gateway.config_keys",
                format!("{e} (each an X25519 secret key as `starling keygen --cell` prints it)"),
            )
        })
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cell_credential()?;
        self.config_keys()?;
        if let Some(c) = &self.cluster_id
            && crate::id::ClusterId::parse(c).is_err()
        {
            return Err(ConfigError::field(
                "gateway.cluster_id",
                "must be a cluster id (cls_…) as POST /admin/v1/clusters returned it",
            ));
        }
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ConfigError::field(
                "gateway.node_id",
                "must be 1..=64 of a-z, A-Z, 0-9, '-', '_'",
            ));
        }
        if let Some(u) = &self.control_plane_url {
            let ok = reqwest::Url::parse(u).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.username().is_empty()
            });
            if !ok {
                return Err(ConfigError::field(
                    "gateway.control_plane_url",
                    "must be an http:// or https:// base URL (e.g. http://control-plane:7400)",
                ));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_frame_bytes) {
            return Err(ConfigError::field(
                "gateway.max_frame_bytes",
                "must be 1024..=16777216",
            ));
        }
        if !(1..=1000).contains(&self.send_batch_max) {
            return Err(ConfigError::field(
                "gateway.send_batch_max",
                "must be 1..=1000",
            ));
        }
        if !(100..=600_000).contains(&self.commit_timeout_ms) {
            return Err(ConfigError::field(
                "gateway.commit_timeout_ms",
                "must be 100..=600000",
            ));
        }
        if !(1..=1_000_000).contains(&self.send_queue) {
            return Err(ConfigError::field(
                "gateway.send_queue",
                "must be 1..=1000000",
            ));
        }
        if !(8..=65536).contains(&self.outbound_queue) {
            return Err(ConfigError::field(
                "gateway.outbound_queue",
                "must be 8..=65536",
            ));
        }
        if self.write_delay_ms > 1000 {
            return Err(ConfigError::field(
                "gateway.write_delay_ms",
                "must be 0..=1000",
            ));
        }
        if !(1..=3600).contains(&self.heartbeat_secs) {
            return Err(ConfigError::field(
                "gateway.heartbeat_secs",
                "must be 1..=3600",
            ));
        }
        if self.max_connections_per_user == 0 {
            return Err(ConfigError::field(
                "gateway.max_connections_per_user",
                "must be at least 1",
            ));
        }
        if !(60..=365 * 24 * 3600).contains(&self.max_token_ttl_secs) {
            return Err(ConfigError::field(
                "gateway.max_token_ttl_secs",
                "must be 60..=31536000",
            ));
        }
        if !(3..=3600).contains(&self.registry_ttl_secs) {
            return Err(ConfigError::field(
                "gateway.registry_ttl_secs",
                "must be 3..=3600",
            ));
        }
        self.webhooks.validate()
    }
}

//! `starling standalone` and `starling control-plane`: wiring config, secrets, storage and the
//! HTTP server together.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use starling_console_api::{Console, Mode};
use starling_control_plane::api::AdminState;
use starling_control_plane::config::{ControlPlaneConfig, redact_url};
use starling_control_plane::server;
use starling_control_plane::service::ControlPlane;
use starling_core::appconfig::{ConfigFeed, InProcessCellFeeds, InProcessFeed};
use starling_core::seal::{SealKey, Sealer};
use starling_core::secret::{KeyHasher, random_token};
use starling_core::signing::Verifier;
use starling_core::usage::{InProcessUsageFeed, UsageFeed};
use starling_data_plane::bus::InProcessBus;
use starling_data_plane::directory::{CellTrust, Directory};
use starling_data_plane::node::Node;
use starling_data_plane::registry::InProcessRegistry;

/// Options of `starling standalone`.
pub struct Options {
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
}

/// Secrets a standalone process keeps in its data dir.
#[derive(Serialize, Deserialize)]
struct Secrets {
    operator_token: String,
    key_hash_secret: String,
    /// `kid:base64`; absent from files made before secrets were sealed (added at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealing_key: Option<String>,
}

const SEALING_KEY_COMMENT: &str = "# sealing_key seals the secrets the database holds (webhook and token secrets): without it\n\
     # they cannot be read. Keep it with the data, like the rest of this file.\n";

const SECRETS_FILE: &str = "secrets.toml";
const DB_FILE: &str = "starling.db";

/// Reads the data dir's secrets, or makes them on first start. Returns them and whether this is
/// the first start. Never makes new ones silently over existing data.
fn load_or_create_secrets(data_dir: &Path) -> anyhow::Result<(Secrets, bool)> {
    let path = data_dir.join(SECRETS_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut s: Secrets =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        if s.sealing_key.is_none() {
            // A data dir from before secrets were sealed: its database holds them in clear (the
            // control plane seals them at this start), so a new key loses nothing.
            let key = SealKey::generate("k1")?.to_config_string();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("adding a sealing key to {}", path.display()))?;
            let sep = if text.ends_with('\n') { "" } else { "\n" };
            f.write_all(format!("{sep}{SEALING_KEY_COMMENT}sealing_key = \"{key}\"\n").as_bytes())?;
            f.sync_all()?;
            tracing::info!(file = %path.display(), "sealing key added to the secrets file");
            s.sealing_key = Some(key);
        }
        return Ok((s, false));
    }
    if data_dir.join(DB_FILE).exists() {
        anyhow::bail!(
            "{} is missing but {} holds data: restore the secrets file (its key_hash_secret \
             checks every API key), or start with a new --data-dir",
            path.display(),
            data_dir.join(DB_FILE).display()
        );
    }
    let s = Secrets {
        operator_token: random_token("sop_"),
        key_hash_secret: random_token(""),
        sealing_key: Some(SealKey::generate("k1")?.to_config_string()),
    };
    let text = format!(
        "# Starling standalone secrets: keep this file private and keep it with the data.\n\
         # operator_token authenticates the admin API; key_hash_secret keys the API-key hashes.\n\
         {SEALING_KEY_COMMENT}{}",
        toml::to_string(&s)?
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok((s, true))
}

/// A standalone process's sealer: `auth.sealing_key` when configured, else the data dir's.
fn standalone_sealer(
    cfg: &ControlPlaneConfig,
    secrets: &Secrets,
    data_dir: &Path,
) -> anyhow::Result<Sealer> {
    let current = match cfg.auth.sealing_key()? {
        Some(k) => k,
        None => {
            let stored = secrets
                .sealing_key
                .as_deref()
                .context("the secrets file has no sealing_key")?;
            SealKey::parse(stored).with_context(|| {
                format!(
                    "sealing_key in {} is not valid",
                    data_dir.join(SECRETS_FILE).display()
                )
            })?
        }
    };
    Ok(cfg.auth.sealer(current)?)
}

/// `starling secrets reseal`: every sealed secret of the control-plane database sealed again
/// under the current sealing key (and any still in clear sealed). With `data_dir`, a
/// standalone data dir's database and stored key are the defaults.
pub async fn reseal(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg: ControlPlaneConfig = starling_core::config::load(config.as_deref())?;
    cfg.validate()?;
    let (db_url, sealer) = match &data_dir {
        Some(dir) => {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("data dir {}", dir.display()))?;
            if !dir.join(SECRETS_FILE).exists() {
                anyhow::bail!("{} does not exist", dir.join(SECRETS_FILE).display());
            }
            let (secrets, _) = load_or_create_secrets(&dir)?;
            let url = cfg.database.url.clone().unwrap_or_else(|| {
                format!("sqlite://{}?mode=rw", dir.join(DB_FILE).display())
            });
            (url, standalone_sealer(&cfg, &secrets, &dir)?)
        }
        None => (
            cfg.database.url.clone().context(
                "database.url: required (STARLING_DATABASE__URL, or --data-dir for a standalone data dir)",
            )?,
            cfg.auth.required_sealer("secrets reseal")?,
        ),
    };
    println!(
        "Resealing under key {:?} in {}",
        sealer.current_kid(),
        redact_url(&db_url)
    );
    let db = starling_control_plane::store::connect(&db_url, 2)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&db_url)))?;
    starling_control_plane::store::migrate(&db).await?;
    // API keys are not touched: the key-hash secret is not needed to reseal.
    let cp = ControlPlane::new(db, KeyHasher::new(b"unused"), sealer);
    let mut total = 0;
    let counts = cp
        .reseal_secrets(&mut |c| {
            println!(
                "  {:<18} {:>6} resealed of {} sealed values",
                c.table, c.changed, c.seen
            )
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nValues resealed so far stay resealed; add the missing key to \
                 auth.previous_sealing_keys and run this again."
            )
        })?;
    for c in &counts {
        total += c.changed;
    }
    println!(
        "Done: {total} values resealed. Every secret is now sealed under {:?}; keys in \
         auth.previous_sealing_keys can be removed.",
        cp.sealer.current_kid()
    );
    Ok(())
}

/// Turns Stripe billing on when a secret key is configured (else it stays off).
fn with_billing(cp: ControlPlane, cfg: &ControlPlaneConfig) -> anyhow::Result<ControlPlane> {
    let b = &cfg.billing;
    let Some(key) = b.stripe_secret_key()? else {
        return Ok(cp);
    };
    let billing = starling_control_plane::service::billing::Billing::new(
        &b.stripe_api_base,
        &key,
        b.stripe_webhook_secret()?,
        b.webhook_tolerance_secs,
        b.grace_period_secs,
        &b.meter_event_name,
    );
    let cp = cp.with_billing(billing);
    cp.spawn_billing(std::time::Duration::from_secs(b.sync_interval_secs));
    tracing::info!(api = %b.stripe_api_base, "stripe billing on");
    Ok(cp)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The console API when `console.enabled`, its tables migrated.
async fn open_console(
    cp: &starling_control_plane::service::ControlPlane,
    cfg: &ControlPlaneConfig,
    mode: Mode,
    operator_token: &str,
    signing_key: Option<starling_core::signing::SigningKey>,
) -> anyhow::Result<Option<Console>> {
    if !cfg.console.enabled {
        return Ok(None);
    }
    starling_console_api::migrate(&cp.db)
        .await
        .context("migrating the console's tables")?;
    Ok(Some(Console::new(
        cp.clone(),
        cfg.console.clone(),
        mode,
        operator_token,
        signing_key,
    )))
}

/// Serves the public listener and the node's internal listener until a shutdown signal, then
/// runs `on_shutdown` and lets both finish the requests in flight.
async fn serve_with_internal(
    public: (tokio::net::TcpListener, axum::Router),
    internal: (tokio::net::TcpListener, axum::Router),
    on_shutdown: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        on_shutdown();
        let _ = tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let internal = tokio::spawn(server::serve(internal.0, internal.1, stopped(rx.clone())));
    server::serve(public.0, public.1, stopped(rx)).await?;
    internal.await.context("the internal listener's task")??;
    Ok(())
}

/// A node's internal routes with the plumbing of every listener (request ids, metrics).
fn internal_app(
    node: &Arc<Node>,
    auth: starling_data_plane::api::internal::InternalAuth,
) -> axum::Router {
    node.internal_router(auth)
        .layer(axum::middleware::from_fn(
            starling_core::http::track_metrics,
        ))
        .layer(axum::middleware::from_fn(starling_core::http::request_id))
}

/// `starling standalone`.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut cfg: ControlPlaneConfig = starling_core::config::load(opts.config.as_deref())?;
    if let Some(l) = opts.listen {
        cfg.server.listen = l;
    }
    cfg.validate()?;
    let _telemetry = starling_core::telemetry::init(&cfg.telemetry)?;

    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let data_dir = opts.data_dir.canonicalize()?;
    let (secrets, first_start) = load_or_create_secrets(&data_dir)?;
    let operator_token = cfg
        .auth
        .operator_token()?
        .unwrap_or(secrets.operator_token.clone());
    let key_hash_secret = cfg
        .auth
        .key_hash_secret()?
        .unwrap_or(secrets.key_hash_secret.clone());
    let sealer = standalone_sealer(&cfg, &secrets, &data_dir)?;
    let db_url = cfg
        .database
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join(DB_FILE).display()));

    let addr = cfg.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("server.listen: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let base = format!("http://{local}");
    // The node's internal API on its own listener, as on a cell, so the console's moderation
    // goes through the same signed call tokens and checks as in production (not an in-process
    // shortcut that production never takes). Loopback only, on a free port: nothing outside
    // this machine reaches it, and no setting or port clash stands between `standalone` and a
    // first start.
    let internal_listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the internal listener on loopback")?;
    let internal_local = internal_listener.local_addr()?;
    // The control plane's signing key: the configured one, else one for this process only.
    // Call tokens live for seconds and are minted and checked in this process, so a key that
    // dies with it is correct for them.
    let signing_key = cfg
        .auth
        .control_plane_signing_key()?
        .unwrap_or_else(starling_core::signing::SigningKey::generate);

    let cp = server::open(
        &db_url,
        cfg.database.max_connections,
        &key_hash_secret,
        sealer,
    )
    .await
    .with_context(|| format!("opening the database {}", redact_url(&db_url)))?;
    let cluster_id = cp
        .ensure_local_cluster(
            Some(format!("ws://{local}")),
            Some(format!("http://{internal_local}")),
        )
        .await
        .map_err(|e| anyhow::anyhow!("registering the local cluster: {e}"))?
        .context("no cluster for the standalone node")?
        .into_string();
    // The same key signs the in-process feed, which is rebuilt at every start (publish_all
    // below), so a key made now signs everything this process's node will read.
    let feed: Arc<dyn ConfigFeed> = Arc::new(InProcessFeed::new());
    let directory = Arc::new(Directory::new(
        KeyHasher::new(&key_hash_secret),
        CellTrust {
            cluster_id: cluster_id.clone(),
            verifier: Verifier::new([signing_key.public_key()]),
            // In-process: the feed never leaves this process, so nothing is sealed.
            keys: Default::default(),
        },
    ));
    let feeds = Arc::new(InProcessCellFeeds::new());
    feeds.insert(
        &cluster_id,
        Arc::new(AppliedFeed {
            inner: feed.clone(),
            directory: directory.clone(),
        }),
    );
    let cp = cp.with_feed(feeds, signing_key.clone());
    let mut gateway = cfg.gateway.clone();
    gateway.cluster_id = Some(cluster_id);
    let cache = server::open_cache(cfg.cache.redis_url.as_deref()).await?;
    let cp = with_billing(cp, &cfg)?;
    // Usage from the in-process node to the control plane.
    let usage: Arc<dyn UsageFeed> = Arc::new(InProcessUsageFeed::new());
    cp.consume_usage(usage.clone()).await?;

    // The data plane, in the same process: in-process feed, bus and registry.
    directory.follow(feed).await?;
    let published = cp
        .publish_all()
        .await
        .map_err(|e| anyhow::anyhow!("publishing app config: {e}"))?;
    tracing::debug!(apps = published, "app config published");
    let metering = Arc::new(starling_data_plane::metering::Metering::new(
        &cfg.gateway.node_id,
        starling_core::clock::system(),
        Arc::new(starling_data_plane::quota::InProcessQuotas::default()),
        Some(usage),
    ));
    let node = Node::start_metered(
        cp.db.clone(),
        directory,
        Arc::new(InProcessBus::new()),
        Arc::new(InProcessRegistry::new()),
        Arc::new(starling_data_plane::ratelimit::InProcessLimiter::default()),
        metering,
        gateway.clone(),
    )
    .await
    .context("starting the data plane")?;
    let internal = internal_app(
        &node,
        starling_data_plane::api::internal::InternalAuth {
            cluster_id: gateway.cluster_id.clone(),
            verifier: starling_core::signing::Verifier::new([signing_key.public_key()]),
        },
    );
    // The server API manages webhook endpoints through the control plane in this process.
    node.messaging.webhooks.set_admin(Arc::new(cp.clone()));

    let console = open_console(
        &cp,
        &cfg,
        Mode::Development,
        &operator_token,
        Some(signing_key),
    )
    .await?;
    let mut routes = node.router();
    if cfg.demo.enabled {
        routes = routes.merge(
            crate::demo::router(&cp, node.clone(), &data_dir)
                .await
                .context("setting up the demo")?,
        );
    }
    let state = AdminState {
        cp,
        cache,
        operator_token: Arc::from(operator_token.as_str()),
        max_body_bytes: cfg.server.max_body_bytes,
    };
    // The data plane's routes bounded like the control plane's (the console bounds its own).
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        cfg.server.max_body_bytes,
        starling_core::http::limit_body,
    ));
    let extra = match &console {
        Some(c) => routes.merge(c.router()),
        None => routes,
    };
    let app = server::app_with(state, _telemetry.metrics.clone(), extra);

    println!("Starling standalone is running on {base}");
    println!("  data:       {}", data_dir.display());
    println!("  admin API:  {base}/admin/v1   (spec: {base}/admin/v1/openapi.json)");
    println!("  server API: {base}/v1   (spec: {base}/v1/openapi.json)");
    println!("  WebSocket:  ws://{local}/v1/connect?token=<user token>");
    if console.is_some() {
        println!(
            "  console:    {base}{}   (GraphQL; GraphiQL in a browser)",
            starling_console_api::PATH
        );
    }
    println!("  health:     {base}/healthz  {base}/readyz  {base}/metrics");
    if cfg.demo.enabled {
        println!("  demo page:  {base}/demo   (development only: [demo] enabled)");
    }
    if first_start && cfg.auth.operator_token()?.is_none() {
        println!();
        println!(
            "First start: your operator token (kept in {}):",
            data_dir.join(SECRETS_FILE).display()
        );
        println!();
        println!("  {operator_token}");
        println!();
        println!("Next: create a tenant");
        println!("  export STARLING_TOKEN={operator_token}");
        println!(
            "  curl -s -X POST {base}/admin/v1/tenants -H \"Authorization: Bearer $STARLING_TOKEN\" \
             -H 'content-type: application/json' -d '{{\"name\": \"Acme\"}}'"
        );
        println!("See README.md for the walkthrough.");
    } else {
        println!(
            "  operator token: in {}",
            data_dir.join(SECRETS_FILE).display()
        );
    }
    println!("Press Ctrl-C to stop.");
    tracing::info!(%local, internal = %internal_local, "listening");
    let n = node.clone();
    serve_with_internal((listener, app), (internal_listener, internal), move || {
        n.shutdown()
    })
    .await?;
    println!("Starling stopped.");
    Ok(())
}

/// `starling control-plane`.
pub async fn run_control_plane(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg: ControlPlaneConfig = starling_core::config::load(config.as_deref())?;
    cfg.validate()?;
    let _telemetry = starling_core::telemetry::init(&cfg.telemetry)?;
    let db_url = cfg.database.url.clone().context(
        "database.url: required for control-plane (e.g. STARLING_DATABASE__URL=postgres://…)",
    )?;
    let operator_token = cfg
        .auth
        .operator_token()?
        .context("auth.operator_token: required for control-plane (STARLING_AUTH__OPERATOR_TOKEN or auth.operator_token_file)")?;
    let key_hash_secret = cfg
        .auth
        .key_hash_secret()?
        .context("auth.key_hash_secret: required for control-plane (STARLING_AUTH__KEY_HASH_SECRET or auth.key_hash_secret_file)")?;
    let sealer = cfg.auth.required_sealer("control-plane")?;
    let addr = cfg.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("server.listen: cannot listen on {addr}"))?;
    let mut cp = server::open_with(
        &db_url,
        cfg.database.max_connections,
        cfg.database.timeouts(),
        &key_hash_secret,
        sealer,
    )
    .await
    .with_context(|| format!("opening the database {}", redact_url(&db_url)))?;
    if let Some(url) = &cfg.pulsar.url {
        let signing_key = cfg.auth.control_plane_signing_key()?.context(
            "auth.control_plane_signing_key: required for control-plane with a Pulsar feed \
             (STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY or auth.control_plane_signing_key_file; \
             `starling keygen` makes one)",
        )?;
        let auth = cfg.pulsar.auth()?;
        let client =
            starling_core::pulsar::connect(url, &auth, std::time::Duration::from_secs(30)).await?;
        provision_pulsar(&cfg, None).await?;
        let feeds = starling_core::pulsar::PulsarCellFeeds::new(
            client.clone(),
            &cfg.pulsar.topic_prefix,
            cfg.pulsar
                .admin_url
                .clone()
                .map(|a| (a, auth.clone(), cfg.pulsar.compaction_threshold_bytes)),
        );
        cp = cp.with_feed(Arc::new(feeds), signing_key);
        let usage = Arc::new(starling_core::pulsar::PulsarUsageFeed::for_cells(
            client.clone(),
            &cfg.pulsar.topic_prefix,
        ));
        cp.consume_usage(usage)
            .await
            .context("subscribing to the usage topic")?;
        // Republish every app as a safety net, in the background: nodes already have the
        // topic's compacted view, so readiness need not wait for thousands of apps.
        let cp2 = cp.clone();
        tokio::spawn(async move {
            match cp2.publish_all().await {
                Ok(n) => tracing::info!(apps = n, "app config republished on the cells' feeds"),
                Err(e) => tracing::error!(error = %e, "republishing app config failed"),
            }
        });
    }
    let cache = server::open_cache(cfg.cache.redis_url.as_deref()).await?;
    let cp = with_billing(cp, &cfg)?;
    let signing_key = cfg.auth.control_plane_signing_key()?;
    if signing_key.is_none() {
        tracing::warn!(
            "auth.control_plane_signing_key is not set: the console cannot call cells (moderation answers unavailable)"
        );
    }
    let console = open_console(&cp, &cfg, Mode::Production, &operator_token, signing_key).await?;
    let state = AdminState {
        cp,
        cache,
        operator_token: Arc::from(operator_token.as_str()),
        max_body_bytes: cfg.server.max_body_bytes,
    };
    let extra = console.map(|c| c.router()).unwrap_or_default();
    let app = server::app_with(state, _telemetry.metrics.clone(), extra);
    tracing::info!(local = %listener.local_addr()?, "control plane listening");
    server::serve(listener, app, shutdown_signal()).await?;
    Ok(())
}

/// When `pulsar.admin_url` is set: makes sure the Pulsar tenant and namespace exist and, for a
/// node (`cell` is its cluster id), that its cell is provisioned too — feed policies, its own
/// namespace and its role's grants (see [`starling_core::pulsar::provision_cell`]); that needs
/// a super-user's token, so it is for development set-ups: in production the control plane
/// provisions each cell when it is registered, and nodes run as their cell's role without
/// `admin_url`.
async fn provision_pulsar(cfg: &ControlPlaneConfig, cell: Option<&str>) -> anyhow::Result<()> {
    let Some(admin) = &cfg.pulsar.admin_url else {
        return Ok(());
    };
    let auth = cfg.pulsar.auth()?;
    let p = starling_core::pulsar::provision(
        admin,
        &auth,
        &cfg.pulsar.topic_prefix,
        None,
        cfg.pulsar.compaction_threshold_bytes,
    )
    .await
    .context("pulsar.admin_url: provisioning the Pulsar tenant and namespace")?;
    if let Some(cluster_id) = cell {
        starling_core::pulsar::provision_cell(
            admin,
            &auth,
            &cfg.pulsar.topic_prefix,
            cluster_id,
            cfg.pulsar.compaction_threshold_bytes,
        )
        .await
        .context("pulsar.admin_url: provisioning this node's cell on the bus")?;
    }
    tracing::info!(
        namespace = p.namespace,
        created_tenant = p.created_tenant,
        created_namespace = p.created_namespace,
        "pulsar namespace ready"
    );
    Ok(())
}

/// `starling data-plane`: one gateway node of a cell, on PostgreSQL, Redis and Pulsar.
pub async fn run_data_plane(
    config: Option<PathBuf>,
    node_id: Option<String>,
) -> anyhow::Result<()> {
    use std::time::Duration;

    let mut cfg: ControlPlaneConfig = starling_core::config::load(config.as_deref())?;
    if let Some(n) = node_id {
        cfg.gateway.node_id = n;
    }
    cfg.validate()?;
    let _telemetry = starling_core::telemetry::init(&cfg.telemetry)?;
    let db_url = cfg.database.url.clone().context(
        "database.url: required for data-plane (the cell's PostgreSQL, STARLING_DATABASE__URL)",
    )?;
    let pulsar_url = cfg.pulsar.url.clone().context(
        "pulsar.url: required for data-plane (STARLING_PULSAR__URL=pulsar+ssl://host:6651)",
    )?;
    let redis_url = cfg.cache.redis_url.clone().context(
        "cache.redis_url: required for data-plane (the cell's Redis, STARLING_CACHE__REDIS_URL)",
    )?;
    let key_hash_secret = cfg.auth.key_hash_secret()?.context(
        "auth.key_hash_secret: required for data-plane (the control plane's, to check API keys)",
    )?;
    let cluster_id = cfg.gateway.cluster_id.clone().context(
        "gateway.cluster_id: required for data-plane: the id (cls_…) of the cluster this node \
         serves, as POST /admin/v1/clusters returned it (STARLING_GATEWAY__CLUSTER_ID)",
    )?;
    let verifier = cfg.auth.control_plane_verifier()?;
    if verifier.is_empty() {
        anyhow::bail!(
            "auth.control_plane_public_keys: required for data-plane: the control plane's public \
             key(s), which every app-config update and internal call must be signed with \
             (STARLING_AUTH__CONTROL_PLANE_PUBLIC_KEYS='[\"…\"]'; `starling keygen` prints it)"
        );
    }
    let cell_credential = cfg.gateway.cell_credential()?;
    if cfg.gateway.control_plane_url.is_some() && cell_credential.is_none() {
        anyhow::bail!(
            "gateway.cell_credential: required with gateway.control_plane_url (issue one with \
             POST /admin/v1/clusters/{{id}}/credentials; STARLING_GATEWAY__CELL_CREDENTIAL or \
             gateway.cell_credential_file)"
        );
    }
    let internal_auth = starling_data_plane::api::internal::InternalAuth {
        cluster_id: Some(cluster_id.clone()),
        verifier: verifier.clone(),
    };
    let addr = cfg.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("server.listen: cannot listen on {addr}"))?;
    let internal_addr = cfg.internal_listen_addr()?;
    let internal_listener = tokio::net::TcpListener::bind(internal_addr)
        .await
        .with_context(|| format!("server.internal_listen: cannot listen on {internal_addr}"))?;

    let client =
        starling_core::pulsar::connect(&pulsar_url, &cfg.pulsar.auth()?, Duration::from_secs(30))
            .await?;
    let feed_topic = starling_core::pulsar::feed_topic(&cfg.pulsar.topic_prefix, &cluster_id);
    provision_pulsar(&cfg, Some(&cluster_id)).await?;
    // Inboxes live in the cell's own namespace: the only one its role may use as a whole.
    let inbox_prefix =
        starling_core::pulsar::cell_topic_prefix(&cfg.pulsar.topic_prefix, &cluster_id)
            .context("pulsar.topic_prefix")?;
    let feed = starling_core::pulsar::PulsarFeed::open(&client, &feed_topic)
        .await
        .context("opening the app-config feed")?;
    let directory = Arc::new(Directory::new(
        KeyHasher::new(&key_hash_secret),
        CellTrust {
            cluster_id,
            verifier,
            keys: cfg.gateway.config_keys()?,
        },
    ));
    directory
        .follow(feed)
        .await
        .context("reading the app-config feed")?;
    let db = starling_core::db::connect_with(
        &db_url,
        cfg.database.max_connections,
        cfg.database.timeouts(),
    )
    .await
    .with_context(|| format!("opening the database {}", redact_url(&db_url)))?;
    let registry = starling_data_plane::redis_registry::RedisRegistry::connect(
        &redis_url,
        Duration::from_secs(cfg.gateway.registry_ttl_secs),
    )
    .await?;
    let usage = Arc::new(starling_core::pulsar::PulsarUsageFeed::new(
        client.clone(),
        &starling_core::pulsar::usage_topic(&cfg.pulsar.topic_prefix, directory.cluster_id()),
    ));
    let bus = starling_data_plane::pulsar_bus::PulsarBus::new(client, &inbox_prefix);
    let limiter = starling_data_plane::ratelimit::RedisLimiter::connect(&redis_url).await?;
    let quotas = starling_data_plane::quota::RedisQuotas::connect(&redis_url).await?;
    let metering = Arc::new(starling_data_plane::metering::Metering::new(
        &cfg.gateway.node_id,
        starling_core::clock::system(),
        Arc::new(quotas),
        Some(usage),
    ));
    let node = Node::start_metered(
        db,
        directory,
        Arc::new(bus),
        Arc::new(registry),
        Arc::new(limiter),
        metering,
        cfg.gateway.clone(),
    )
    .await
    .context("starting the node")?;
    // The server API manages webhook endpoints through the control plane's internal routes.
    if let (Some(url), Some(credential)) = (&cfg.gateway.control_plane_url, cell_credential) {
        let client =
            starling_data_plane::webhook::admin_client::ControlPlaneClient::new(url, credential)
                .context("gateway.control_plane_url: building the HTTP client")?;
        node.messaging.webhooks.set_admin(Arc::new(client));
        tracing::info!(control_plane = %url, "webhook endpoints managed through the control plane");
    }
    let app = node
        .router()
        .merge(node.ops_router(_telemetry.metrics.clone()))
        .fallback(starling_core::http::not_found_fallback)
        .layer(axum::middleware::from_fn(
            starling_core::http::track_metrics,
        ))
        .layer(axum::middleware::from_fn(starling_core::http::request_id));
    let internal = internal_app(&node, internal_auth);
    tracing::info!(
        node_id = %node.node_id,
        local = %listener.local_addr()?,
        internal = %internal_listener.local_addr()?,
        "data-plane node listening"
    );
    let n = node.clone();
    serve_with_internal((listener, app), (internal_listener, internal), move || {
        n.shutdown()
    })
    .await?;
    Ok(())
}

/// The control plane's side of the in-process feed: a change is applied to the node's directory
/// before the admin call that made it returns, so a key or an app just created works on the very
/// next request (following the feed alone would apply it a moment later, on another task). The
/// directory ignores the same update when the feed delivers it again (versions).
struct AppliedFeed {
    inner: Arc<dyn ConfigFeed>,
    directory: Arc<Directory>,
}

#[async_trait::async_trait]
impl ConfigFeed for AppliedFeed {
    async fn publish(
        &self,
        update: starling_core::appconfig::SignedUpdate,
    ) -> Result<(), starling_core::appconfig::FeedError> {
        // Checked like any update (a refusal is counted and logged there).
        let _ = self.directory.accept(&update);
        self.inner.publish(update).await
    }

    async fn snapshot(
        &self,
    ) -> Result<Vec<starling_core::appconfig::SignedUpdate>, starling_core::appconfig::FeedError>
    {
        self.inner.snapshot().await
    }

    fn updates(&self) -> tokio::sync::broadcast::Receiver<starling_core::appconfig::SignedUpdate> {
        self.inner.updates()
    }
}

//! `starling`: the one binary. A thin CLI over the workspace crates:
//!
//! - `standalone`: everything in one process on embedded defaults (SQLite, in-process cache),
//! - `control-plane`: the control plane alone, on PostgreSQL (and Redis for shared caches),
//! - `data-plane`: a data-plane gateway node (not built yet),
//! - `migrate`: apply database migrations and exit,
//! - `secrets reseal`: seal every stored secret again under the current sealing key,
//! - `healthcheck`: probe the local server (the container image's health check),
//! - `keygen`: make a control-plane signing key (config feed and internal calls), or with
//!   `--cell` a cell's config key pair (app configuration sealed to the cell),
//! - `specs`: write the generated API specs into `sdk-specs/`.
#![forbid(unsafe_code)]

mod chat;
mod demo;
mod healthcheck;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling_control_plane::config::{ControlPlaneConfig, redact_url};

/// Starling: an open-source, multi-tenant instant-messaging cloud.
///
/// Run `starling standalone` to try it on one machine: it keeps its data in ./starling-data,
/// prints an operator token on first start, and serves the admin API on 127.0.0.1:7400.
#[derive(Parser, Debug)]
#[command(name = "starling", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything in one process on embedded defaults (SQLite, in-process cache).
    ///
    /// On first start it creates the data directory, an operator token (printed once and kept in
    /// <data-dir>/secrets.toml) and a `local` data-plane cluster, then serves the admin API,
    /// /healthz, /readyz and /metrics on one port. Ctrl-C stops it gracefully.
    Standalone {
        /// Where data and secrets are kept.
        #[arg(long, default_value = "./starling-data", env = "STARLING_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to listen on (overrides `server.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// TOML config file (layered over defaults, under STARLING_* env).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the control plane alone (admin API) against PostgreSQL.
    ///
    /// Needs `database.url`, `auth.operator_token`, `auth.key_hash_secret` and
    /// `auth.sealing_key` (config file or STARLING_DATABASE__URL, STARLING_AUTH__OPERATOR_TOKEN,
    /// STARLING_AUTH__KEY_HASH_SECRET, STARLING_AUTH__SEALING_KEY);
    /// `cache.redis_url` makes idempotency keys shared between several control-plane processes.
    ControlPlane {
        /// TOML config file (layered over defaults, under STARLING_* env).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run one gateway node of a data-plane cell: WebSocket gateway and server API.
    ///
    /// Needs the cell's PostgreSQL (`database.url`), Redis (`cache.redis_url`), Pulsar
    /// (`pulsar.url`) and the control plane's `auth.key_hash_secret`; app configuration arrives
    /// from the control plane over Pulsar. Run several with different --node-id behind a load
    /// balancer.
    DataPlane {
        /// The node's id within its cell (overrides `gateway.node_id`).
        #[arg(long)]
        node_id: Option<String>,
        /// TOML config file (layered over defaults, under STARLING_* env).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply pending database migrations of the control plane, then exit.
    Migrate {
        /// Database URL (overrides `database.url`), e.g. postgres://user@host/db.
        #[arg(long, env = "STARLING_DATABASE__URL")]
        database_url: Option<String>,
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only show which migrations are applied and pending.
        #[arg(long)]
        status: bool,
    },
    /// Probe the local server: exit 0 when GET /readyz (or --path) answers 200, else 1.
    ///
    /// The container image's health check (it has no shell or curl). Reads the same config as the
    /// server, so the port comes from `server.listen` (STARLING_SERVER__LISTEN); an address of
    /// every interface (0.0.0.0) is probed on loopback.
    Healthcheck {
        /// The path to probe: /readyz (database and cache answer) or /healthz (process alive).
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Probe this port instead of the one of `server.listen`.
        #[arg(long)]
        port: Option<u16>,
        /// TOML config file, the one the server was started with.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// A terminal chat client: connect as a user and talk in one conversation.
    ///
    /// Type a line and press Enter to send it; messages from others are printed as they arrive.
    /// For scripts: `--send TEXT` (repeatable) sends and exits once acknowledged;
    /// `--exit-after N` exits after N messages from others.
    Chat {
        /// The Starling server (http://host:port).
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        /// A user token (from POST /v1/users/{id}/tokens).
        #[arg(long, env = "STARLING_USER_TOKEN")]
        token: String,
        /// The conversation to talk in.
        #[arg(long)]
        conversation: String,
        /// Send this text and exit once it is acknowledged (repeatable).
        #[arg(long)]
        send: Vec<String>,
        /// Exit after this many messages from others arrived.
        #[arg(long)]
        exit_after: Option<usize>,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Make a new control-plane signing key and print it with its public key.
    ///
    /// The control plane signs every app-configuration update and every call to a cell's internal
    /// API with this Ed25519 key; cells verify with the public key only. Give the private key to
    /// the control plane alone (STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY or
    /// auth.control_plane_signing_key_file) and the public key to every cell node
    /// (STARLING_AUTH__CONTROL_PLANE_PUBLIC_KEYS='["…"]'). To rotate: give cells both public
    /// keys, switch the control plane to the new key, then drop the old public key.
    ///
    /// With `--cell`: a cell's config key pair instead (X25519). The secret goes to the cell's
    /// nodes (STARLING_GATEWAY__CONFIG_KEYS='["…"]'), the public key to the cluster
    /// (`config_public_key` in POST or PATCH /admin/v1/clusters); the control plane then seals
    /// every app-config update for the cell, secrets included, to it. To rotate: give the nodes
    /// both secret keys, PATCH the cluster to the new public key, then drop the old secret.
    Keygen {
        /// Make a cell's config key pair (X25519) instead of a signing key.
        #[arg(long)]
        cell: bool,
    },
    /// Manage the secrets sealed in the control-plane database.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Write the API specs generated from the code (OpenAPI of the admin and server APIs; AsyncAPI
    /// and JSON Schemas of the WebSocket protocol; GraphQL SDL of the console API) into a
    /// directory.
    Specs {
        /// The sdk-specs directory.
        #[arg(long, default_value = "sdk-specs")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SecretsCommand {
    /// Seal every secret in the control-plane database again under the current sealing key.
    ///
    /// The control-plane database stores webhook, token and pre-send hook secrets sealed under
    /// `auth.sealing_key` (see docs/CONFIGURATION.md). To rotate that key:
    ///
    /// 1. make a new key (`echo "k2:$(openssl rand -base64 32)"`) and set it as
    ///    `auth.sealing_key` (STARLING_AUTH__SEALING_KEY); move the old one to
    ///    `auth.previous_sealing_keys`; restart the control planes;
    ///
    /// 2. run `starling secrets reseal` with that same configuration: it opens every value
    ///    sealed under an older key and seals it under the current one (any value still in
    ///    clear is sealed too), printing how many values of each table it resealed;
    ///
    /// 3. remove the old key from `auth.previous_sealing_keys` and restart.
    ///
    /// Safe to run while control planes serve, and to run again: only values not yet under the
    /// current key change, each row by a conditional update.
    Reseal {
        /// TOML config file (layered over defaults, under STARLING_* env): `database.url`,
        /// `auth.sealing_key` and `auth.previous_sealing_keys` are read.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A `starling standalone` data directory: its database and its stored sealing key are
        /// used unless configured otherwise.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Standalone {
            data_dir,
            listen,
            config,
        } => {
            standalone::run(standalone::Options {
                data_dir,
                listen,
                config,
            })
            .await
        }
        Command::ControlPlane { config } => standalone::run_control_plane(config).await,
        Command::Secrets {
            command: SecretsCommand::Reseal { config, data_dir },
        } => standalone::reseal(config, data_dir).await,
        Command::DataPlane { node_id, config } => standalone::run_data_plane(config, node_id).await,
        Command::Migrate {
            database_url,
            config,
            status,
        } => {
            let mut cfg: ControlPlaneConfig = starling_core::config::load(config.as_deref())?;
            if database_url.is_some() {
                cfg.database.url = database_url;
            }
            cfg.validate()?;
            let url = cfg
                .database
                .url
                .context("database.url: not set (use --database-url or STARLING_DATABASE__URL)")?;
            let db = starling_control_plane::store::connect(&url, 2)
                .await
                .with_context(|| format!("connecting to {}", redact_url(&url)))?;
            if !status {
                starling_control_plane::store::migrate(&db).await?;
                starling_console_api::migrate(&db).await?;
            }
            let (applied, pending) = starling_control_plane::store::migration_status(&db).await?;
            println!("database: {}", redact_url(&url));
            for m in &applied {
                println!("  applied  {m}");
            }
            for m in &pending {
                println!("  pending  {m}");
            }
            println!("{} applied, {} pending", applied.len(), pending.len());
            Ok(())
        }
        Command::Healthcheck {
            path,
            port,
            config,
            timeout,
        } => {
            healthcheck::run(healthcheck::Options {
                path,
                port,
                config,
                timeout: std::time::Duration::from_secs(timeout),
            })
            .await
        }
        Command::Chat {
            server,
            token,
            conversation,
            send,
            exit_after,
            timeout,
        } => {
            chat::run(chat::Options {
                server,
                token,
                conversation,
                send,
                exit_after,
                timeout,
            })
            .await
        }
        Command::Keygen { cell: true } => {
            let key = starling_core::cellkey::CellSecretKey::generate();
            println!("# Starling cell config key {}", key.kid());
            println!("# secret: this cell's nodes only (gateway.config_keys)");
            println!("config_keys = [\"{}\"]", key.to_text());
            println!("# public: the cluster's config_public_key (POST/PATCH /admin/v1/clusters)");
            println!("config_public_key = \"{}\"", key.public_key().to_text());
            Ok(())
        }
        Command::Keygen { cell: false } => {
            let key = starling_core::signing::SigningKey::generate();
            println!("# Starling control-plane signing key {}", key.kid());
            println!("# private: the control plane only (auth.control_plane_signing_key)");
            println!("control_plane_signing_key = \"{}\"", key.to_text());
            println!("# public: every cell node (auth.control_plane_public_keys)");
            println!(
                "control_plane_public_keys = [\"{}\"]",
                key.public_key().to_text()
            );
            Ok(())
        }
        Command::Specs { out } => {
            let dir = out.join("openapi");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in [
                ("admin.json", starling_control_plane::api::openapi_json()),
                ("server.json", starling_data_plane::api::openapi_json()),
            ] {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            let dir = out.join("asyncapi");
            let schema_dir = dir.join("schemas");
            std::fs::create_dir_all(&schema_dir)
                .with_context(|| format!("creating {}", schema_dir.display()))?;
            let asyncapi = [(
                dir.join("websocket.json"),
                starling_data_plane::asyncapi::asyncapi_json(),
            )];
            let schemas = starling_data_plane::asyncapi::json_schemas()
                .into_iter()
                .map(|(name, text)| (schema_dir.join(name), text));
            let graphql = out.join("graphql");
            std::fs::create_dir_all(&graphql)
                .with_context(|| format!("creating {}", graphql.display()))?;
            let sdl = [(graphql.join("console.graphql"), starling_console_api::sdl())];
            for (path, text) in asyncapi.into_iter().chain(schemas).chain(sdl) {
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            let dir = out.join("webhooks");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in starling_data_plane::webhook::catalog::schema_files() {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            // The event catalog in docs/WEBHOOKS.md, between its markers.
            let doc = out.join("../docs/WEBHOOKS.md");
            if let Ok(text) = std::fs::read_to_string(&doc) {
                let updated = starling_data_plane::webhook::catalog::with_catalog(&text)
                    .context("docs/WEBHOOKS.md lacks the catalog markers")?;
                std::fs::write(&doc, updated)
                    .with_context(|| format!("writing {}", doc.display()))?;
                println!("wrote {}", doc.display());
            }
            Ok(())
        }
    }
}

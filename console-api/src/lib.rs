//! Starling console API: GraphQL (async-graphql) for tenant admins, served at `/console/graphql`
//! by `starling standalone` and `starling control-plane`.
//!
//! - [`auth`]: console accounts (argon2id), login with lockout, session JWTs + refresh tokens,
//!   logout, password change, invitations.
//! - [`role`]: roles and [`role::authorize`], the one place access is decided.
//! - [`schema`]: queries and mutations over the control plane's services; moderation through
//!   [`moderation`], the data plane's internal API.
//! - [`limits`]: query cost (refused above a maximum, charged to a per-account budget, reported in
//!   `extensions.cost`) and depth limits.
//! - [`usage`] and [`webhook`]: an app's metered usage, and its webhook endpoints and pre-send
//!   hook, over the control plane's usage and webhook services.
//! - [`audit`]: every mutation recorded, queryable per tenant.
//! - [`entity`] and [`migration`]: the console's tables in the control-plane database.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod entity;
pub mod error;
pub mod limits;
pub mod migration;
pub mod moderation;
pub mod page;
pub mod role;
pub mod schema;
pub mod usage;
pub mod webhook;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sea_orm_migration::MigratorTrait;
use starling_control_plane::config::ConsoleConfig;
use starling_control_plane::service::ControlPlane;

use crate::auth::Origin;
use crate::error::Fail;
use crate::limits::{Budget, CostLimit};
use crate::moderation::CellClient;

/// Where the console API is served.
pub const PATH: &str = "/console/graphql";

/// The console's schema type.
pub type ConsoleSchema = Schema<schema::Query, schema::Mutation, EmptySubscription>;

/// The console's state: the control plane, settings, token keys, budgets. Cheap to clone.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

/// See [`Console`].
pub struct Inner {
    /// The control plane's services.
    pub cp: ControlPlane,
    /// Settings.
    pub cfg: ConsoleConfig,
    operator_token: String,
    jwt_encoding: jsonwebtoken::EncodingKey,
    jwt_decoding: jsonwebtoken::DecodingKey,
    /// Query budgets per account.
    pub budget: Budget,
    /// Client of the cells' internal API.
    pub cells: CellClient,
    /// Failed logins per client address (see [`auth::FAILED_LOGINS_PER_ADDRESS`]).
    pub failed_logins: Budget,
    /// `cfg.trusted_proxies`, parsed.
    trusted_proxies: Vec<ipnet::IpNet>,
    graphiql: bool,
    introspection: bool,
}

impl std::ops::Deref for Console {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// Whether the process runs for development (`standalone`) or production (`control-plane`):
/// it decides GraphiQL and introspection where the config leaves them unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `starling standalone`.
    Development,
    /// `starling control-plane`.
    Production,
}

/// Applies the console's migrations (its tables live in the control-plane database).
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    migration::Migrator::up(db, None).await
}

impl Console {
    /// The console over a migrated control plane. Session tokens are signed (HS256) with a key
    /// derived from the control plane's sealing key ([`starling_core::seal::Sealer::subkey`]),
    /// which no cell holds: a compromised cell node cannot mint a console session. Calls to
    /// cells' internal APIs (moderation) are signed with the control plane's `signing_key`
    /// (without one, moderation answers `unavailable`).
    pub fn new(
        cp: ControlPlane,
        cfg: ConsoleConfig,
        mode: Mode,
        operator_token: &str,
        signing_key: Option<starling_core::signing::SigningKey>,
    ) -> Self {
        let jwt_key = cp.sealer.subkey("console-session");
        let dev = mode == Mode::Development;
        // Validated at start (ControlPlaneConfig::validate names the entry); a console built
        // from an unchecked config trusts only the entries that parse.
        let trusted_proxies = cfg.trusted_proxy_nets().unwrap_or_else(|e| {
            tracing::error!(error = %e, "console.trusted_proxies: ignoring the entries that do not parse");
            cfg.trusted_proxies
                .iter()
                .filter_map(|s| s.trim().parse::<ipnet::IpNet>().ok())
                .collect()
        });
        Console(Arc::new(Inner {
            trusted_proxies,
            budget: Budget::new(cfg.budget_points, cfg.budget_restore_per_second),
            failed_logins: Budget::with_rate(
                auth::FAILED_LOGINS_PER_ADDRESS,
                auth::FAILED_LOGINS_REFILL_PER_SECOND,
            ),
            graphiql: cfg.graphiql.unwrap_or(dev),
            introspection: cfg.introspection.unwrap_or(dev),
            cells: CellClient::new(signing_key),
            cp,
            cfg,
            operator_token: operator_token.to_owned(),
            jwt_encoding: jsonwebtoken::EncodingKey::from_secret(&jwt_key),
            jwt_decoding: jsonwebtoken::DecodingKey::from_secret(&jwt_key),
        }))
    }

    /// The schema with this console's limits and settings.
    pub fn schema(&self) -> ConsoleSchema {
        let mut b = schema_builder().data(self.clone());
        if !self.introspection {
            b = b.disable_introspection();
        }
        b.finish()
    }

    /// The routes: `POST /console/graphql` (and `GET` for GraphiQL when enabled).
    pub fn router(&self) -> Router {
        let state = (self.clone(), self.schema());
        Router::new()
            .route(PATH, get(graphiql).post(graphql))
            .with_state(state)
    }
}

fn schema_builder()
-> async_graphql::SchemaBuilder<schema::Query, schema::Mutation, EmptySubscription> {
    Schema::build(
        schema::Query,
        schema::Mutation::default(),
        EmptySubscription,
    )
    .extension(CostLimit)
    // Fragment recursion is refused long before this; the depth limit applies in CostLimit.
    .limit_recursive_depth(64)
}

/// The schema's SDL, as committed in `sdk-specs/graphql/console.graphql`.
pub fn sdl() -> String {
    let mut s = schema_builder().finish().sdl();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

async fn graphiql(State((console, _)): State<(Console, ConsoleSchema)>) -> Response {
    if !console.graphiql {
        return starling_core::error::ApiError::not_found("route", PATH).into_response();
    }
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint(PATH)
            .title("Starling console")
            .finish(),
    )
    .into_response()
}

/// A refusal of the whole request, before GraphQL runs: the HTTP status, and a GraphQL error
/// body with `extensions.code`, like every other console error.
fn refuse(status: StatusCode, f: Fail) -> Response {
    let resp = async_graphql::Response::from_errors(vec![f.into_server_error()]);
    let mut r = GraphQLResponse::from(resp).into_response();
    *r.status_mut() = status;
    r
}

impl Console {
    /// The client's address: the peer's, unless the peer is a trusted proxy
    /// (`console.trusted_proxies`); then the right-most `X-Forwarded-For` entry that is not a
    /// trusted proxy. Left of that, any client can write what it likes.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted_proxy(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.is_trusted_proxy(ip) {
                        break;
                    }
                }
                // Garbage from the client side: the last address we could read stands.
                Err(_) => break,
            }
        }
        Some(client)
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

async fn graphql(
    State((console, schema)): State<(Console, ConsoleSchema)>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let max = console.cfg.max_body_bytes;
    // async-graphql-axum's extractor reads any body in full (and multipart uploads of any size
    // and number) before a single check: the console reads it itself, bounded, JSON only.
    if let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Fail::new(
                starling_core::error::ErrorCode::UnsupportedMediaType,
                "multipart requests are not accepted: no console operation takes an upload; send application/json",
            ),
        );
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Fail::new(
                starling_core::error::ErrorCode::PayloadTooLarge,
                format!(
                    "request body is too large: at most {max} bytes are accepted (console.max_body_bytes)"
                ),
            ),
        )
    };
    if starling_core::http::declared_length(headers).is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) if starling_core::http::is_length_limit(&e) => return too_large(),
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                Fail::new(
                    starling_core::error::ErrorCode::InvalidRequest,
                    format!("could not read the body: {e}"),
                ),
            );
        }
    };
    let req: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                Fail::new(
                    starling_core::error::ErrorCode::InvalidJson,
                    format!(
                        "the body must be one GraphQL request as JSON, {{\"query\": …, \"variables\": …}}: {e}"
                    ),
                ),
            );
        }
    };
    let origin = Origin {
        ip: console.client_ip(peer, headers).map(|ip| ip.to_string()),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    };
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match console.principal(auth).await {
        Ok(p) => p,
        Err(f) => {
            let resp = async_graphql::Response::from_errors(vec![f.into_server_error()]);
            return GraphQLResponse::from(resp).into_response();
        }
    };
    let req = req.data(principal).data(origin);
    GraphQLResponse::from(schema.execute(req).await).into_response()
}

//! The demo chat page of `starling standalone` (`[demo] enabled = true`, development only).
//!
//! `GET /demo` serves a small chat page built with the TypeScript SDK (`sdk-typescript/demo/`;
//! the built bundle is committed in `src/demo/` and embedded here, so running standalone needs
//! no npm). The page needs user tokens, which a real app gets from its own backend. Here a
//! dev-only endpoint plays that backend for one dedicated **demo app** (its own tenant, made on
//! first start and remembered in `<data-dir>/demo.toml`):
//!
//! - `GET  /demo/api/users`: the demo app's users, to pick one;
//! - `POST /demo/api/session` `{user_id, name?}`: creates or updates that user and mints a
//!   one-hour user token for it (no password: anyone who reaches the port can be anyone in
//!   the demo app, which is why the demo is off by default and refused on a non-loopback
//!   address);
//! - `GET  /demo/api/conversations` (Bearer user token): the user's conversations with unread
//!   counts (the WebSocket protocol has no frame for that list);
//! - `POST /demo/api/direct` (Bearer user token) `{with}`: opens a direct conversation.
//!
//! Tokens of other apps are refused (404), so the endpoint never reaches a customer's data.
//! A shared room, "Lobby", is made with the app; the page joins it with the SDK's `subscribe`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use starling_control_plane::service::ControlPlane;
use starling_control_plane::service::app::AppIn;
use starling_control_plane::service::tenant::TenantIn;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::http::{Json, PageParams};
use starling_core::id::{AppId, TenantId};
use starling_data_plane::node::Node;
use starling_data_plane::service::conversation::{ConversationIn, Kind};
use starling_data_plane::service::user::UserIn;

// The page itself is its source; only its script is built (sdk-typescript/scripts/build-demo.mjs).
const INDEX_HTML: &str = include_str!("../sdk-typescript/demo/index.html");
const DEMO_JS: &str = include_str!("demo/demo.js");
const STATE_FILE: &str = "demo.toml";
/// Lifetime of a demo user token.
const TOKEN_TTL_SECS: u64 = 3600;

/// What the demo remembers between starts.
#[derive(Debug, Serialize, Deserialize)]
struct DemoState {
    tenant_id: String,
    app_id: String,
    lobby_id: String,
}

#[derive(Clone)]
struct Demo {
    node: Arc<Node>,
    app_id: AppId,
    lobby_id: String,
}

/// Finds or makes the demo tenant, app and lobby, and returns the `/demo` routes.
pub async fn router(cp: &ControlPlane, node: Arc<Node>, data_dir: &Path) -> anyhow::Result<Router> {
    let path = data_dir.join(STATE_FILE);
    let known: Option<DemoState> = match std::fs::read_to_string(&path) {
        Ok(t) => {
            Some(toml::from_str(&t).with_context(|| format!("{} is not valid", path.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let known = match known {
        Some(s)
            if cp
                .get_app(
                    &TenantId::from_trusted(s.tenant_id.clone()),
                    &AppId::from_trusted(s.app_id.clone()),
                )
                .await
                .is_ok() =>
        {
            Some(s)
        }
        _ => None,
    };
    let (tenant_id, app_id, lobby) = match known {
        Some(s) => (s.tenant_id, s.app_id, Some(s.lobby_id)),
        None => {
            let t = cp
                .create_tenant(TenantIn {
                    name: "Starling demo".into(),
                    plan_id: None,
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating the demo tenant: {e}"))?;
            let a = cp
                .create_app(
                    &TenantId::from_trusted(t.id.to_string()),
                    AppIn {
                        name: "Demo".into(),
                        environment: None,
                        cluster_id: None,
                        region: None,
                        quota_overrides: Default::default(),
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating the demo app: {e}"))?;
            (t.id.to_string(), a.id.to_string(), None)
        }
    };
    let app = AppId::from_trusted(app_id.clone());
    // The app reaches the data plane through the config feed: wait for it.
    let mut waited = Duration::ZERO;
    let cfg = loop {
        if let Some(c) = node.messaging.directory.app(&app) {
            break c;
        }
        anyhow::ensure!(
            waited < Duration::from_secs(10),
            "the demo app {app_id} did not reach the data plane"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    let lobby_id = match lobby {
        Some(l) if node.messaging.get_conversation(&app_id, &l).await.is_ok() => l,
        _ => {
            let (c, _) = node
                .messaging
                .create_conversation(
                    &app_id,
                    &cfg.limits,
                    ConversationIn {
                        kind: Kind::Room,
                        members: vec![],
                        created_by: None,
                        name: Some("Lobby".into()),
                        metadata: None,
                        post_policy: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating the demo lobby: {}", e.message))?;
            c.id
        }
    };
    let state = DemoState {
        tenant_id,
        app_id: app_id.clone(),
        lobby_id: lobby_id.clone(),
    };
    std::fs::write(&path, toml::to_string(&state)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let demo = Demo {
        node,
        app_id: app,
        lobby_id,
    };
    Ok(Router::new()
        .route("/demo", get(index))
        .route("/demo/", get(index))
        .route("/demo/demo.js", get(script))
        .route("/demo/api/users", get(list_users))
        .route("/demo/api/session", post(create_session))
        .route("/demo/api/conversations", get(list_conversations))
        .route("/demo/api/direct", post(open_direct))
        .with_state(demo))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /demo`: the page.
async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /demo/demo.js`: the page's script (SDK included).
async fn script() -> Response {
    asset(DEMO_JS, "text/javascript; charset=utf-8")
}

/// `GET /demo/api/users`: the demo app's users (first 200).
async fn list_users(State(d): State<Demo>) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: Some(200),
        cursor: None,
    };
    let users = d
        .node
        .messaging
        .list_users(d.app_id.as_str(), &page)
        .await?;
    Ok(Json(users.data).into_response())
}

/// A demo session request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionIn {
    /// The user to be (created when new).
    user_id: String,
    /// Display name (default: the id).
    name: Option<String>,
}

/// `POST /demo/api/session`: become a demo user.
async fn create_session(
    State(d): State<Demo>,
    Json(input): Json<SessionIn>,
) -> Result<Response, ApiError> {
    let app = d.app_id.as_str();
    let (user, _) = d
        .node
        .messaging
        .upsert_user(
            app,
            &input.user_id,
            UserIn {
                name: input.name,
                ..Default::default()
            },
        )
        .await
        .map_err(|mut e| {
            // The service names the user's id `id`; here the client sent it as `user_id`.
            if e.field.as_deref() == Some("id") {
                e.field = Some("user_id".into());
                e.message = e.message.replacen("id:", "user_id:", 1);
            }
            e
        })?;
    let t = d
        .node
        .messaging
        .directory
        .mint_token(&d.app_id, &user.id, TOKEN_TTL_SECS)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "user": user,
            "token": t.token,
            "expires_at": t.expires_at,
            "app_id": app,
            "lobby_id": d.lobby_id,
        })),
    )
        .into_response())
}

/// The demo user a request's `Authorization: Bearer <user token>` names; tokens of other
/// apps are not the demo's business (404, as for any other tenant's resource).
fn demo_user(d: &Demo, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing Authorization: Bearer <demo user token>",
            )
        })?;
    let p = d.node.messaging.directory.verify_token(token)?;
    if p.app_id != d.app_id {
        return Err(ApiError::not_found("demo app", &p.app_id));
    }
    Ok(p.user_id)
}

/// `GET /demo/api/conversations`: the caller's conversations with unread counts.
async fn list_conversations(
    State(d): State<Demo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = demo_user(&d, &headers)?;
    let page = PageParams {
        limit: Some(200),
        cursor: None,
    };
    let list = d
        .node
        .messaging
        .list_user_conversations(d.app_id.as_str(), &user, &page)
        .await?;
    Ok(Json(list.data).into_response())
}

/// A direct conversation request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectIn {
    /// The other user.
    with: String,
}

/// `POST /demo/api/direct`: the caller's direct conversation with another demo user.
async fn open_direct(
    State(d): State<Demo>,
    headers: HeaderMap,
    Json(input): Json<DirectIn>,
) -> Result<Response, ApiError> {
    let user = demo_user(&d, &headers)?;
    if input.with == user {
        return Err(ApiError::field(
            "with",
            "must be another user than yourself",
        ));
    }
    if d.node
        .messaging
        .get_user(d.app_id.as_str(), &input.with)
        .await
        .is_err()
    {
        return Err(ApiError::field(
            "with",
            format!("user {} does not exist in the demo app", input.with),
        ));
    }
    let cfg = d
        .node
        .messaging
        .directory
        .app(&d.app_id)
        .ok_or_else(|| ApiError::not_found("app", &d.app_id))?;
    let (conv, created) = d
        .node
        .messaging
        .create_conversation(
            d.app_id.as_str(),
            &cfg.limits,
            ConversationIn {
                kind: Kind::Direct,
                name: Some(if user < input.with {
                    format!("{user} & {}", input.with)
                } else {
                    format!("{} & {user}", input.with)
                }),
                members: vec![user, input.with],
                created_by: None,
                metadata: None,
                post_policy: None,
            },
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(conv)).into_response())
}

//! `/internal/v1/apps/{app_id}/…`: what the control plane's console asks a cell for moderation —
//! find users, a user's conversations, recent messages, ban/unban, delete a message. Not for
//! customers and not in the public OpenAPI document, and not on the public listener: a node
//! serves these routes on its own internal listener (`server.internal_listen`), on the
//! platform's private network.
//!
//! Every call carries a call token the control plane signed for this one cluster and this one
//! request (`starling_core::internal_auth`): the node checks it with the control plane's public
//! keys (`auth.control_plane_public_keys`) against its own `gateway.cluster_id`, the method,
//! the path with its query and the body. A node holds no secret that could mint such a token,
//! so neither a stolen node nor `auth.key_hash_secret` opens another cell's internal API. The
//! control plane has already checked that the app belongs to the caller's tenant; here every
//! query is scoped by the app as everywhere else.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{delete, get, post};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use starling_core::internal_auth::{CallCheck, verify_call_token};
use starling_core::signing::Verifier;

use crate::node::Node;
use crate::protocol::{MessageOut, UserConversationOut, UserOut};
use crate::service::message::{Actor, HistoryQuery, MessagesOut};
use crate::service::user::BanIn;

/// Largest body an internal call may have (bans and the like are tiny).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who may call a node's internal API: the control plane's public keys, for this cluster.
#[derive(Clone, Debug)]
pub struct InternalAuth {
    /// This node's cluster (`gateway.cluster_id`); `None` refuses every call.
    pub cluster_id: Option<String>,
    /// The control plane's public keys (`auth.control_plane_public_keys`); empty refuses every
    /// call.
    pub verifier: Verifier,
}

#[derive(Clone)]
struct AuthState {
    auth: Arc<InternalAuth>,
}

/// The internal routes of a node, for its internal listener.
pub fn router(node: Arc<Node>, auth: InternalAuth) -> Router {
    let state = AuthState {
        auth: Arc::new(auth),
    };
    routes()
        .route_layer(from_fn_with_state(state, authenticate))
        .fallback(starling_core::http::not_found_fallback)
        .with_state(node)
}

fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/internal/v1/apps/{app_id}/users", get(list_users))
        .route("/internal/v1/apps/{app_id}/users/{user_id}", get(get_user))
        .route(
            "/internal/v1/apps/{app_id}/users/{user_id}/conversations",
            get(list_user_conversations),
        )
        .route(
            "/internal/v1/apps/{app_id}/users/{user_id}/ban",
            post(ban_user).delete(unban_user),
        )
        .route(
            "/internal/v1/apps/{app_id}/conversations/{conversation_id}/messages",
            get(list_messages),
        )
        .route(
            "/internal/v1/apps/{app_id}/conversations/{conversation_id}/messages/{message_id}",
            delete(delete_message),
        )
}

fn unauthorized(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        format!(
            "the internal API needs a call token the control plane signed for this request and cluster: {why}"
        ),
    )
}

/// Checks the call token against this cluster and this very request (method, path with query,
/// body); the body is read here and handed on.
async fn authenticate(
    State(s): State<AuthState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(cluster_id) = s.auth.cluster_id.as_deref() else {
        return Err(unauthorized(
            "this node has no gateway.cluster_id, so it accepts no internal call",
        ));
    };
    if s.auth.verifier.is_empty() {
        return Err(unauthorized(
            "this node trusts no key (auth.control_plane_public_keys is empty)",
        ));
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("no Authorization: Bearer header"))?
        .to_owned();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("an internal call's body may have at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(parts.uri.path());
    let check = CallCheck {
        cluster_id,
        method: parts.method.as_str(),
        path_and_query,
        body: &bytes,
        now: chrono::Utc::now().timestamp(),
    };
    if let Err(e) = verify_call_token(&s.auth.verifier, &token, &check) {
        tracing::warn!(error = %e, method = %parts.method, path = parts.uri.path(), "internal call refused");
        return Err(unauthorized(e));
    }
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

async fn list_users(
    State(n): State<Arc<Node>>,
    Path(app): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<UserOut>>, ApiError> {
    Ok(Json(n.messaging.list_users(&app, &page).await?))
}

async fn get_user(
    State(n): State<Arc<Node>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(n.messaging.get_user(&app, &id).await?))
}

async fn list_user_conversations(
    State(n): State<Arc<Node>>,
    Path((app, id)): Path<(String, String)>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<UserConversationOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .list_user_conversations(&app, &id, &page)
            .await?,
    ))
}

async fn ban_user(
    State(n): State<Arc<Node>>,
    Path((app, id)): Path<(String, String)>,
    Json(input): Json<BanIn>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(n.messaging.ban_user(&app, &id, input).await?))
}

async fn unban_user(
    State(n): State<Arc<Node>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(n.messaging.unban_user(&app, &id).await?))
}

async fn list_messages(
    State(n): State<Arc<Node>>,
    Path((app, cid)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<MessagesOut>, ApiError> {
    Ok(Json(n.messaging.history(&app, &cid, &q).await?))
}

async fn delete_message(
    State(n): State<Arc<Node>>,
    Path((app, cid, mid)): Path<(String, String, String)>,
) -> Result<Json<MessageOut>, ApiError> {
    Ok(Json(
        n.messaging
            .delete_message(&app, &cid, &mid, Actor::Server)
            .await?,
    ))
}

//! `/internal/v1/apps/{app_id}/…`: what the control plane's console asks a cell for moderation —
//! find users, a user's conversations, recent messages, ban/unban, delete a message. Not for
//! customers and not in the public OpenAPI document: it is authenticated with the internal token
//! both planes derive from the deployment's key-hash secret
//! (`starling_core::secret::internal_api_token`). The control plane has already checked that the
//! app belongs to the caller's tenant; here every query is scoped by the app as everywhere else.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{delete, get, post};
use starling_core::error::ApiError;
use starling_core::http::{Json, Page, PageParams, Query};

use crate::node::Node;
use crate::protocol::{MessageOut, UserConversationOut, UserOut};
use crate::service::message::{Actor, HistoryQuery, MessagesOut};
use crate::service::user::BanIn;

/// The internal routes of a node.
pub fn router(node: Arc<Node>) -> Router<Arc<Node>> {
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
        .route_layer(from_fn_with_state(node, authenticate))
}

async fn authenticate(
    State(node): State<Arc<Node>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    starling_core::http::require_internal_token(
        req.headers(),
        &node.messaging.directory.internal_api_token(),
        "the control plane's internal token",
    )?;
    Ok(next.run(req).await)
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

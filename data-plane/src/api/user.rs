//! `/v1/users`
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;
use crate::protocol::{UserConversationOut, UserOut};
use crate::scope::{Allowed, Read, Write};
use crate::service::user::{BanIn, UserIn};

pub(super) fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user, upsert_user, update_user, delete_user))
        .routes(routes!(deactivate_user))
        .routes(routes!(reactivate_user))
        .routes(routes!(ban_user, unban_user))
        .routes(routes!(create_token))
        .routes(routes!(revoke_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_user_conversations))
}

/// A token request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    /// Lifetime in seconds, 60..= the node's maximum (default 3600).
    pub expires_in_seconds: Option<u64>,
}

/// A user token for the WebSocket gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenOut {
    /// The JWT: connect with `GET /v1/connect?token=…`.
    pub token: String,
    /// Its id (the JWT's `jti`): `DELETE /v1/users/{user_id}/tokens/{token_id}` revokes it.
    pub token_id: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// The user's tokens were revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokensRevokedOut {
    /// The user.
    pub user_id: String,
    /// Every token issued at or before this second (its `iat`) is refused from now on, on
    /// every node; tokens issued later work.
    pub tokens_not_before: DateTime<Utc>,
}

/// List the app's users (by id)
#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageParams),
    responses((status = 200, description = "Success", body = Page<UserOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_users(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<UserOut>>, ApiError> {
    Ok(Json(
        n.messaging.list_users(p.app_id.as_str(), &page).await?,
    ))
}

/// Get a user
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn get_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(n.messaging.get_user(p.app_id.as_str(), &id).await?))
}

/// Create a user, or change the given fields of an existing one
#[utoipa::path(put, path = "/v1/users/{user_id}", tag = "users", request_body = UserIn, params(("user_id" = String, Path, description = "User id")),
    responses((status = 201, description = "Created", body = UserOut), (status = 200, description = "Updated", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn upsert_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<UserIn>,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    let (u, created) = n
        .messaging
        .upsert_user(p.app_id.as_str(), &id, input)
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(u),
    ))
}

/// Change a user
#[utoipa::path(patch, path = "/v1/users/{user_id}", tag = "users", request_body = UserIn, params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn update_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<UserIn>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(
        n.messaging
            .update_user(p.app_id.as_str(), &id, input)
            .await?,
    ))
}

/// Delete a user with their data (memberships, reactions; their messages become tombstones)
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn delete_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    n.messaging.delete_user(p.app_id.as_str(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivate a user (cannot connect or send; data kept)
#[utoipa::path(post, path = "/v1/users/{user_id}/deactivate", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn deactivate_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(
        n.messaging
            .set_user_active(p.app_id.as_str(), &id, false)
            .await?,
    ))
}

/// Reactivate a user
#[utoipa::path(post, path = "/v1/users/{user_id}/reactivate", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn reactivate_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(
        n.messaging
            .set_user_active(p.app_id.as_str(), &id, true)
            .await?,
    ))
}

/// Ban a user from the whole app (until a time, or for good)
#[utoipa::path(post, path = "/v1/users/{user_id}/ban", tag = "users", request_body = BanIn, params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn ban_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<BanIn>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(
        n.messaging.ban_user(p.app_id.as_str(), &id, input).await?,
    ))
}

/// Lift an app-wide ban
#[utoipa::path(delete, path = "/v1/users/{user_id}/ban", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = UserOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn unban_user(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    Ok(Json(n.messaging.unban_user(p.app_id.as_str(), &id).await?))
}

/// Mint a user token for the WebSocket gateway
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens", tag = "users", request_body = TokenIn, params(("user_id" = String, Path, description = "User id")),
    responses((status = 201, description = "Created", body = TokenOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn create_token(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<TokenIn>,
) -> Result<(StatusCode, Json<TokenOut>), ApiError> {
    n.messaging.user_model(p.app_id.as_str(), &id).await?;
    let max = n.gateway.max_token_ttl_secs;
    let ttl = input.expires_in_seconds.unwrap_or(3600);
    if !(60..=max).contains(&ttl) {
        return Err(ApiError::field(
            "expires_in_seconds",
            format!("must be 60..={max}"),
        ));
    }
    let t = n.messaging.directory.mint_token(&p.app_id, &id, ttl)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenOut {
            token: t.token,
            token_id: t.id,
            expires_at: t.expires_at,
        }),
    ))
}

/// Revoke every token of a user issued until now
///
/// Connections opened with them are closed (code 4001) on every node within 2 s, and those
/// tokens are refused at connect. Tokens issued in the same second are revoked too: mint new
/// ones a second later.
#[utoipa::path(post, path = "/v1/users/{user_id}/tokens/revoke", tag = "users", params(("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Revoked", body = TokensRevokedOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn revoke_tokens(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<Json<TokensRevokedOut>, ApiError> {
    let at = n
        .messaging
        .revoke_user_tokens(p.app_id.as_str(), &id)
        .await?;
    Ok(Json(TokensRevokedOut {
        user_id: id,
        tokens_not_before: at,
    }))
}

/// Revoke one token of a user by its id (`token_id`, the JWT's `jti`)
///
/// Connections opened with it are closed (code 4001) on every node within 2 s, and it is
/// refused at connect for the longest life the server API gives a token
/// (`gateway.max_token_ttl_secs`); revoke a token you signed yourself with a longer life with
/// `POST /v1/users/{user_id}/tokens/revoke`.
#[utoipa::path(delete, path = "/v1/users/{user_id}/tokens/{token_id}", tag = "users", params(("user_id" = String, Path, description = "User id"), ("token_id" = String, Path, description = "Token id (`jti`)")),
    responses((status = 204, description = "Revoked"), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn revoke_token(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    n.messaging
        .revoke_user_token(
            p.app_id.as_str(),
            &id,
            &token_id,
            n.gateway.max_token_ttl_secs,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's conversations, with unread counts and last messages
#[utoipa::path(get, path = "/v1/users/{user_id}/conversations", tag = "users", params(("user_id" = String, Path, description = "User id"), PageParams),
    responses((status = 200, description = "Success", body = Page<UserConversationOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_user_conversations(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<UserConversationOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .list_user_conversations(p.app_id.as_str(), &id, &page)
            .await?,
    ))
}

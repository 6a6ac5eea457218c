//! `/v1/conversations`
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;
use crate::protocol::{ConversationOut, MemberOut};
use crate::scope::{Allowed, Read, Write};
use crate::service::conversation::{ConversationIn, ConversationPatch, MemberPatch, MembersIn};

pub(super) fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(create_conversation))
        .routes(routes!(
            get_conversation,
            update_conversation,
            delete_conversation
        ))
        .routes(routes!(list_members, add_members))
        .routes(routes!(update_member, remove_member))
}

/// Create a conversation (a direct one that exists already is returned with 200)
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = ConversationIn,
    responses((status = 201, description = "Created", body = ConversationOut), (status = 200, description = "The existing direct conversation", body = ConversationOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn create_conversation(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Json(input): Json<ConversationIn>,
) -> Result<(StatusCode, Json<ConversationOut>), ApiError> {
    let (c, created) = n
        .messaging
        .create_conversation(p.app_id.as_str(), &p.limits, input)
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(c),
    ))
}

/// Get a conversation
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}", tag = "conversations", params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "Success", body = ConversationOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn get_conversation(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
) -> Result<Json<ConversationOut>, ApiError> {
    Ok(Json(
        n.messaging.get_conversation(p.app_id.as_str(), &id).await?,
    ))
}

/// Change a conversation's name, metadata or post policy
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}", tag = "conversations", request_body = ConversationPatch, params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "Success", body = ConversationOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn update_conversation(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(patch): Json<ConversationPatch>,
) -> Result<Json<ConversationOut>, ApiError> {
    Ok(Json(
        n.messaging
            .update_conversation(p.app_id.as_str(), &id, patch)
            .await?,
    ))
}

/// Delete a conversation and its messages
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}", tag = "conversations", params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn delete_conversation(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    n.messaging
        .delete_conversation(p.app_id.as_str(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List members
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/members", tag = "conversations", params(("conversation_id" = String, Path, description = "Conversation id"), PageParams),
    responses((status = 200, description = "Success", body = Page<MemberOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_members(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<MemberOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .list_members(p.app_id.as_str(), &id, &page)
            .await?,
    ))
}

/// Add members (group size limited by `max_group_members`)
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/members", tag = "conversations", request_body = MembersIn, params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 201, description = "The members added", body = Vec<MemberOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn add_members(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<MembersIn>,
) -> Result<(StatusCode, Json<Vec<MemberOut>>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            n.messaging
                .add_members(p.app_id.as_str(), &p.limits, &id, input)
                .await?,
        ),
    ))
}

/// Change a member's role, mute or ban
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}/members/{user_id}", tag = "conversations", request_body = MemberPatch,
    params(("conversation_id" = String, Path, description = "Conversation id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "Success", body = MemberOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn update_member(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((id, user)): Path<(String, String)>,
    Json(patch): Json<MemberPatch>,
) -> Result<Json<MemberOut>, ApiError> {
    Ok(Json(
        n.messaging
            .update_member(p.app_id.as_str(), &id, &user, patch)
            .await?,
    ))
}

/// Remove a member
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/members/{user_id}", tag = "conversations",
    params(("conversation_id" = String, Path, description = "Conversation id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 204, description = "Removed"), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn remove_member(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    n.messaging
        .remove_member(p.app_id.as_str(), &id, &user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/v1/conversations/{conversation_id}/messages`
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Query};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;
use crate::protocol::{MessageContent, MessageEdit, MessageOut};
use crate::scope::{Allowed, Read, Write};
use crate::service::message::{Actor, HistoryQuery, MessagesOut};

pub(super) fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, send_message))
        .routes(routes!(edit_message, delete_message))
        .routes(routes!(add_reaction))
        .routes(routes!(remove_reaction))
        .routes(routes!(list_replies))
        .routes(routes!(mark_read))
}

/// A message to send as a user, or as the system when `sender_id` is omitted.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SendIn {
    /// The user who sends it (must be a member); omit for a system message.
    pub sender_id: Option<String>,
    /// The content.
    #[serde(flatten)]
    pub content: MessageContent,
}

/// The sent message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendOut {
    /// The message (the original one for a retried `client_msg_id`).
    pub message: MessageOut,
    /// `true` when this was a retry and nothing new was sent.
    pub duplicate: bool,
}

/// An edit, by a user (who must be the sender) or by the server.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EditIn {
    /// Edit as this user (must be the sender); omit to edit as the server.
    pub user_id: Option<String>,
    /// The new content.
    #[serde(flatten)]
    pub edit: MessageEdit,
}

/// A reaction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactionIn {
    /// Who reacts (must be a member).
    pub user_id: String,
    /// Emoji (1..=64 bytes).
    pub emoji: String,
}

/// Whose reaction to remove.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReactionQuery {
    /// The user whose reaction goes.
    pub user_id: String,
}

/// Thread paging.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepliesQuery {
    /// Replies with a seq greater than this.
    pub after_seq: Option<i64>,
    /// At most this many (1..=200, default 50).
    pub limit: Option<u32>,
}

/// A read mark.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadIn {
    /// The member who read.
    pub user_id: String,
    /// Up to which seq.
    pub seq: i64,
}

/// The member's read state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadOut {
    /// The newest seq read.
    pub last_read_seq: i64,
}

/// Messages of a conversation by seq (newest first unless `order=asc`)
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/messages", tag = "messages",
    params(("conversation_id" = String, Path, description = "Conversation id"), HistoryQuery),
    responses((status = 200, description = "Success", body = MessagesOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_messages(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<MessagesOut>, ApiError> {
    Ok(Json(n.messaging.history(p.app_id.as_str(), &id, &q).await?))
}

/// Send a message as a user or as the system (idempotent by `client_msg_id`)
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/messages", tag = "messages", request_body = SendIn,
    params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 201, description = "Sent", body = SendOut), (status = 200, description = "A retry: the original message", body = SendOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn send_message(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(input): Json<SendIn>,
) -> Result<(StatusCode, Json<SendOut>), ApiError> {
    let actor = match &input.sender_id {
        Some(u) => Actor::User(u),
        None => Actor::Server,
    };
    let (message, duplicate) = n
        .messaging
        .send(
            p.app_id.as_str(),
            &p.limits,
            &id,
            actor,
            input.content.clone(),
        )
        .await?;
    Ok((
        if duplicate {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(SendOut { message, duplicate }),
    ))
}

/// Edit a message
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}/messages/{message_id}", tag = "messages", request_body = EditIn,
    params(("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = String, Path, description = "Message id")),
    responses((status = 200, description = "Success", body = MessageOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn edit_message(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((cid, mid)): Path<(String, String)>,
    Json(input): Json<EditIn>,
) -> Result<Json<MessageOut>, ApiError> {
    let actor = match &input.user_id {
        Some(u) => Actor::User(u),
        None => Actor::Server,
    };
    Ok(Json(
        n.messaging
            .edit(
                p.app_id.as_str(),
                &p.limits,
                &cid,
                &mid,
                actor,
                input.edit.clone(),
            )
            .await?,
    ))
}

/// Delete a message for everyone (a tombstone keeps its seq)
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/messages/{message_id}", tag = "messages",
    params(("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The tombstone", body = MessageOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn delete_message(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((cid, mid)): Path<(String, String)>,
) -> Result<Json<MessageOut>, ApiError> {
    Ok(Json(
        n.messaging
            .delete_message(p.app_id.as_str(), &cid, &mid, Actor::Server)
            .await?,
    ))
}

/// Add a user's reaction
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/messages/{message_id}/reactions", tag = "messages", request_body = ReactionIn,
    params(("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = String, Path, description = "Message id")),
    responses((status = 200, description = "Counts per emoji", body = BTreeMap<String, i64>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn add_reaction(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((cid, mid)): Path<(String, String)>,
    Json(r): Json<ReactionIn>,
) -> Result<Json<BTreeMap<String, i64>>, ApiError> {
    Ok(Json(
        n.messaging
            .react(p.app_id.as_str(), &cid, &mid, &r.user_id, &r.emoji, false)
            .await?,
    ))
}

/// Remove a user's reaction
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/messages/{message_id}/reactions/{emoji}", tag = "messages",
    params(("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = String, Path, description = "Message id"), ("emoji" = String, Path, description = "Emoji"), ReactionQuery),
    responses((status = 200, description = "Counts per emoji", body = BTreeMap<String, i64>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn remove_reaction(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path((cid, mid, emoji)): Path<(String, String, String)>,
    Query(q): Query<ReactionQuery>,
) -> Result<Json<BTreeMap<String, i64>>, ApiError> {
    Ok(Json(
        n.messaging
            .react(p.app_id.as_str(), &cid, &mid, &q.user_id, &emoji, true)
            .await?,
    ))
}

/// Replies in a message's thread, oldest first
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/messages/{message_id}/replies", tag = "messages",
    params(("conversation_id" = String, Path, description = "Conversation id"), ("message_id" = String, Path, description = "Message id"), RepliesQuery),
    responses((status = 200, description = "Success", body = MessagesOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_replies(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path((cid, mid)): Path<(String, String)>,
    Query(q): Query<RepliesQuery>,
) -> Result<Json<MessagesOut>, ApiError> {
    Ok(Json(
        n.messaging
            .replies(p.app_id.as_str(), &cid, &mid, q.limit, q.after_seq)
            .await?,
    ))
}

/// Mark a conversation read up to a seq for a member (sends read receipts)
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/read", tag = "messages", request_body = ReadIn,
    params(("conversation_id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "Success", body = ReadOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn mark_read(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(cid): Path<String>,
    Json(r): Json<ReadIn>,
) -> Result<Json<ReadOut>, ApiError> {
    Ok(Json(ReadOut {
        last_read_seq: n
            .messaging
            .mark_read(p.app_id.as_str(), &cid, &r.user_id, r.seq)
            .await?,
    }))
}

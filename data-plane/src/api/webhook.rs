//! `/v1/webhooks`: the app's webhook endpoints as the cell sees them, recorded events,
//! deliveries and their attempts, dead letters, replays, and notices. Endpoints themselves are
//! configured in the control plane (admin or console API) and reach the cell on the app-config
//! feed.
use std::sync::Arc;

use axum::extract::{Path, State};
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Principal;
use crate::node::Node;
use crate::webhook::{
    AttemptOut, DeliveryOut, EndpointStatusOut, NotificationOut, ReplayIn, ReplayOut,
    WebhookEventOut, WebhookFilter,
};

pub(super) fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_webhook_endpoints))
        .routes(routes!(list_webhook_events))
        .routes(routes!(get_webhook_event))
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(list_webhook_attempts))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_webhooks))
        .routes(routes!(list_webhook_notifications))
}

/// List the app's webhook endpoints with their health (configure them in the admin or console API)
#[utoipa::path(get, path = "/v1/webhooks/endpoints", tag = "webhooks",
    responses((status = 200, description = "Success", body = Vec<EndpointStatusOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_endpoints(
    State(n): State<Arc<Node>>,
    p: Principal,
) -> Result<Json<Vec<EndpointStatusOut>>, ApiError> {
    Ok(Json(
        n.messaging.webhook_endpoints(p.app_id.as_str()).await?,
    ))
}

/// List recorded webhook events, oldest first
#[utoipa::path(get, path = "/v1/webhooks/events", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "Success", body = Page<WebhookEventOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_events(
    State(n): State<Arc<Node>>,
    p: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<WebhookEventOut>>, ApiError> {
    Ok(Json(
        n.messaging.webhook_events(p.app_id.as_str(), &page).await?,
    ))
}

/// Get one webhook event, with the body as delivered
#[utoipa::path(get, path = "/v1/webhooks/events/{event_id}", tag = "webhooks",
    params(("event_id" = String, Path, description = "Event id")),
    responses((status = 200, description = "Success", body = WebhookEventOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn get_webhook_event(
    State(n): State<Arc<Node>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookEventOut>, ApiError> {
    Ok(Json(
        n.messaging.webhook_event(p.app_id.as_str(), &id).await?,
    ))
}

/// List deliveries (of an event, to an endpoint), oldest first
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", params(WebhookFilter, PageParams),
    responses((status = 200, description = "Success", body = Page<DeliveryOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_deliveries(
    State(n): State<Arc<Node>>,
    p: Principal,
    Query(f): Query<WebhookFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<DeliveryOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .webhook_deliveries(p.app_id.as_str(), &f, None, &page)
            .await?,
    ))
}

/// List delivery attempts (status, latency, response excerpt), oldest first
#[utoipa::path(get, path = "/v1/webhooks/attempts", tag = "webhooks", params(WebhookFilter, PageParams),
    responses((status = 200, description = "Success", body = Page<AttemptOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_attempts(
    State(n): State<Arc<Node>>,
    p: Principal,
    Query(f): Query<WebhookFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AttemptOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .webhook_attempts(p.app_id.as_str(), &f, &page)
            .await?,
    ))
}

/// List dead letters: deliveries whose retries are used up (replay them once the endpoint works)
#[utoipa::path(get, path = "/v1/webhooks/dead-letters", tag = "webhooks", params(WebhookFilter, PageParams),
    responses((status = 200, description = "Success", body = Page<DeliveryOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_dead_letters(
    State(n): State<Arc<Node>>,
    p: Principal,
    Query(f): Query<WebhookFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<DeliveryOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .webhook_deliveries(p.app_id.as_str(), &f, Some("dead"), &page)
            .await?,
    ))
}

/// Send events again: one event, or a time range; to every subscribed endpoint or to one
#[utoipa::path(post, path = "/v1/webhooks/replay", tag = "webhooks", request_body = ReplayIn,
    responses((status = 200, description = "Queued", body = ReplayOut), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn replay_webhooks(
    State(n): State<Arc<Node>>,
    p: Principal,
    Json(input): Json<ReplayIn>,
) -> Result<Json<ReplayOut>, ApiError> {
    Ok(Json(n.messaging.replay(p.app_id.as_str(), input).await?))
}

/// List notices for the app's owners (e.g. an endpoint was disabled), ready to be mailed
#[utoipa::path(get, path = "/v1/webhooks/notifications", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "Success", body = Page<NotificationOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_notifications(
    State(n): State<Arc<Node>>,
    p: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<NotificationOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .webhook_notifications(p.app_id.as_str(), &page)
            .await?,
    ))
}

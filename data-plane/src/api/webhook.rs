//! `/v1/webhooks`: the app's webhook endpoints as the cell sees them, recorded events,
//! deliveries and their attempts, dead letters, replays, and notices. Endpoints live in the
//! control plane and reach the cell on the app-config feed; the server API creates, changes and
//! deletes them (and rotates their secrets) through the control plane's functions: directly
//! where the node runs in its process (standalone), over its internal HTTP routes on a cell's
//! node (`gateway.control_plane_url`, [`crate::webhook::admin_client`]); see docs/WEBHOOKS.md.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use starling_core::id::WebhookEndpointId;
use starling_core::webhook_admin::{
    RotateWebhookSecretIn, WebhookEndpointCreatedOut, WebhookEndpointIn, WebhookEndpointOut,
    WebhookEndpointPatch, WebhookSecretOut,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;
use crate::scope::{Allowed, Read, Secrets, Write};
use crate::webhook::{
    AttemptOut, DeliveryOut, EndpointStatusOut, NotificationOut, ReplayIn, ReplayOut,
    WebhookEventOut, WebhookFilter,
};

pub(super) fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_webhook_endpoints, create_webhook_endpoint))
        .routes(routes!(
            get_webhook_endpoint,
            update_webhook_endpoint,
            delete_webhook_endpoint
        ))
        .routes(routes!(get_webhook_secret))
        .routes(routes!(rotate_webhook_secret))
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
    p: Allowed<Read>,
) -> Result<Json<Vec<EndpointStatusOut>>, ApiError> {
    Ok(Json(
        n.messaging.webhook_endpoints(p.app_id.as_str()).await?,
    ))
}

fn endpoint_id(s: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(s).map_err(|_| ApiError::not_found("webhook endpoint", s))
}

/// Add a webhook endpoint to the app; the answer holds its signing secret
#[utoipa::path(post, path = "/v1/webhooks/endpoints", tag = "webhooks", request_body = WebhookEndpointIn,
    responses((status = 201, description = "Created", body = WebhookEndpointCreatedOut), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn create_webhook_endpoint(
    State(n): State<Arc<Node>>,
    p: Allowed<Secrets>,
    Json(input): Json<WebhookEndpointIn>,
) -> Result<(StatusCode, Json<WebhookEndpointCreatedOut>), ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    Ok((
        StatusCode::CREATED,
        Json(
            admin
                .create_endpoint(&p.tenant_id, &p.app_id, input)
                .await?,
        ),
    ))
}

/// Get one webhook endpoint's configuration (without its secret)
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookEndpointOut), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn get_webhook_endpoint(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    Ok(Json(
        admin
            .get_endpoint(&p.tenant_id, &p.app_id, &endpoint_id(&id)?)
            .await?,
    ))
}

/// Change a webhook endpoint; omitted fields stay (`enabled: true` also lifts an automatic disabling)
#[utoipa::path(patch, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks", request_body = WebhookEndpointPatch,
    params(("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookEndpointOut), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn update_webhook_endpoint(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
    Json(patch): Json<WebhookEndpointPatch>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    Ok(Json(
        admin
            .update_endpoint(&p.tenant_id, &p.app_id, &endpoint_id(&id)?, patch)
            .await?,
    ))
}

/// Remove a webhook endpoint; deliveries still due to it are dropped
#[utoipa::path(delete, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn delete_webhook_endpoint(
    State(n): State<Arc<Node>>,
    p: Allowed<Write>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    admin
        .delete_endpoint(&p.tenant_id, &p.app_id, &endpoint_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get a webhook endpoint's signing secret
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{endpoint_id}/secret", tag = "webhooks",
    params(("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookSecretOut), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn get_webhook_secret(
    State(n): State<Arc<Node>>,
    p: Allowed<Secrets>,
    Path(id): Path<String>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    Ok(Json(
        admin
            .get_secret(&p.tenant_id, &p.app_id, &endpoint_id(&id)?)
            .await?,
    ))
}

/// Rotate a webhook endpoint's signing secret; the old one keeps signing beside it for the overlap
#[utoipa::path(post, path = "/v1/webhooks/endpoints/{endpoint_id}/secret/rotate", tag = "webhooks", request_body = RotateWebhookSecretIn,
    params(("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookSecretOut), (status = "4XX", description = "Client error", body = ErrorBody),
        (status = 503, description = "The control plane, where endpoints live, is unreachable, or this node is not given its URL (`gateway.control_plane_url`)", body = ErrorBody)))]
async fn rotate_webhook_secret(
    State(n): State<Arc<Node>>,
    p: Allowed<Secrets>,
    Path(id): Path<String>,
    Json(input): Json<RotateWebhookSecretIn>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let admin = n.messaging.webhooks.admin()?;
    Ok(Json(
        admin
            .rotate_secret(&p.tenant_id, &p.app_id, &endpoint_id(&id)?, input)
            .await?,
    ))
}

/// List recorded webhook events, oldest first
#[utoipa::path(get, path = "/v1/webhooks/events", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "Success", body = Page<WebhookEventOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_events(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
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
    p: Allowed<Read>,
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
    p: Allowed<Read>,
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
    p: Allowed<Read>,
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
    p: Allowed<Read>,
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
    p: Allowed<Write>,
    Json(input): Json<ReplayIn>,
) -> Result<Json<ReplayOut>, ApiError> {
    Ok(Json(n.messaging.replay(p.app_id.as_str(), input).await?))
}

/// List notices for the app's owners (e.g. an endpoint was disabled), ready to be mailed
#[utoipa::path(get, path = "/v1/webhooks/notifications", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "Success", body = Page<NotificationOut>), (status = "4XX", description = "Client error", body = ErrorBody)))]
async fn list_webhook_notifications(
    State(n): State<Arc<Node>>,
    p: Allowed<Read>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<NotificationOut>>, ApiError> {
    Ok(Json(
        n.messaging
            .webhook_notifications(p.app_id.as_str(), &page)
            .await?,
    ))
}

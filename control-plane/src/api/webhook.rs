//! `/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints` and `…/pre-send-hook`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use starling_core::id::WebhookEndpointId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, app_id, tenant_id};
use crate::service::webhook::{
    PreSendHookIn, PreSendHookOut, RotateWebhookSecretIn, WebhookEndpointCreatedOut,
    WebhookEndpointIn, WebhookEndpointOut, WebhookEndpointPatch, WebhookSecretOut,
};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhook_endpoints, create_webhook_endpoint))
        .routes(routes!(
            get_webhook_endpoint,
            update_webhook_endpoint,
            delete_webhook_endpoint
        ))
        .routes(routes!(get_webhook_secret))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(
            get_pre_send_hook,
            put_pre_send_hook,
            delete_pre_send_hook
        ))
}

fn endpoint_id(s: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(s).map_err(|_| ApiError::not_found("webhook endpoint", s))
}

/// List an app's webhook endpoints
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), PageParams),
    responses((status = 200, description = "Success", body = Page<WebhookEndpointOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_webhook_endpoints(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<WebhookEndpointOut>>, ApiError> {
    Ok(Json(
        s.cp.list_webhook_endpoints(&tenant_id(&t)?, &app_id(&a)?, &page)
            .await?,
    ))
}

/// Add a webhook endpoint; the answer holds its signing secret
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints", tag = "webhooks", request_body = WebhookEndpointIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = WebhookEndpointCreatedOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_webhook_endpoint(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<WebhookEndpointIn>,
) -> Result<(StatusCode, Json<WebhookEndpointCreatedOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            s.cp.create_webhook_endpoint(&tenant_id(&t)?, &app_id(&a)?, input)
                .await?,
        ),
    ))
}

/// Get a webhook endpoint (without its secret)
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookEndpointOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_webhook_endpoint(
    State(s): State<AdminState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    Ok(Json(
        s.cp.get_webhook_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
            .await?,
    ))
}

/// Change a webhook endpoint (enabling it also lifts an automatic disabling)
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}", tag = "webhooks", request_body = WebhookEndpointPatch,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookEndpointOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_webhook_endpoint(
    State(s): State<AdminState>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(patch): Json<WebhookEndpointPatch>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    Ok(Json(
        s.cp.update_webhook_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?, patch)
            .await?,
    ))
}

/// Remove a webhook endpoint
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Removed"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_webhook_endpoint(
    State(s): State<AdminState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_webhook_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get a webhook endpoint's signing secret
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}/secret", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("endpoint_id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Success", body = WebhookSecretOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_webhook_secret(
    State(s): State<AdminState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    Ok(Json(
        s.cp.get_webhook_secret(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
            .await?,
    ))
}

/// Rotate a webhook endpoint's secret: both sign during the overlap
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}/secret/rotate", tag = "webhooks", request_body = RotateWebhookSecretIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("endpoint_id" = String, Path, description = "Endpoint id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 200, description = "Success", body = WebhookSecretOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn rotate_webhook_secret(
    State(s): State<AdminState>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(input): Json<RotateWebhookSecretIn>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    Ok(Json(
        s.cp.rotate_webhook_secret(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?, input)
            .await?,
    ))
}

/// Get the app's pre-send hook
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/pre-send-hook", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = PreSendHookOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_pre_send_hook(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<Json<PreSendHookOut>, ApiError> {
    Ok(Json(
        s.cp.get_pre_send_hook(&tenant_id(&t)?, &app_id(&a)?)
            .await?,
    ))
}

/// Set the app's pre-send hook: called before each message is stored
#[utoipa::path(put, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/pre-send-hook", tag = "webhooks", request_body = PreSendHookIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = PreSendHookOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn put_pre_send_hook(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<PreSendHookIn>,
) -> Result<Json<PreSendHookOut>, ApiError> {
    Ok(Json(
        s.cp.put_pre_send_hook(&tenant_id(&t)?, &app_id(&a)?, input)
            .await?,
    ))
}

/// Remove the app's pre-send hook
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/pre-send-hook", tag = "webhooks",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 204, description = "Removed"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_pre_send_hook(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_pre_send_hook(&tenant_id(&t)?, &app_id(&a)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints…`: the control plane's
//! webhook endpoint functions ([`WebhookAdmin`]) for the server API of cell nodes, which have
//! no database of endpoints of their own (a node's `gateway.control_plane_url` points here).
//!
//! Not for customers and not in the admin OpenAPI document (like the cells' own `/internal/v1`,
//! the reverse direction): it is authenticated with the internal token both planes derive from
//! the deployment's key-hash secret (`starling_core::secret::internal_api_token`), compared in
//! constant time. The node names the tenant and app of the API key it checked; every function
//! below is scoped by both through `store::app_scoped`, so an endpoint of another tenant or
//! app is not found (404). Errors travel as everywhere (`{code, message, field?}`) and the node
//! hands them on unchanged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use starling_core::error::ApiError;
use starling_core::http::Json;
use starling_core::id::WebhookEndpointId;
use starling_core::secret::internal_api_token;
use starling_core::webhook_admin::{
    RotateWebhookSecretIn, WebhookAdmin, WebhookEndpointCreatedOut, WebhookEndpointIn,
    WebhookEndpointOut, WebhookEndpointPatch, WebhookSecretOut,
};

use super::{app_id, tenant_id};
use crate::service::ControlPlane;

/// Where the routes live (a node's client builds its URLs from it).
pub const PREFIX: &str = "/internal/v1/tenants";

#[derive(Clone)]
struct InternalState {
    cp: ControlPlane,
    token: Arc<str>,
}

/// The internal routes of the control plane.
pub fn router(cp: ControlPlane) -> Router {
    let token: Arc<str> = Arc::from(internal_api_token(&cp.hasher).as_str());
    let state = InternalState { cp, token };
    Router::new()
        .route(
            "/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints",
            post(create_endpoint),
        )
        .route(
            "/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}/secret",
            get(get_secret),
        )
        .route(
            "/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints/{endpoint_id}/secret/rotate",
            post(rotate_secret),
        )
        .route_layer(from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(
    State(s): State<InternalState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    starling_core::http::require_internal_token(
        req.headers(),
        &s.token,
        "the internal token (derived from auth.key_hash_secret)",
    )?;
    Ok(next.run(req).await)
}

fn endpoint_id(s: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(s).map_err(|_| ApiError::not_found("webhook endpoint", s))
}

async fn create_endpoint(
    State(s): State<InternalState>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<WebhookEndpointIn>,
) -> Result<(StatusCode, Json<WebhookEndpointCreatedOut>), ApiError> {
    let out =
        s.cp.create_endpoint(&tenant_id(&t)?, &app_id(&a)?, input)
            .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn get_endpoint(
    State(s): State<InternalState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    Ok(Json(
        s.cp.get_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
            .await?,
    ))
}

async fn update_endpoint(
    State(s): State<InternalState>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(patch): Json<WebhookEndpointPatch>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    Ok(Json(
        s.cp.update_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?, patch)
            .await?,
    ))
}

async fn delete_endpoint(
    State(s): State<InternalState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_endpoint(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_secret(
    State(s): State<InternalState>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    Ok(Json(
        s.cp.get_secret(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?)
            .await?,
    ))
}

async fn rotate_secret(
    State(s): State<InternalState>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(input): Json<RotateWebhookSecretIn>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    Ok(Json(
        s.cp.rotate_secret(&tenant_id(&t)?, &app_id(&a)?, &endpoint_id(&e)?, input)
            .await?,
    ))
}

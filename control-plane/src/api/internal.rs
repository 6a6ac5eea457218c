//! `/internal/v1/tenants/{tenant_id}/apps/{app_id}/webhook-endpoints…`: the control plane's
//! webhook endpoint functions ([`WebhookAdmin`]) for the server API of cell nodes, which have
//! no database of endpoints of their own (a node's `gateway.control_plane_url` points here).
//!
//! Not for customers and not in the admin OpenAPI document (like the cells' own `/internal/v1`,
//! the reverse direction): a cell authenticates with its own credential (`scc_<id>.<secret>`,
//! see [`crate::service::cell_credential`]), which names its cluster. The node names the tenant
//! and app of the API key it checked; the app must be placed on the caller's cluster, or it is
//! not found (404) — a cell acts on its own apps only, however it came by another app's id.
//! Every function below is also scoped by tenant and app through `store::app_scoped`, so an
//! endpoint of another tenant or app is not found either. Errors travel as everywhere
//! (`{code, message, field?}`) and the node hands them on unchanged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use starling_core::error::ApiError;
use starling_core::http::Json;
use starling_core::http::Path;
use starling_core::id::{AppId, ClusterId, TenantId, WebhookEndpointId};
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
}

/// The cluster whose credential the call presented (put there by [`authenticate`]).
#[derive(Clone)]
struct Caller(Arc<ClusterId>);

/// The internal routes of the control plane.
pub fn router(cp: ControlPlane) -> Router {
    let state = InternalState { cp };
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
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let cluster = s.cp.authenticate_cell(&presented).await?;
    req.extensions_mut().insert(Caller(Arc::new(cluster)));
    Ok(next.run(req).await)
}

/// The tenant and app of a call, once the app is known to be placed on the calling cell.
async fn placed(
    s: &InternalState,
    caller: &Caller,
    t: &str,
    a: &str,
) -> Result<(TenantId, AppId), ApiError> {
    let (t, a) = (tenant_id(t)?, app_id(a)?);
    s.cp.require_placed_on(&caller.0, &t, &a).await?;
    Ok((t, a))
}

fn endpoint_id(s: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(s).map_err(|_| ApiError::not_found("webhook endpoint", s))
}

async fn create_endpoint(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<WebhookEndpointIn>,
) -> Result<(StatusCode, Json<WebhookEndpointCreatedOut>), ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    let out = s.cp.create_endpoint(&t, &a, input).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn get_endpoint(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    Ok(Json(s.cp.get_endpoint(&t, &a, &endpoint_id(&e)?).await?))
}

async fn update_endpoint(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(patch): Json<WebhookEndpointPatch>,
) -> Result<Json<WebhookEndpointOut>, ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    Ok(Json(
        s.cp.update_endpoint(&t, &a, &endpoint_id(&e)?, patch)
            .await?,
    ))
}

async fn delete_endpoint(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    s.cp.delete_endpoint(&t, &a, &endpoint_id(&e)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_secret(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a, e)): Path<(String, String, String)>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    Ok(Json(s.cp.get_secret(&t, &a, &endpoint_id(&e)?).await?))
}

async fn rotate_secret(
    State(s): State<InternalState>,
    Extension(caller): Extension<Caller>,
    Path((t, a, e)): Path<(String, String, String)>,
    Json(input): Json<RotateWebhookSecretIn>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let (t, a) = placed(&s, &caller, &t, &a).await?;
    Ok(Json(
        s.cp.rotate_secret(&t, &a, &endpoint_id(&e)?, input).await?,
    ))
}

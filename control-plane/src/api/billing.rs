//! Billing: plan prices, tenant subscriptions (`/admin/v1`), and the inbound Stripe webhook
//! (`POST /stripe/webhook`, authenticated by Stripe's signature, not the operator token).
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Json;
use starling_core::http::Path;
use starling_core::id::PlanId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, tenant_id};
use crate::service::billing::{BillingOut, PlanPriceIn, PlanPriceOut, SubscriptionIn, WebhookOut};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(set_plan_price))
        .routes(routes!(get_billing))
        .routes(routes!(
            create_subscription,
            change_subscription,
            cancel_subscription
        ))
}

/// Link a plan to its Stripe prices
#[utoipa::path(put, path = "/admin/v1/plans/{plan_id}/price", tag = "billing", request_body = PlanPriceIn,
    params(("plan_id" = String, Path, description = "Plan id")),
    responses((status = 200, description = "Success", body = PlanPriceOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn set_plan_price(
    State(s): State<AdminState>,
    Path(p): Path<String>,
    Json(input): Json<PlanPriceIn>,
) -> Result<Json<PlanPriceOut>, ApiError> {
    let id = PlanId::parse(&p).map_err(|_| ApiError::not_found("plan", &p))?;
    Ok(Json(s.cp.set_plan_price(id.as_str(), input).await?))
}

/// Get a tenant's billing state
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/billing", tag = "billing",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Success", body = BillingOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_billing(
    State(s): State<AdminState>,
    Path(t): Path<String>,
) -> Result<Json<BillingOut>, ApiError> {
    Ok(Json(s.cp.get_billing(&tenant_id(&t)?).await?))
}

/// Subscribe a tenant to a plan in Stripe (creates its Stripe customer on first use)
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/subscription", tag = "billing", request_body = SubscriptionIn,
    params(("tenant_id" = String, Path, description = "Tenant id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = BillingOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what; `conflict` when billing is not configured", body = ErrorBody)))]
async fn create_subscription(
    State(s): State<AdminState>,
    Path(t): Path<String>,
    Json(input): Json<SubscriptionIn>,
) -> Result<(StatusCode, Json<BillingOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.cp.create_subscription(&tenant_id(&t)?, input).await?),
    ))
}

/// Move a tenant's subscription to another plan
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}/subscription", tag = "billing", request_body = SubscriptionIn,
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Success", body = BillingOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn change_subscription(
    State(s): State<AdminState>,
    Path(t): Path<String>,
    Json(input): Json<SubscriptionIn>,
) -> Result<Json<BillingOut>, ApiError> {
    Ok(Json(
        s.cp.change_subscription(&tenant_id(&t)?, input).await?,
    ))
}

/// Cancel a tenant's subscription (the tenant goes back to the default plan)
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/subscription", tag = "billing",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Success", body = BillingOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn cancel_subscription(
    State(s): State<AdminState>,
    Path(t): Path<String>,
) -> Result<Json<BillingOut>, ApiError> {
    Ok(Json(s.cp.cancel_subscription(&tenant_id(&t)?).await?))
}

/// `POST /stripe/webhook`: an event from Stripe, verified by its `Stripe-Signature`.
pub(super) async fn stripe_webhook(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookOut>, ApiError> {
    let sig = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    Ok(Json(s.cp.handle_stripe_webhook(&body, sig).await?))
}

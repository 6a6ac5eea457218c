//! `/admin/v1/plans`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use starling_core::id::PlanId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminState;
use crate::service::plan::{PlanIn, PlanOut, PlanPatch};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, update_plan, delete_plan))
}

fn plan_id(s: &str) -> Result<PlanId, ApiError> {
    PlanId::parse(s).map_err(|_| ApiError::not_found("plan", s))
}

/// List plans
#[utoipa::path(get, path = "/admin/v1/plans", tag = "plans", params(PageParams),
    responses((status = 200, description = "Success", body = Page<PlanOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_plans(
    State(s): State<AdminState>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<PlanOut>>, ApiError> {
    Ok(Json(s.cp.list_plans(&page).await?))
}

/// Create a plan
#[utoipa::path(post, path = "/admin/v1/plans", tag = "plans", request_body = PlanIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = PlanOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_plan(
    State(s): State<AdminState>,
    Json(input): Json<PlanIn>,
) -> Result<(StatusCode, Json<PlanOut>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.cp.create_plan(input).await?)))
}

/// Get a plan
#[utoipa::path(get, path = "/admin/v1/plans/{plan_id}", tag = "plans",
    params(("plan_id" = String, Path, description = "Plan id")),
    responses((status = 200, description = "Success", body = PlanOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_plan(
    State(s): State<AdminState>,
    Path(p): Path<String>,
) -> Result<Json<PlanOut>, ApiError> {
    Ok(Json(s.cp.get_plan(plan_id(&p)?.as_str()).await?))
}

/// Update a plan (name, limits, default)
#[utoipa::path(patch, path = "/admin/v1/plans/{plan_id}", tag = "plans", request_body = PlanPatch,
    params(("plan_id" = String, Path, description = "Plan id")),
    responses((status = 200, description = "Success", body = PlanOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_plan(
    State(s): State<AdminState>,
    Path(p): Path<String>,
    Json(patch): Json<PlanPatch>,
) -> Result<Json<PlanOut>, ApiError> {
    Ok(Json(s.cp.update_plan(plan_id(&p)?.as_str(), patch).await?))
}

/// Delete a plan no tenant uses
#[utoipa::path(delete, path = "/admin/v1/plans/{plan_id}", tag = "plans",
    params(("plan_id" = String, Path, description = "Plan id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_plan(
    State(s): State<AdminState>,
    Path(p): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_plan(plan_id(&p)?.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

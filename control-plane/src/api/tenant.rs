//! `/admin/v1/tenants`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, tenant_id};
use crate::service::tenant::{TenantFilter, TenantIn, TenantOut, TenantPatch};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
}

/// List tenants
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "tenants", params(PageParams, TenantFilter),
    responses((status = 200, description = "Success", body = Page<TenantOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_tenants(
    State(s): State<AdminState>,
    Query(page): Query<PageParams>,
    Query(f): Query<TenantFilter>,
) -> Result<Json<Page<TenantOut>>, ApiError> {
    Ok(Json(s.cp.list_tenants(&f, &page).await?))
}

/// Create a tenant
#[utoipa::path(post, path = "/admin/v1/tenants", tag = "tenants", request_body = TenantIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = TenantOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_tenant(
    State(s): State<AdminState>,
    Json(input): Json<TenantIn>,
) -> Result<(StatusCode, Json<TenantOut>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.cp.create_tenant(input).await?)))
}

/// Get a tenant
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Success", body = TenantOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_tenant(
    State(s): State<AdminState>,
    Path(t): Path<String>,
) -> Result<Json<TenantOut>, ApiError> {
    Ok(Json(s.cp.get_tenant(&tenant_id(&t)?).await?))
}

/// Update a tenant (rename, suspend or resume, change plan)
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}", tag = "tenants", request_body = TenantPatch,
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Success", body = TenantOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_tenant(
    State(s): State<AdminState>,
    Path(t): Path<String>,
    Json(p): Json<TenantPatch>,
) -> Result<Json<TenantOut>, ApiError> {
    Ok(Json(s.cp.update_tenant(&tenant_id(&t)?, p).await?))
}

/// Delete a tenant that has no apps
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_tenant(
    State(s): State<AdminState>,
    Path(t): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_tenant(&tenant_id(&t)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

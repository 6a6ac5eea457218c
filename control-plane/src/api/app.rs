//! `/admin/v1/tenants/{tenant_id}/apps`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, app_id, tenant_id};
use crate::service::app::{AppIn, AppOut, AppPatch, PlacementIn, QuotaOverridesPatch, QuotasOut};
use crate::service::token_secret::{RotateTokenSecretIn, TokenSecretOut};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_apps, create_app))
        .routes(routes!(get_app, update_app, delete_app))
        .routes(routes!(get_quotas, update_quotas))
        .routes(routes!(place_app))
        .routes(routes!(list_token_secrets))
        .routes(routes!(rotate_token_secret))
}

/// List a tenant's apps
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps", tag = "apps",
    params(("tenant_id" = String, Path, description = "Tenant id"), PageParams),
    responses((status = 200, description = "Success", body = Page<AppOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_apps(
    State(s): State<AdminState>,
    Path(t): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AppOut>>, ApiError> {
    Ok(Json(s.cp.list_apps(&tenant_id(&t)?, &page).await?))
}

/// Create an app and place it on a cluster
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps", tag = "apps", request_body = AppIn,
    params(("tenant_id" = String, Path, description = "Tenant id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = AppOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_app(
    State(s): State<AdminState>,
    Path(t): Path<String>,
    Json(input): Json<AppIn>,
) -> Result<(StatusCode, Json<AppOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.cp.create_app(&tenant_id(&t)?, input).await?),
    ))
}

/// Get an app
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}", tag = "apps",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = AppOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_app(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<Json<AppOut>, ApiError> {
    Ok(Json(s.cp.get_app(&tenant_id(&t)?, &app_id(&a)?).await?))
}

/// Update an app (rename, environment, suspend or resume)
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}", tag = "apps", request_body = AppPatch,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = AppOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_app(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(p): Json<AppPatch>,
) -> Result<Json<AppOut>, ApiError> {
    Ok(Json(
        s.cp.update_app(&tenant_id(&t)?, &app_id(&a)?, p).await?,
    ))
}

/// Delete an app and its API keys
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}", tag = "apps",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_app(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_app(&tenant_id(&t)?, &app_id(&a)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get an app's limits: the plan's, the app's overrides, and those in force
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/quotas", tag = "apps",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = QuotasOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_quotas(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<Json<QuotasOut>, ApiError> {
    Ok(Json(s.cp.get_quotas(&tenant_id(&t)?, &app_id(&a)?).await?))
}

/// Set or clear an app's quota overrides (`null` clears one)
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/quotas", tag = "apps", request_body = QuotaOverridesPatch,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = QuotasOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_quotas(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(p): Json<QuotaOverridesPatch>,
) -> Result<Json<QuotasOut>, ApiError> {
    Ok(Json(
        s.cp.update_quotas(&tenant_id(&t)?, &app_id(&a)?, p).await?,
    ))
}

/// Move an app to another cluster
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/placement", tag = "apps", request_body = PlacementIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 200, description = "Success", body = AppOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn place_app(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(p): Json<PlacementIn>,
) -> Result<Json<AppOut>, ApiError> {
    Ok(Json(
        s.cp.place_app(&tenant_id(&t)?, &app_id(&a)?, p).await?,
    ))
}

/// List the secrets that sign the app's user tokens (HS256 JWTs; `kid` in the header)
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/token-secrets", tag = "apps",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = Vec<TokenSecretOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_token_secrets(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<Json<Vec<TokenSecretOut>>, ApiError> {
    Ok(Json(
        s.cp.list_token_secrets(&tenant_id(&t)?, &app_id(&a)?)
            .await?,
    ))
}

/// Make a new token secret; the current ones stay valid for the overlap
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/token-secrets/rotate", tag = "apps", request_body = RotateTokenSecretIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = TokenSecretOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn rotate_token_secret(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<RotateTokenSecretIn>,
) -> Result<(StatusCode, Json<TokenSecretOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            s.cp.rotate_token_secret(&tenant_id(&t)?, &app_id(&a)?, input)
                .await?,
        ),
    ))
}

//! `/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys` and `/admin/v1/api-keys/introspect`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, app_id, key_id, tenant_id};
use crate::service::api_key::{
    ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut, IntrospectIn, IntrospectOut, RotateIn,
};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(get_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(rotate_api_key))
        .routes(routes!(introspect_api_key))
}

/// List an app's API keys (without secrets)
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys", tag = "api-keys",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), PageParams),
    responses((status = 200, description = "Success", body = Page<ApiKeyOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_api_keys(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<ApiKeyOut>>, ApiError> {
    Ok(Json(
        s.cp.list_api_keys(&tenant_id(&t)?, &app_id(&a)?, &page)
            .await?,
    ))
}

/// Create an API key; its secret is in this response only
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys", tag = "api-keys", request_body = ApiKeyIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = ApiKeyCreatedOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_api_key(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Json(input): Json<ApiKeyIn>,
) -> Result<(StatusCode, Json<ApiKeyCreatedOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            s.cp.create_api_key(&tenant_id(&t)?, &app_id(&a)?, input)
                .await?,
        ),
    ))
}

/// Get an API key (without its secret)
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys/{key_id}", tag = "api-keys",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Success", body = ApiKeyOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_api_key(
    State(s): State<AdminState>,
    Path((t, a, k)): Path<(String, String, String)>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    Ok(Json(
        s.cp.get_api_key(&tenant_id(&t)?, &app_id(&a)?, &key_id(&k)?)
            .await?,
    ))
}

/// Revoke an API key at once
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys/{key_id}/revoke", tag = "api-keys",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Success", body = ApiKeyOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn revoke_api_key(
    State(s): State<AdminState>,
    Path((t, a, k)): Path<(String, String, String)>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    Ok(Json(
        s.cp.revoke_api_key(&tenant_id(&t)?, &app_id(&a)?, &key_id(&k)?)
            .await?,
    ))
}

/// Rotate an API key: a new key now, the old one valid for the overlap
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/api-keys/{key_id}/rotate", tag = "api-keys", request_body = RotateIn,
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), ("key_id" = String, Path, description = "Key id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = ApiKeyCreatedOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn rotate_api_key(
    State(s): State<AdminState>,
    Path((t, a, k)): Path<(String, String, String)>,
    Json(input): Json<RotateIn>,
) -> Result<(StatusCode, Json<ApiKeyCreatedOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            s.cp.rotate_api_key(&tenant_id(&t)?, &app_id(&a)?, &key_id(&k)?, input)
                .await?,
        ),
    ))
}

/// Check whether a presented API key works, and for which app
#[utoipa::path(post, path = "/admin/v1/api-keys/introspect", tag = "api-keys", request_body = IntrospectIn,
    responses((status = 200, description = "Success", body = IntrospectOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn introspect_api_key(
    State(s): State<AdminState>,
    Json(input): Json<IntrospectIn>,
) -> Result<Json<IntrospectOut>, ApiError> {
    Ok(Json(s.cp.introspect_api_key(&input.key).await?))
}

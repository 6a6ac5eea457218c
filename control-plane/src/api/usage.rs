//! `/admin/v1/tenants/{tenant_id}/apps/{app_id}/usage`: metered usage, quotas and threshold events.
use axum::extract::State;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Query};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, app_id, tenant_id};
use crate::service::usage::{
    AppUsageOut, HourlyQuery, HourlyUsageOut, MonthlyUsage, QuotaEventsOut, UsageQuery,
};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(get_usage))
        .routes(routes!(get_usage_hourly))
        .routes(routes!(get_usage_month))
        .routes(routes!(list_quota_events))
}

/// Get an app's usage: the current period against its quotas, and earlier months
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/usage", tag = "usage",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), UsageQuery),
    responses((status = 200, description = "Success", body = AppUsageOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_usage(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<AppUsageOut>, ApiError> {
    Ok(Json(
        s.cp.app_usage(&tenant_id(&t)?, &app_id(&a)?, &q).await?,
    ))
}

/// Get an app's usage per hour
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/usage/hourly", tag = "usage",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"), HourlyQuery),
    responses((status = 200, description = "Success", body = HourlyUsageOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_usage_hourly(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
    Query(q): Query<HourlyQuery>,
) -> Result<Json<HourlyUsageOut>, ApiError> {
    Ok(Json(
        s.cp.app_usage_hourly(&tenant_id(&t)?, &app_id(&a)?, &q)
            .await?,
    ))
}

/// Get one month of an app's usage
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/usage/months/{period}", tag = "usage",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id"),
        ("period" = String, Path, description = "The month, YYYY-MM (UTC)")),
    responses((status = 200, description = "Success", body = MonthlyUsage), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_usage_month(
    State(s): State<AdminState>,
    Path((t, a, p)): Path<(String, String, String)>,
) -> Result<Json<MonthlyUsage>, ApiError> {
    Ok(Json(
        s.cp.app_usage_month(&tenant_id(&t)?, &app_id(&a)?, &p)
            .await?,
    ))
}

/// List an app's quota threshold events (80 % and 100 % of a limit, once per period)
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/apps/{app_id}/usage/events", tag = "usage",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("app_id" = String, Path, description = "App id")),
    responses((status = 200, description = "Success", body = QuotaEventsOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_quota_events(
    State(s): State<AdminState>,
    Path((t, a)): Path<(String, String)>,
) -> Result<Json<QuotaEventsOut>, ApiError> {
    Ok(Json(
        s.cp.quota_events(&tenant_id(&t)?, &app_id(&a)?).await?,
    ))
}

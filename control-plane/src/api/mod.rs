//! The operator's admin REST API under `/admin/v1`.
//!
//! Every route but `/admin/v1/openapi.json` needs `Authorization: Bearer <operator token>`.
//! POSTs honour `Idempotency-Key`. Errors are `{code, message, request_id, field?}`.
//! The OpenAPI document is generated from these handlers (utoipa) and committed to
//! `sdk-specs/openapi/admin.json`; a test fails when the two drift apart.

mod api_key;
mod app;
mod billing;
mod cluster;
mod idempotency;
pub mod internal;
mod plan;
mod tenant;
mod usage;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use starling_core::cache::Cache;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::{ApiKeyId, AppId, TenantId};
use starling_core::secret::constant_time_eq;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::service::ControlPlane;

/// What the admin API handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The domain services.
    pub cp: ControlPlane,
    /// Where idempotency records live (Redis, or in-process in standalone).
    pub cache: Arc<dyn Cache>,
    /// The operator's bearer token.
    pub operator_token: Arc<str>,
    /// Largest request body on every route (`server.max_body_bytes`).
    pub max_body_bytes: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Starling admin API",
        description = "The operator's API of the Starling control plane: tenants, apps, API keys, plans and quotas, data-plane clusters.\n\nAuthenticate with `Authorization: Bearer <operator token>`. Lists use cursor pagination (`limit`, `cursor` → `next_cursor`). POST requests accept an `Idempotency-Key` header: a retry with the same key and body returns the first result (with `Idempotent-Replayed: true`) instead of acting twice. Errors are JSON `{code, message, request_id, field?}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecurityAddon),
    security(("operator_token" = [])),
    tags(
        (name = "tenants", description = "The platform's customers"),
        (name = "apps", description = "Apps within a tenant, their placement and quotas"),
        (name = "api-keys", description = "Server API keys of apps"),
        (name = "plans", description = "Plans and their limits"),
        (name = "clusters", description = "Data-plane clusters apps are placed on"),
        (name = "webhooks", description = "Webhook endpoints and the pre-send hook of apps"),
        (name = "usage", description = "Metered usage of apps, quotas and quota threshold events"),
        (name = "billing", description = "Stripe billing: plan prices and tenant subscriptions"),
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token from the config (`auth.operator_token`), printed by `starling standalone` on first start",
                    ))
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenant::routes())
        .merge(app::routes())
        .merge(api_key::routes())
        .merge(plan::routes())
        .merge(cluster::routes())
        .merge(webhook::routes())
        .merge(usage::routes())
        .merge(billing::routes())
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The OpenAPI document as committed to `sdk-specs/openapi/admin.json`.
pub fn openapi_json() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// The admin API router (paths already start with `/admin/v1`).
pub fn router(state: AdminState) -> Router {
    let (api, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    let api = api
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        .route_layer(from_fn_with_state(state.clone(), require_operator));
    Router::new()
        .route(
            "/admin/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route(
            "/stripe/webhook",
            axum::routing::post(billing::stripe_webhook).with_state(state.clone()),
        )
        .merge(internal::router(state.cp.clone()))
        .merge(api.with_state(state))
}

/// Middleware: the operator token must be presented.
async fn require_operator(
    State(s): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing Authorization header; send Authorization: Bearer <operator token>",
        ));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "Authorization must use the Bearer scheme",
            )
        })?;
    if !constant_time_eq(token.trim(), &s.operator_token) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid operator token",
        ));
    }
    Ok(next.run(req).await)
}

/// Path ids: a malformed id is simply an id that does not exist (404).
fn tenant_id(s: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|_| ApiError::not_found("tenant", s))
}

fn app_id(s: &str) -> Result<AppId, ApiError> {
    AppId::parse(s).map_err(|_| ApiError::not_found("app", s))
}

fn key_id(s: &str) -> Result<ApiKeyId, ApiError> {
    ApiKeyId::parse(s).map_err(|_| ApiError::not_found("api key", s))
}

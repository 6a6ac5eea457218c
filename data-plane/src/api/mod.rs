//! The server REST API under `/v1`, for customers' backends, authenticated with app API keys
//! (`Authorization: Bearer key_….secret`), checked locally against the app directory.
//!
//! Every response to an authenticated request carries `X-RateLimit-Limit`, `-Remaining` and
//! `-Reset` when the app's plan limits requests per second; over the limit the answer is 429
//! with `Retry-After`. What a key may do depends on its scopes and the route: each handler names
//! the permission it needs ([`crate::scope`]; the table in docs/SECURITY.md, "API key scopes").

mod conversation;
pub mod internal;
mod message;
mod user;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use starling_core::error::{ApiError, ErrorCode};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::node::Node;
use crate::ratelimit::Verdict;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Starling server API",
        description = "The API a customer's backend uses to manage the users, conversations and messages of one app, and to mint user tokens for the WebSocket gateway (`GET /v1/connect?token=…`, protocol in `sdk-specs/asyncapi/`).\n\nAuthenticate with `Authorization: Bearer <API key>` (from the admin or console API). Errors are JSON `{code, message, request_id, field?}`. When the app's plan limits requests per second, responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`; over the limit the answer is 429 with `Retry-After`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecurityAddon),
    security(("api_key" = [])),
    tags(
        (name = "users", description = "End users, their tokens, bans and conversations"),
        (name = "conversations", description = "Direct, group and room conversations and their members"),
        (name = "messages", description = "Messages, reactions, threads, read state"),
        (name = "webhooks", description = "Webhook events, deliveries, attempts, dead letters and replays"),
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API key of the app: `key_<id>.<secret>`"))
                        .build(),
                ),
            );
    }
}

fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(user::routes())
        .merge(conversation::routes())
        .merge(message::routes())
        .merge(webhook::routes())
}

/// The OpenAPI document of the server API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The document as committed to `sdk-specs/openapi/server.json`.
pub fn openapi_json() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// The node's routes: the server API (API key) and the WebSocket gateway (user token).
pub fn router(node: Arc<Node>) -> Router {
    let (api, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    let api = api.route_layer(from_fn_with_state(node.clone(), authenticate));
    Router::new()
        .route("/v1/connect", axum::routing::get(crate::gateway::connect))
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(api)
        // Not the internal routes: those are on the node's internal listener only
        // (`Node::internal_router`), never on the public one.
        .with_state(node)
}

/// Middleware: API key → [`KeyPrincipal`] in the request extensions; rate checks. (Each
/// handler checks the key's scopes for itself: [`crate::scope::Allowed`].)
async fn authenticate(
    State(node): State<Arc<Node>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing Authorization header; send Authorization: Bearer <API key>",
            )
        })?;
    let key = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "Authorization must use the Bearer scheme",
        )
    })?;
    let p = node.messaging.directory.authenticate_key(key)?;
    let mut headers = Vec::new();
    if let Some(rps) = p.limits.api_requests_per_second {
        let verdict = node
            .rate_limits
            .check(p.key_id.as_str(), rps)
            .await
            .unwrap_or_else(|e| {
                // Availability first: a limiter outage lets requests through, loudly.
                tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
                Verdict::Allowed {
                    limit: rps,
                    remaining: rps,
                }
            });
        match verdict {
            Verdict::Allowed { limit, remaining } => {
                headers.push(("x-ratelimit-limit", limit));
                headers.push(("x-ratelimit-remaining", remaining));
                headers.push(("x-ratelimit-reset", 1));
            }
            Verdict::Refused {
                limit,
                retry_after_ms,
            } => {
                let secs = retry_after_ms.div_ceil(1000).max(1);
                let mut e = ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "rate limit of {limit} requests per second exceeded (api_requests_per_second); retry in {retry_after_ms} ms"
                    ),
                );
                e.retry_after = Some(secs);
                let mut res = axum::response::IntoResponse::into_response(e);
                res.headers_mut()
                    .insert("x-ratelimit-limit", HeaderValue::from(limit));
                res.headers_mut()
                    .insert("x-ratelimit-remaining", HeaderValue::from(0u64));
                res.headers_mut()
                    .insert("x-ratelimit-reset", HeaderValue::from(secs));
                return Ok(res);
            }
        }
    }
    node.messaging.metering.record_api_call(p.app_id.as_str());
    req.extensions_mut().insert(p);
    let mut res = next.run(req).await;
    for (k, v) in headers {
        res.headers_mut().insert(k, HeaderValue::from(v));
    }
    Ok(res)
}

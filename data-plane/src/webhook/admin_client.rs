//! [`ControlPlaneClient`]: the control plane's webhook endpoint functions ([`WebhookAdmin`])
//! for a node of a cell, called over HTTP on the control plane's internal routes
//! (`/internal/v1/tenants/{tenant}/apps/{app}/webhook-endpoints…`, see
//! `starling_control_plane::api::internal`) with this cell's credential
//! (`gateway.cell_credential`, `scc_<id>.<secret>`): the control plane acts only on apps placed
//! on this cell.
//!
//! What the caller of the server API sees:
//! - the control plane's answer to their request (a validation error naming the field, a 404
//!   for another app's endpoint, …) comes back with the same status, code, message and field;
//! - the control plane unreachable, timing out or answering something unexpected is `503
//!   unavailable`, saying so (a client can retry; nothing was half-done on the node, which
//!   keeps no endpoint state of its own);
//! - the control plane refusing the node's credential (revoked, or for another control plane)
//!   is also `503 unavailable`, not a 401 the caller would take for a problem with their API
//!   key.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use starling_core::error::{ApiError, ErrorBody, ErrorCode};
use starling_core::id::{AppId, TenantId, WebhookEndpointId};
use starling_core::webhook_admin::{
    RotateWebhookSecretIn, WebhookAdmin, WebhookEndpointCreatedOut, WebhookEndpointIn,
    WebhookEndpointOut, WebhookEndpointPatch, WebhookSecretOut,
};

/// How long a call to the control plane may take in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to it may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The control plane's endpoint functions over its internal HTTP API.
pub struct ControlPlaneClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneClient {
    /// A client of the control plane at `base` (`http://host:port`) presenting `token` (the
    /// cell's credential, `gateway.cell_credential`).
    pub fn new(base: &str, token: String) -> anyhow::Result<Self> {
        // Not the webhook client: that one is SSRF-guarded for customers' URLs, while the
        // control plane is the operator's and commonly on a private network.
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("Starling-Node/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn unavailable(&self, what: &str) -> ApiError {
        ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the control plane ({}) {what}; webhook endpoints are managed there, retry shortly",
                self.base
            ),
        )
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        tenant: &TenantId,
        app: &AppId,
        rest: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, ApiError> {
        let url = format!(
            "{}/internal/v1/tenants/{tenant}/apps/{app}/webhook-endpoints{rest}",
            self.base
        );
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(id) = starling_core::http::current_request_id() {
            req = req.header(&starling_core::http::X_REQUEST_ID, id);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| {
            tracing::warn!(error = %super::chain(&e), %url, "control plane unreachable");
            if e.is_timeout() {
                self.unavailable("did not answer in time")
            } else {
                self.unavailable("is unreachable")
            }
        })?;
        let status = res.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return res.json::<T>().await.map(Some).map_err(|e| {
                tracing::error!(error = %e, %url, "control plane answered an unreadable body");
                self.unavailable("answered an unreadable body")
            });
        }
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body: Option<ErrorBody> = res.json().await.ok();
        match body.and_then(|b| Some((ErrorCode::parse(&b.code)?, b))) {
            Some((code, b)) if !matches!(code, ErrorCode::Unauthorized | ErrorCode::Forbidden) => {
                Err(ApiError {
                    code,
                    message: b.message,
                    field: b.field,
                    retry_after,
                })
            }
            _ => {
                tracing::error!(%status, %url, "control plane refused an internal call (is gateway.cell_credential issued for this cluster and not revoked?)");
                Err(self.unavailable(&format!("refused the call ({status})")))
            }
        }
    }
}

fn some<T>(v: Option<T>) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::internal("the control plane answered 204 where a body was due"))
}

fn json<T: Serialize>(v: &T) -> Result<Option<serde_json::Value>, ApiError> {
    serde_json::to_value(v)
        .map(Some)
        .map_err(ApiError::internal)
}

#[async_trait]
impl WebhookAdmin for ControlPlaneClient {
    async fn create_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: WebhookEndpointIn,
    ) -> Result<WebhookEndpointCreatedOut, ApiError> {
        some(
            self.call(Method::POST, tenant, app, "", json(&input)?)
                .await?,
        )
    }

    async fn get_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookEndpointOut, ApiError> {
        some(
            self.call(Method::GET, tenant, app, &format!("/{id}"), None)
                .await?,
        )
    }

    async fn update_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        patch: WebhookEndpointPatch,
    ) -> Result<WebhookEndpointOut, ApiError> {
        some(
            self.call(Method::PATCH, tenant, app, &format!("/{id}"), json(&patch)?)
                .await?,
        )
    }

    async fn delete_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<(), ApiError> {
        self.call::<serde_json::Value>(Method::DELETE, tenant, app, &format!("/{id}"), None)
            .await?;
        Ok(())
    }

    async fn get_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookSecretOut, ApiError> {
        some(
            self.call(Method::GET, tenant, app, &format!("/{id}/secret"), None)
                .await?,
        )
    }

    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        input: RotateWebhookSecretIn,
    ) -> Result<WebhookSecretOut, ApiError> {
        some(
            self.call(
                Method::POST,
                tenant,
                app,
                &format!("/{id}/secret/rotate"),
                json(&input)?,
            )
            .await?,
        )
    }
}

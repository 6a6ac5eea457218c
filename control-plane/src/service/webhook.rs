//! Webhook endpoints and the pre-send hook of an app. The control plane is their source of
//! truth; every change republishes the app's configuration on the feed, so the cells that
//! deliver events (and call the hook) follow within seconds and keep working from their cached
//! copy while the control plane is away. Delivery state (events, attempts, dead letters) lives
//! in the cell, next to the events.
//!
//! These functions are what the admin REST API calls, and what the console API can call.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use starling_core::appconfig::{PreSendHookConfig, WebhookEndpointConfig, WebhookSecret};
use starling_core::error::ApiError;
use starling_core::http::{Page, PageParams};
use starling_core::id::{AppId, TenantId, WebhookEndpointId};
use starling_core::seal::Sealer;
use starling_core::webhook::{check_url, event_type, generate_secret};
use utoipa::ToSchema;

pub use starling_core::webhook_admin::{
    RotateWebhookSecretIn, WebhookAdmin, WebhookEndpointCreatedOut, WebhookEndpointIn,
    WebhookEndpointOut, WebhookEndpointPatch, WebhookSecretOut,
};

use super::{ControlPlane, Result, invalid, not_found, paginate, sealed};
use crate::entity::{pre_send_hook, webhook_endpoint};
use crate::store::app_scoped;

/// Most endpoints per app.
pub const MAX_ENDPOINTS_PER_APP: u64 = 20;

/// The pre-send hook of an app.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreSendHookIn {
    /// Where each message is POSTed before it is stored.
    pub url: String,
    /// How long to wait for the answer, 10..=5000 ms (default 1000).
    pub timeout_ms: Option<u32>,
    /// What to do when the hook times out or fails: `true` stores the message unchanged
    /// (fail open), `false` refuses it (fail closed). Required: choose on purpose.
    pub fail_open: bool,
}

/// The pre-send hook of an app, with its signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreSendHookOut {
    /// Where messages are POSTed.
    pub url: String,
    /// Timeout in milliseconds.
    pub timeout_ms: u32,
    /// Fail open (`true`) or closed.
    pub fail_open: bool,
    /// The secret requests are signed with (`whsec_…`, Standard Webhooks).
    pub secret: String,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

fn out(m: &webhook_endpoint::Model) -> WebhookEndpointOut {
    WebhookEndpointOut {
        id: WebhookEndpointId::from_trusted(m.id.clone()),
        app_id: AppId::from_trusted(m.app_id.clone()),
        url: m.url.clone(),
        description: m.description.clone(),
        event_types: serde_json::from_value(m.event_types.clone()).unwrap_or_default(),
        enabled: m.enabled,
        rate_limit_per_second: m.rate_limit_per_second.map(|r| r as u32),
        ordered: m.ordered,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn check_endpoint_url(field: &str, url: &str) -> Result<()> {
    check_url(url).map_err(|m| invalid(field, m))
}

fn check_types(types: &[String]) -> Result<()> {
    if types.len() > 64 {
        return Err(invalid("event_types", "at most 64 event types"));
    }
    for (i, t) in types.iter().enumerate() {
        if event_type(t).is_none() {
            return Err(invalid(
                &format!("event_types[{i}]"),
                format!("{t:?} is not an event type (see docs/WEBHOOKS.md)"),
            ));
        }
    }
    Ok(())
}

fn check_description(d: &str) -> Result<String> {
    if d.chars().count() > 256 || d.chars().any(char::is_control) {
        return Err(invalid(
            "description",
            "must be at most 256 characters, no control characters",
        ));
    }
    Ok(d.trim().to_owned())
}

fn check_rate(r: u32) -> Result<i32> {
    if !(1..=10_000).contains(&r) {
        return Err(invalid("rate_limit_per_second", "must be 1..=10000"));
    }
    Ok(r as i32)
}

/// The clear signing secret of an endpoint row (the column holds it sealed).
fn open_endpoint_secret(sealer: &Sealer, m: &webhook_endpoint::Model) -> Result<String> {
    sealed::open(
        sealer,
        &sealed::endpoint_aad("secret", &m.tenant_id, &m.app_id, &m.id),
        &m.secret,
    )
}

/// What a cell needs of an endpoint row, its secrets opened.
pub(crate) fn endpoint_config(
    sealer: &Sealer,
    m: webhook_endpoint::Model,
) -> Result<WebhookEndpointConfig> {
    let mut secrets = vec![WebhookSecret {
        secret: open_endpoint_secret(sealer, &m)?,
        expires_at: None,
    }];
    if let (Some(s), Some(e)) = (&m.previous_secret, m.previous_expires_at)
        && e > Utc::now()
    {
        secrets.push(WebhookSecret {
            secret: sealed::open(
                sealer,
                &sealed::endpoint_aad("previous_secret", &m.tenant_id, &m.app_id, &m.id),
                s,
            )?,
            expires_at: Some(e),
        });
    }
    Ok(WebhookEndpointConfig {
        id: m.id,
        url: m.url,
        event_types: serde_json::from_value(m.event_types).unwrap_or_default(),
        secrets,
        enabled: m.enabled,
        enabled_at: m.enabled_at,
        rate_limit_per_second: m.rate_limit_per_second.map(|r| r as u32),
        ordered: m.ordered,
    })
}

/// The clear signing secret of a hook row (the column holds it sealed).
fn open_hook_secret(sealer: &Sealer, m: &pre_send_hook::Model) -> Result<String> {
    sealed::open(
        sealer,
        &sealed::hook_aad(&m.tenant_id, &m.app_id),
        &m.secret,
    )
}

/// What a cell needs of a hook row, its secret opened.
pub(crate) fn hook_config(sealer: &Sealer, m: pre_send_hook::Model) -> Result<PreSendHookConfig> {
    Ok(PreSendHookConfig {
        secret: WebhookSecret {
            secret: open_hook_secret(sealer, &m)?,
            expires_at: None,
        },
        url: m.url,
        timeout_ms: m.timeout_ms as u64,
        fail_open: m.fail_open,
    })
}

impl ControlPlane {
    /// The endpoints of an app, oldest first.
    pub async fn list_webhook_endpoints(
        &self,
        tenant: &TenantId,
        app: &AppId,
        page: &PageParams,
    ) -> Result<Page<WebhookEndpointOut>> {
        self.app_model(tenant, app).await?;
        paginate(
            &self.db,
            app_scoped::<webhook_endpoint::Entity>(tenant, app),
            webhook_endpoint::Column::Id,
            page,
            |m| out(&m),
            |o| o.id.as_str(),
        )
        .await
    }

    async fn endpoint_model(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<webhook_endpoint::Model> {
        app_scoped::<webhook_endpoint::Entity>(tenant, app)
            .filter(webhook_endpoint::Column::Id.eq(id.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found("webhook endpoint", id))
    }

    /// Adds an endpoint; its secret is in the answer.
    pub async fn create_webhook_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: WebhookEndpointIn,
    ) -> Result<WebhookEndpointCreatedOut> {
        check_endpoint_url("url", &input.url)?;
        let types = input.event_types.unwrap_or_default();
        check_types(&types)?;
        let description = check_description(input.description.as_deref().unwrap_or(""))?;
        let rate = input.rate_limit_per_second.map(check_rate).transpose()?;
        self.app_model(tenant, app).await?;
        let n = sea_orm::PaginatorTrait::count(
            app_scoped::<webhook_endpoint::Entity>(tenant, app),
            &self.db,
        )
        .await?;
        if n >= MAX_ENDPOINTS_PER_APP {
            return Err(super::Error::Conflict(format!(
                "app {app} has {n} webhook endpoints already; at most {MAX_ENDPOINTS_PER_APP}"
            )));
        }
        let now = super::now();
        let id = WebhookEndpointId::generate().into_string();
        let secret = generate_secret();
        let sealed_secret = self.sealer.seal(
            &sealed::endpoint_aad("secret", tenant.as_str(), app.as_str(), &id),
            &secret,
        );
        let m = webhook_endpoint::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            app_id: Set(app.to_string()),
            id: Set(id),
            url: Set(input.url),
            description: Set(description),
            event_types: Set(serde_json::json!(types)),
            secret: Set(sealed_secret),
            previous_secret: Set(None),
            previous_expires_at: Set(None),
            enabled: Set(input.enabled.unwrap_or(true)),
            enabled_at: Set(now),
            rate_limit_per_second: Set(rate),
            ordered: Set(input.ordered.unwrap_or(false)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(WebhookEndpointCreatedOut {
            endpoint: out(&m),
            secret,
        })
    }

    /// One endpoint.
    pub async fn get_webhook_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookEndpointOut> {
        Ok(out(&self.endpoint_model(tenant, app, id).await?))
    }

    /// Changes an endpoint.
    pub async fn update_webhook_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        patch: WebhookEndpointPatch,
    ) -> Result<WebhookEndpointOut> {
        if let Some(u) = &patch.url {
            check_endpoint_url("url", u)?;
        }
        if let Some(t) = &patch.event_types {
            check_types(t)?;
        }
        let description = patch
            .description
            .as_deref()
            .map(check_description)
            .transpose()?;
        let rate = match patch.rate_limit_per_second {
            Some(Some(r)) => Some(Some(check_rate(r)?)),
            Some(None) => Some(None),
            None => None,
        };
        let m = self.endpoint_model(tenant, app, id).await?;
        let now = super::now();
        let mut a: webhook_endpoint::ActiveModel = m.into();
        if let Some(u) = patch.url {
            a.url = Set(u);
        }
        if let Some(d) = description {
            a.description = Set(d);
        }
        if let Some(t) = patch.event_types {
            a.event_types = Set(serde_json::json!(t));
        }
        if let Some(e) = patch.enabled {
            a.enabled = Set(e);
            if e {
                // Enabling on purpose also lifts an automatic disabling in the cells.
                a.enabled_at = Set(now);
            }
        }
        if let Some(r) = rate {
            a.rate_limit_per_second = Set(r);
        }
        if let Some(o) = patch.ordered {
            a.ordered = Set(o);
        }
        a.updated_at = Set(now);
        let m = a.update(&self.db).await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(out(&m))
    }

    /// Removes an endpoint; deliveries still due to it are dropped by the cells.
    pub async fn delete_webhook_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<()> {
        self.endpoint_model(tenant, app, id).await?;
        webhook_endpoint::Entity::delete_many()
            .filter(webhook_endpoint::Column::TenantId.eq(tenant.as_str()))
            .filter(webhook_endpoint::Column::AppId.eq(app.as_str()))
            .filter(webhook_endpoint::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(())
    }

    /// An endpoint's signing secret.
    pub async fn get_webhook_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<WebhookSecretOut> {
        let m = self.endpoint_model(tenant, app, id).await?;
        Ok(WebhookSecretOut {
            secret: open_endpoint_secret(&self.sealer, &m)?,
            previous_expires_at: m.previous_expires_at.filter(|e| *e > Utc::now()),
        })
    }

    /// A new secret now; the current one keeps signing (beside it) for the overlap.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        input: RotateWebhookSecretIn,
    ) -> Result<WebhookSecretOut> {
        let overlap = input.overlap_seconds.unwrap_or(86_400);
        if overlap > super::api_key::MAX_OVERLAP_SECONDS {
            return Err(invalid(
                "overlap_seconds",
                "must be at most 2592000 (30 days)",
            ));
        }
        let m = self.endpoint_model(tenant, app, id).await?;
        let now = super::now();
        let end = now + Duration::seconds(overlap as i64);
        // Each column's value is bound to its column: the old secret is opened and sealed anew
        // as the previous one.
        let old = open_endpoint_secret(&self.sealer, &m)?;
        let (t, ap, i) = (tenant.as_str(), app.as_str(), id.as_str());
        let secret = generate_secret();
        let mut a: webhook_endpoint::ActiveModel = m.into();
        a.previous_secret = Set(Some(
            self.sealer
                .seal(&sealed::endpoint_aad("previous_secret", t, ap, i), &old),
        ));
        a.previous_expires_at = Set(Some(end));
        a.secret = Set(self
            .sealer
            .seal(&sealed::endpoint_aad("secret", t, ap, i), &secret));
        a.updated_at = Set(now);
        a.update(&self.db).await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(WebhookSecretOut {
            secret,
            previous_expires_at: Some(end),
        })
    }

    /// Sets (or replaces) the app's pre-send hook; the secret is kept when there was one.
    pub async fn put_pre_send_hook(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: PreSendHookIn,
    ) -> Result<PreSendHookOut> {
        check_endpoint_url("url", &input.url)?;
        let timeout = input.timeout_ms.unwrap_or(1000);
        if !(10..=5000).contains(&timeout) {
            return Err(invalid("timeout_ms", "must be 10..=5000"));
        }
        self.app_model(tenant, app).await?;
        // Read and write in one write transaction, and once more if a concurrent set or delete
        // got in between (an insert that meets the other's row, an update of a deleted row):
        // racing calls end with one hook, never with an internal error.
        let mut attempt = 0;
        let m = loop {
            attempt += 1;
            match self
                .put_pre_send_hook_once(tenant, app, &input, timeout)
                .await
            {
                Err(super::Error::Conflict(_))
                | Err(super::Error::Db(sea_orm::DbErr::RecordNotUpdated))
                    if attempt < 3 => {}
                r => break r?,
            }
        };
        self.publish_app(tenant.as_str(), app.as_str()).await;
        hook_out(&self.sealer, m)
    }

    async fn put_pre_send_hook_once(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: &PreSendHookIn,
        timeout: u32,
    ) -> Result<pre_send_hook::Model> {
        let txn = starling_core::db::begin_write(&self.db).await?;
        let old = app_scoped::<pre_send_hook::Entity>(tenant, app)
            .one(&txn)
            .await?;
        let now = super::now();
        let m = match old {
            Some(o) => {
                let mut a: pre_send_hook::ActiveModel = o.into();
                a.url = Set(input.url.clone());
                a.timeout_ms = Set(timeout as i32);
                a.fail_open = Set(input.fail_open);
                a.updated_at = Set(now);
                a.update(&txn).await?
            }
            None => {
                pre_send_hook::ActiveModel {
                    tenant_id: Set(tenant.to_string()),
                    app_id: Set(app.to_string()),
                    url: Set(input.url.clone()),
                    secret: Set(self.sealer.seal(
                        &sealed::hook_aad(tenant.as_str(), app.as_str()),
                        &generate_secret(),
                    )),
                    timeout_ms: Set(timeout as i32),
                    fail_open: Set(input.fail_open),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?
            }
        };
        txn.commit().await?;
        Ok(m)
    }

    /// The app's pre-send hook.
    pub async fn get_pre_send_hook(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<PreSendHookOut> {
        self.app_model(tenant, app).await?;
        app_scoped::<pre_send_hook::Entity>(tenant, app)
            .one(&self.db)
            .await?
            .map(|m| hook_out(&self.sealer, m))
            .ok_or_else(|| not_found("pre-send hook of app", app))?
    }

    /// Removes the app's pre-send hook: messages are stored without asking anyone.
    pub async fn delete_pre_send_hook(&self, tenant: &TenantId, app: &AppId) -> Result<()> {
        self.get_pre_send_hook(tenant, app).await?;
        pre_send_hook::Entity::delete_many()
            .filter(pre_send_hook::Column::TenantId.eq(tenant.as_str()))
            .filter(pre_send_hook::Column::AppId.eq(app.as_str()))
            .exec(&self.db)
            .await?;
        self.publish_app(tenant.as_str(), app.as_str()).await;
        Ok(())
    }
}

fn hook_out(sealer: &Sealer, m: pre_send_hook::Model) -> Result<PreSendHookOut> {
    Ok(PreSendHookOut {
        secret: open_hook_secret(sealer, &m)?,
        url: m.url,
        timeout_ms: m.timeout_ms as u32,
        fail_open: m.fail_open,
        updated_at: m.updated_at,
    })
}

/// The endpoint functions above for the server API of a node in the same process (standalone):
/// the app's tenant and id come from the node's API key.
#[async_trait::async_trait]
impl WebhookAdmin for ControlPlane {
    async fn create_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        input: WebhookEndpointIn,
    ) -> std::result::Result<WebhookEndpointCreatedOut, ApiError> {
        Ok(self.create_webhook_endpoint(tenant, app, input).await?)
    }

    async fn get_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> std::result::Result<WebhookEndpointOut, ApiError> {
        Ok(self.get_webhook_endpoint(tenant, app, id).await?)
    }

    async fn update_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        patch: WebhookEndpointPatch,
    ) -> std::result::Result<WebhookEndpointOut, ApiError> {
        Ok(self.update_webhook_endpoint(tenant, app, id, patch).await?)
    }

    async fn delete_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> std::result::Result<(), ApiError> {
        Ok(self.delete_webhook_endpoint(tenant, app, id).await?)
    }

    async fn get_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> std::result::Result<WebhookSecretOut, ApiError> {
        Ok(self.get_webhook_secret(tenant, app, id).await?)
    }

    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &WebhookEndpointId,
        input: RotateWebhookSecretIn,
    ) -> std::result::Result<WebhookSecretOut, ApiError> {
        Ok(self.rotate_webhook_secret(tenant, app, id, input).await?)
    }
}

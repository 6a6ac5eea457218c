//! Webhook endpoints and the pre-send hook of an app in the console, over the control plane's
//! webhook service (`starling_control_plane::service::webhook`), the same functions the admin
//! REST API calls.
//!
//! Role decision: they are managed like API keys — every role reads them (never a secret);
//! developers and up create, change, delete them and rotate their secrets, and set or remove the
//! pre-send hook. A signing secret is shown once: when an endpoint is created or its secret
//! rotated, and when a pre-send hook is first set (its secret is kept when the hook is changed;
//! remove and set it again for a new one).

use async_graphql::{Context, ID, InputObject, MaybeUndefined, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::json;
use starling_control_plane::service::Error as CpError;
use starling_control_plane::service::webhook::{
    PreSendHookIn, PreSendHookOut, RotateWebhookSecretIn, WebhookEndpointIn, WebhookEndpointOut,
    WebhookEndpointPatch,
};
use starling_core::id::{AppId, WebhookEndpointId};
use starling_core::webhook::EVENT_TYPES;

use crate::Console;
use crate::audit;
use crate::error::{Fail, Result};
use crate::page::{self, Conn};
use crate::role::{Role, authorize};

fn console<'a>(ctx: &'a Context<'_>) -> &'a Console {
    ctx.data_unchecked::<Console>()
}

fn app_id(id: &str) -> Result<AppId> {
    AppId::parse(id).map_err(|_| Fail::not_found("app", id))
}

fn endpoint_id(id: &str) -> Result<WebhookEndpointId> {
    WebhookEndpointId::parse(id).map_err(|_| Fail::not_found("webhook endpoint", id))
}

/// The service names fields as the REST API does (`event_types[2]`); the console names them as
/// its GraphQL arguments (`eventTypes[2]`).
fn graphql_field(mut f: Fail) -> Fail {
    if let Some(field) = f.field.take() {
        let mut camel = String::with_capacity(field.len());
        let mut upper = false;
        for c in field.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.extend(c.to_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        f.message = f.message.replacen(&field, &camel, 1);
        f.field = Some(camel);
    }
    f
}

fn cp_fail(e: CpError) -> Fail {
    graphql_field(e.into())
}

/// A URL for the audit log: without its query and fragment, which may carry a token.
fn loggable_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

/// An event type a webhook endpoint can subscribe to.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEventType {
    /// The event's `type`, e.g. `message.created`.
    pub name: String,
    /// Opt-in types reach only endpoints that list them; an endpoint with no types listed gets
    /// every type that is not opt-in.
    pub opt_in: bool,
}

/// The catalog of event types.
pub fn event_types() -> Vec<WebhookEventType> {
    EVENT_TYPES
        .iter()
        .map(|t| WebhookEventType {
            name: t.name.to_owned(),
            opt_in: t.opt_in,
        })
        .collect()
}

/// A webhook endpoint of an app (never with its secret).
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEndpoint {
    /// Id (`ep_…`).
    pub id: ID,
    /// Where events are POSTed.
    pub url: String,
    /// A note for humans.
    pub description: String,
    /// Subscribed event types; empty: every type that is not opt-in (see `webhookEventTypes`).
    pub event_types: Vec<String>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Most deliveries per second, if limited.
    pub rate_limit_per_second: Option<u32>,
    /// One event at a time, in the order they happened.
    pub ordered: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpointOut> for WebhookEndpoint {
    fn from(e: WebhookEndpointOut) -> Self {
        WebhookEndpoint {
            id: ID(e.id.to_string()),
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            rate_limit_per_second: e.rate_limit_per_second,
            ordered: e.ordered,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint just created: the only time its signing secret is shown.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEndpointCreated {
    /// The endpoint.
    pub webhook_endpoint: WebhookEndpoint,
    /// The signing secret (`whsec_…`, Standard Webhooks). Shown once; store it safely.
    pub secret: String,
}

/// An endpoint whose secret was just rotated: the only time the new secret is shown.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookSecretRotated {
    /// The endpoint.
    pub webhook_endpoint: WebhookEndpoint,
    /// The new signing secret (`whsec_…`). Shown once.
    pub secret: String,
    /// Until when the previous secret signs too (each request then carries both signatures).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// The pre-send hook of an app: called with each message before it is stored (never with its
/// secret).
#[derive(SimpleObject, Clone, Debug)]
pub struct PreSendHook {
    /// Where messages are POSTed.
    pub url: String,
    /// How long to wait for the answer, in milliseconds.
    pub timeout_ms: u32,
    /// When the hook times out or fails: `true` stores the message unchanged, `false` refuses it.
    pub fail_open: bool,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<PreSendHookOut> for PreSendHook {
    fn from(h: PreSendHookOut) -> Self {
        PreSendHook {
            url: h.url,
            timeout_ms: h.timeout_ms,
            fail_open: h.fail_open,
            updated_at: h.updated_at,
        }
    }
}

/// A pre-send hook just set.
#[derive(SimpleObject, Clone, Debug)]
pub struct PreSendHookSet {
    /// The hook.
    pub pre_send_hook: PreSendHook,
    /// The signing secret (`whsec_…`) when the hook was created by this call, shown only then;
    /// `null` when an existing hook was changed (it keeps its secret).
    pub secret: Option<String>,
}

/// A new webhook endpoint.
#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// Where events are POSTed: an `https://` (or `http://`) URL, at most 2048 bytes.
    pub url: String,
    /// A note for humans, at most 256 characters.
    pub description: Option<String>,
    /// Event types to receive (see `webhookEventTypes`); omitted or empty: every type that is
    /// not opt-in.
    pub event_types: Option<Vec<String>>,
    /// Whether it receives events (default `true`).
    pub enabled: Option<bool>,
    /// Most deliveries per second, 1..=10000; unlimited when omitted.
    pub rate_limit_per_second: Option<u32>,
    /// Deliver one event at a time, in order (default `false`): a failing event then holds back
    /// the later ones until it succeeds or becomes a dead letter.
    pub ordered: Option<bool>,
}

/// Changes to a webhook endpoint; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New event types (empty: every type that is not opt-in).
    pub event_types: Option<Vec<String>>,
    /// Enable (also lifts an automatic disabling after repeated failures) or disable.
    pub enabled: Option<bool>,
    /// New rate limit, 1..=10000; `null` removes it.
    pub rate_limit_per_second: MaybeUndefined<u32>,
    /// Ordered delivery on or off.
    pub ordered: Option<bool>,
}

/// The pre-send hook of an app.
#[derive(InputObject)]
pub struct PreSendHookInput {
    /// Where each message is POSTed before it is stored.
    pub url: String,
    /// How long to wait for the answer, 10..=5000 ms (default 1000).
    pub timeout_ms: Option<u32>,
    /// What to do when the hook times out or fails: `true` stores the message unchanged (fail
    /// open), `false` refuses it (fail closed). Required: choose on purpose.
    pub fail_open: bool,
}

/// `App.webhookEndpoints(first, after)`: oldest first.
pub async fn list(
    ctx: &Context<'_>,
    tenant: &str,
    app: &AppId,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Conn<WebhookEndpoint>> {
    let a = authorize(ctx, tenant, Role::Viewer).await?;
    let had_after = after.is_some();
    let p = page::params(first, after)?;
    let page = console(ctx)
        .cp
        .list_webhook_endpoints(&a.tenant, app, &p)
        .await
        .map_err(|e| page::after_arg(e.into()))?
        .map(WebhookEndpoint::from);
    Ok(page::conn(page, |e| e.id.to_string(), had_after))
}

/// `App.preSendHook`: `None` when the app has none.
pub async fn pre_send_hook(
    ctx: &Context<'_>,
    tenant: &str,
    app: &AppId,
) -> Result<Option<PreSendHook>> {
    let a = authorize(ctx, tenant, Role::Viewer).await?;
    let cp = &console(ctx).cp;
    // The app is checked first, so that "not found" below can only mean "no hook".
    cp.get_app(&a.tenant, app).await?;
    match cp.get_pre_send_hook(&a.tenant, app).await {
        Ok(h) => Ok(Some(h.into())),
        Err(CpError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `createWebhookEndpoint`.
pub async fn create(
    ctx: &Context<'_>,
    tenant: &str,
    app: &str,
    input: CreateWebhookEndpointInput,
) -> Result<WebhookEndpointCreated> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    let e = console(ctx)
        .cp
        .create_webhook_endpoint(
            &a.tenant,
            &app,
            WebhookEndpointIn {
                url: input.url,
                description: input.description,
                event_types: input.event_types,
                enabled: input.enabled,
                rate_limit_per_second: input.rate_limit_per_second,
                ordered: input.ordered,
            },
        )
        .await
        .map_err(cp_fail)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        "createWebhookEndpoint",
        Some(e.endpoint.id.as_str()),
        json!({
            "app": app.as_str(),
            "url": loggable_url(&e.endpoint.url),
            "eventTypes": e.endpoint.event_types,
            "enabled": e.endpoint.enabled,
        }),
    )
    .await?;
    Ok(WebhookEndpointCreated {
        webhook_endpoint: e.endpoint.into(),
        secret: e.secret,
    })
}

/// `updateWebhookEndpoint`.
pub async fn update(
    ctx: &Context<'_>,
    tenant: &str,
    app: &str,
    endpoint: &str,
    input: UpdateWebhookEndpointInput,
) -> Result<WebhookEndpoint> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    let id = endpoint_id(endpoint)?;
    let rate = match input.rate_limit_per_second {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(r) => Some(Some(r)),
    };
    // The fields that were given, as the audit detail.
    let mut detail = serde_json::Map::new();
    detail.insert("app".into(), json!(app.as_str()));
    let mut given = |k: &str, v: serde_json::Value, present: bool| {
        if present {
            detail.insert(k.into(), v);
        }
    };
    given(
        "url",
        json!(input.url.as_deref().map(loggable_url)),
        input.url.is_some(),
    );
    given(
        "description",
        json!(input.description),
        input.description.is_some(),
    );
    given(
        "eventTypes",
        json!(input.event_types),
        input.event_types.is_some(),
    );
    given("enabled", json!(input.enabled), input.enabled.is_some());
    given("rateLimitPerSecond", json!(rate.flatten()), rate.is_some());
    given("ordered", json!(input.ordered), input.ordered.is_some());
    let e = console(ctx)
        .cp
        .update_webhook_endpoint(
            &a.tenant,
            &app,
            &id,
            WebhookEndpointPatch {
                url: input.url,
                description: input.description,
                event_types: input.event_types,
                enabled: input.enabled,
                rate_limit_per_second: rate,
                ordered: input.ordered,
            },
        )
        .await
        .map_err(cp_fail)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        "updateWebhookEndpoint",
        Some(id.as_str()),
        serde_json::Value::Object(detail),
    )
    .await?;
    Ok(e.into())
}

/// `deleteWebhookEndpoint`.
pub async fn delete(ctx: &Context<'_>, tenant: &str, app: &str, endpoint: &str) -> Result<bool> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    let id = endpoint_id(endpoint)?;
    console(ctx)
        .cp
        .delete_webhook_endpoint(&a.tenant, &app, &id)
        .await
        .map_err(cp_fail)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        "deleteWebhookEndpoint",
        Some(id.as_str()),
        json!({"app": app.as_str()}),
    )
    .await?;
    Ok(true)
}

/// `rotateWebhookSecret`.
pub async fn rotate_secret(
    ctx: &Context<'_>,
    tenant: &str,
    app: &str,
    endpoint: &str,
    overlap_seconds: Option<u32>,
) -> Result<WebhookSecretRotated> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    let id = endpoint_id(endpoint)?;
    let cp = &console(ctx).cp;
    let s = cp
        .rotate_webhook_secret(
            &a.tenant,
            &app,
            &id,
            RotateWebhookSecretIn {
                overlap_seconds: overlap_seconds.map(u64::from),
            },
        )
        .await
        .map_err(cp_fail)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        "rotateWebhookSecret",
        Some(id.as_str()),
        json!({"app": app.as_str(), "previousSecretExpiresAt": s.previous_expires_at}),
    )
    .await?;
    let e = cp.get_webhook_endpoint(&a.tenant, &app, &id).await?;
    Ok(WebhookSecretRotated {
        webhook_endpoint: e.into(),
        secret: s.secret,
        previous_secret_expires_at: s.previous_expires_at,
    })
}

/// `setPreSendHook`.
pub async fn set_pre_send_hook(
    ctx: &Context<'_>,
    tenant: &str,
    app: &str,
    input: PreSendHookInput,
) -> Result<PreSendHookSet> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    let cp = &console(ctx).cp;
    let before = match cp.get_pre_send_hook(&a.tenant, &app).await {
        Ok(h) => Some(h.secret),
        Err(CpError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let h = cp
        .put_pre_send_hook(
            &a.tenant,
            &app,
            PreSendHookIn {
                url: input.url,
                timeout_ms: input.timeout_ms,
                fail_open: input.fail_open,
            },
        )
        .await
        .map_err(cp_fail)?;
    let created = before.as_deref() != Some(h.secret.as_str());
    audit::record(
        ctx,
        a.tenant.as_str(),
        "setPreSendHook",
        Some(app.as_str()),
        json!({
            "url": loggable_url(&h.url),
            "timeoutMs": h.timeout_ms,
            "failOpen": h.fail_open,
            "created": created,
        }),
    )
    .await?;
    let secret = created.then(|| h.secret.clone());
    Ok(PreSendHookSet {
        pre_send_hook: h.into(),
        secret,
    })
}

/// `deletePreSendHook`.
pub async fn delete_pre_send_hook(ctx: &Context<'_>, tenant: &str, app: &str) -> Result<bool> {
    let a = authorize(ctx, tenant, Role::Developer).await?;
    let app = app_id(app)?;
    console(ctx)
        .cp
        .delete_pre_send_hook(&a.tenant, &app)
        .await
        .map_err(cp_fail)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        "deletePreSendHook",
        Some(app.as_str()),
        json!({}),
    )
    .await?;
    Ok(true)
}

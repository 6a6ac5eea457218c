//! Apps: their cluster, quotas, keys, token secrets, usage, webhooks and moderation reads, and
//! the mutations that change them.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use starling_control_plane::entity::Status as CpStatus;
use starling_control_plane::service::api_key::{ApiKeyIn, ApiKeyOut, RotateIn};
use starling_control_plane::service::app::{AppIn, AppOut, AppPatch};
use starling_control_plane::service::plan::Limits;
use starling_control_plane::service::token_secret::RotateTokenSecretIn;

use super::*;
use crate::audit::{self};
use crate::error::Fail;
use crate::moderation::{ChatMessage, EndUser, Messages, PageOf, UserConversation, seg};
use crate::page::{self, Conn};
use crate::role::{Role, authorize};
use crate::usage::{QuotaEvent, Usage};
use crate::webhook::{PreSendHook, WebhookEndpoint};

/// An app's limits: its plan's, its overrides, and those in force.
#[derive(SimpleObject, Clone)]
pub struct Quotas {
    /// The tenant's plan's machine name.
    pub plan_code: String,
    /// The plan's limits.
    pub plan_limits: QuotaLimits,
    /// This app's overrides (set by the operator).
    pub overrides: QuotaLimits,
    /// Overrides over the plan: what the data plane enforces.
    pub effective: QuotaLimits,
}

/// The data-plane cluster an app lives on.
#[derive(SimpleObject, Clone)]
pub struct Cluster {
    /// Id.
    pub id: ID,
    /// Machine name.
    pub name: String,
    /// Region.
    pub region: String,
}

/// An app within a tenant.
#[derive(Clone)]
pub struct App(pub(super) AppOut);

#[Object]
impl App {
    /// Id (`app_…`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Display name, unique within the tenant.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Environment.
    async fn environment(&self) -> AppEnvironment {
        self.0.environment.into()
    }

    /// Status.
    async fn status(&self) -> Status {
        self.0.status.into()
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// The data-plane cluster the app lives on.
    async fn cluster(&self, ctx: &Context<'_>) -> Result<Cluster> {
        authorize(ctx, self.0.tenant_id.as_str(), Role::Viewer).await?;
        let c = console(ctx)
            .cp
            .get_cluster(self.0.cluster_id.as_str())
            .await
            .map_err(Fail::from)?;
        Ok(Cluster {
            id: ID(c.id.to_string()),
            name: c.name,
            region: c.region,
        })
    }

    /// The app's limits. Overrides are set by the operator; the console shows them.
    async fn quotas(&self, ctx: &Context<'_>) -> Result<Quotas> {
        let a = authorize(ctx, self.0.tenant_id.as_str(), Role::Viewer).await?;
        let q = console(ctx)
            .cp
            .get_quotas(&a.tenant, &self.0.id)
            .await
            .map_err(Fail::from)?;
        Ok(Quotas {
            plan_code: q.plan_code,
            plan_limits: q.plan_limits.into(),
            overrides: q.overrides.into(),
            effective: q.effective.into(),
        })
    }

    /// The app's API keys, never with their secrets.
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<ApiKey>> {
        let a = authorize(ctx, self.0.tenant_id.as_str(), Role::Viewer).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let page = console(ctx)
            .cp
            .list_api_keys(&a.tenant, &self.0.id, &p)
            .await
            .map_err(|e| page::after_arg(e.into()))?
            .map(ApiKey::from);
        Ok(page::conn(page, |k| k.id.to_string(), had_after))
    }

    /// The secrets that sign the app's user tokens (developers and up).
    #[graphql(complexity = "crate::limits::times(5, child_complexity)")]
    async fn token_secrets(&self, ctx: &Context<'_>) -> Result<Vec<TokenSecret>> {
        let a = authorize(ctx, self.0.tenant_id.as_str(), Role::Developer).await?;
        Ok(console(ctx)
            .cp
            .list_token_secrets(&a.tenant, &self.0.id)
            .await
            .map_err(Fail::from)?
            .into_iter()
            .map(|s| TokenSecret {
                kid: ID(s.kid.to_string()),
                secret: s.secret,
                created_at: s.created_at,
                expires_at: s.expires_at,
            })
            .collect())
    }

    /// Moderation: the app's end users, by id (admins and owners). Served by the app's cell.
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 10)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<EndUser>> {
        let cell = Cell::of(ctx, self.0.tenant_id.as_str(), self.0.id.as_str()).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let mut path = format!("/users?limit={}", p.limit.unwrap_or(20));
        if let Some(c) = &p.cursor {
            path.push_str(&format!("&cursor={}", seg(c)));
        }
        let page: PageOf<EndUser> = cell.call(Method::GET, &path, None).await?;
        Ok(page::conn(
            starling_core::http::Page {
                data: page.data,
                next_cursor: page.next_cursor,
            },
            |u| u.id.clone(),
            had_after,
        ))
    }

    /// Moderation: one end user (admins and owners).
    #[graphql(complexity = "crate::limits::plus(10, child_complexity)")]
    async fn user(&self, ctx: &Context<'_>, id: String) -> Result<EndUser> {
        let cell = Cell::of(ctx, self.0.tenant_id.as_str(), self.0.id.as_str()).await?;
        Ok(cell
            .call(Method::GET, &format!("/users/{}", seg(&id)), None)
            .await?)
    }

    /// Moderation: the conversations a user is in (admins and owners).
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 10)")]
    async fn user_conversations(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<crate::moderation::ChatConversation>> {
        let cell = Cell::of(ctx, self.0.tenant_id.as_str(), self.0.id.as_str()).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let mut path = format!(
            "/users/{}/conversations?limit={}",
            seg(&user_id),
            p.limit.unwrap_or(20)
        );
        if let Some(c) = &p.cursor {
            path.push_str(&format!("&cursor={}", seg(c)));
        }
        let page: PageOf<UserConversation> = cell.call(Method::GET, &path, None).await?;
        Ok(page::conn(
            starling_core::http::Page {
                data: page.data.into_iter().map(|c| c.conversation).collect(),
                next_cursor: page.next_cursor,
            },
            |c| c.id.clone(),
            had_after,
        ))
    }

    /// Moderation: a conversation's most recent messages, newest first (admins and owners).
    #[graphql(complexity = "crate::limits::page_cost(last, child_complexity, 10)")]
    async fn recent_messages(
        &self,
        ctx: &Context<'_>,
        conversation_id: String,
        #[graphql(desc = "How many, 1..=100 (default 20).")] last: Option<i32>,
    ) -> Result<Vec<ChatMessage>> {
        let cell = Cell::of(ctx, self.0.tenant_id.as_str(), self.0.id.as_str()).await?;
        let n = last.unwrap_or(20);
        if !(1..=page::MAX_FIRST).contains(&n) {
            return Err(Fail::field("last", format!("must be 1..={}", page::MAX_FIRST)).into());
        }
        let m: Messages = cell
            .call(
                Method::GET,
                &format!(
                    "/conversations/{}/messages?limit={n}",
                    seg(&conversation_id)
                ),
                None,
            )
            .await?;
        Ok(m.messages)
    }

    /// Metered usage in a calendar month (`YYYY-MM`, UTC; default: the month in progress, so
    /// far), with the month's limits and how much of each is used.
    #[graphql(complexity = "crate::limits::plus(5, child_complexity)")]
    async fn usage(&self, ctx: &Context<'_>, period: Option<String>) -> Result<Usage> {
        Ok(crate::usage::usage(ctx, self.0.tenant_id.as_str(), &self.0.id, period).await?)
    }

    /// Quota thresholds passed (80 % and 100 % of a limit, once per month), oldest first.
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
    async fn quota_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<QuotaEvent>> {
        Ok(
            crate::usage::quota_events(ctx, self.0.tenant_id.as_str(), &self.0.id, first, after)
                .await?,
        )
    }

    /// The app's webhook endpoints, oldest first, never with their secrets.
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<WebhookEndpoint>> {
        Ok(crate::webhook::list(ctx, self.0.tenant_id.as_str(), &self.0.id, first, after).await?)
    }

    /// The app's pre-send hook (never with its secret); `null` when it has none.
    async fn pre_send_hook(&self, ctx: &Context<'_>) -> Result<Option<PreSendHook>> {
        Ok(crate::webhook::pre_send_hook(ctx, self.0.tenant_id.as_str(), &self.0.id).await?)
    }
}

/// An API key (never with its secret).
#[derive(SimpleObject, Clone)]
pub struct ApiKey {
    /// The key id: the public part of the key.
    pub id: ID,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<KeyScope>,
    /// Whether it works now.
    pub status: KeyStatus,
    /// When it stops (or stopped) working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last presented (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<ID>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<ID>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<ApiKeyOut> for ApiKey {
    fn from(k: ApiKeyOut) -> Self {
        ApiKey {
            id: ID(k.id.to_string()),
            name: k.name,
            scopes: k.scopes.into_iter().map(Into::into).collect(),
            status: k.status.into(),
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            rotated_from: k.rotated_from.map(|i| ID(i.to_string())),
            replaced_by: k.replaced_by.map(|i| ID(i.to_string())),
            created_at: k.created_at,
        }
    }
}

/// A key just created or rotated: the only time its secret is shown.
#[derive(SimpleObject, Clone)]
pub struct ApiKeyCreated {
    /// The key.
    pub api_key: ApiKey,
    /// The full key for `Authorization: Bearer …`. Shown once; store it safely.
    pub secret: String,
}

/// A secret that signs an app's user tokens (HS256).
#[derive(SimpleObject, Clone)]
pub struct TokenSecret {
    /// Key id: the JWT header's `kid`.
    pub kid: ID,
    /// The secret. Keep it on your servers only.
    pub secret: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When tokens signed with it stop being accepted (set by rotation).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new app.
#[derive(InputObject)]
pub struct CreateAppInput {
    /// Display name, unique within the tenant, 1..=128 characters.
    pub name: String,
    /// Default `DEVELOPMENT`.
    pub environment: Option<AppEnvironment>,
    /// Place the app in this region (Starling picks the cluster).
    pub region: Option<String>,
}

/// Changes to an app; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateAppInput {
    /// New display name.
    pub name: Option<String>,
    /// New environment.
    pub environment: Option<AppEnvironment>,
}

/// A new API key.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// What the key is for, e.g. `backend production`.
    pub name: String,
    /// Scopes (default `[SERVER_FULL]`).
    pub scopes: Option<Vec<KeyScope>>,
    /// When the key stops working; never when omitted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Apps, API keys and token secrets.
#[derive(Default)]
pub struct AppMutation;

#[Object]
impl AppMutation {
    /// Creates an app (admins and owners) and places it on a cluster.
    async fn create_app(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        input: CreateAppInput,
    ) -> Result<App> {
        let a = authorize(ctx, &tenant_id, Role::Admin).await?;
        let out = console(ctx)
            .cp
            .create_app(
                &a.tenant,
                AppIn {
                    name: input.name,
                    environment: input.environment.map(Into::into),
                    cluster_id: None,
                    region: input.region,
                    quota_overrides: Limits::default(),
                },
            )
            .await
            .map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "createApp",
            Some(out.id.as_str()),
            json!({"name": out.name}),
        )
        .await?;
        Ok(App(out))
    }

    /// Renames an app or changes its environment (admins and owners).
    async fn update_app(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: UpdateAppInput,
    ) -> Result<App> {
        let a = authorize(ctx, &tenant_id, Role::Admin).await?;
        let detail = json!({"name": input.name, "environment": input.environment.map(|e| format!("{e:?}").to_lowercase())});
        let out = console(ctx)
            .cp
            .update_app(
                &a.tenant,
                &self::app_id(&app_id)?,
                AppPatch {
                    name: input.name,
                    environment: input.environment.map(Into::into),
                    status: None,
                },
            )
            .await
            .map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "updateApp",
            Some(out.id.as_str()),
            detail,
        )
        .await?;
        Ok(App(out))
    }

    /// Suspends an app: the data plane refuses its traffic with `app_suspended` (admins and owners).
    async fn suspend_app(&self, ctx: &Context<'_>, tenant_id: ID, app_id: ID) -> Result<App> {
        set_app_status(ctx, &tenant_id, &app_id, CpStatus::Suspended, "suspendApp").await
    }

    /// Resumes a suspended app (admins and owners).
    async fn resume_app(&self, ctx: &Context<'_>, tenant_id: ID, app_id: ID) -> Result<App> {
        set_app_status(ctx, &tenant_id, &app_id, CpStatus::Active, "resumeApp").await
    }

    /// Creates an API key (developers and up); its secret is in the answer and nowhere else.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: CreateApiKeyInput,
    ) -> Result<ApiKeyCreated> {
        let a = authorize(ctx, &tenant_id, Role::Developer).await?;
        let k = console(ctx)
            .cp
            .create_api_key(
                &a.tenant,
                &self::app_id(&app_id)?,
                ApiKeyIn {
                    name: input.name,
                    scopes: input
                        .scopes
                        .map(|s| s.into_iter().map(Into::into).collect()),
                    expires_at: input.expires_at,
                },
            )
            .await
            .map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "createApiKey",
            Some(k.key.id.as_str()),
            json!({"app": app_id.as_str(), "name": k.key.name}),
        )
        .await?;
        Ok(ApiKeyCreated {
            api_key: k.key.into(),
            secret: k.secret,
        })
    }

    /// Replaces a key; the old one keeps working for `overlapSeconds` (default 86400, at most
    /// 2592000) (developers and up).
    async fn rotate_api_key(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        key_id: ID,
        overlap_seconds: Option<u32>,
    ) -> Result<ApiKeyCreated> {
        let a = authorize(ctx, &tenant_id, Role::Developer).await?;
        let k = console(ctx)
            .cp
            .rotate_api_key(
                &a.tenant,
                &self::app_id(&app_id)?,
                &self::key_id(&key_id)?,
                RotateIn {
                    overlap_seconds: overlap_seconds.map(u64::from),
                },
            )
            .await
            .map_err(|e| rename_field(e.into(), "overlap_seconds", "overlapSeconds"))?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "rotateApiKey",
            Some(key_id.as_str()),
            json!({"app": app_id.as_str(), "new_key": k.key.id.as_str()}),
        )
        .await?;
        Ok(ApiKeyCreated {
            api_key: k.key.into(),
            secret: k.secret,
        })
    }

    /// Revokes a key at once (developers and up).
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        key_id: ID,
    ) -> Result<ApiKey> {
        let a = authorize(ctx, &tenant_id, Role::Developer).await?;
        let k = console(ctx)
            .cp
            .revoke_api_key(&a.tenant, &self::app_id(&app_id)?, &self::key_id(&key_id)?)
            .await
            .map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "revokeApiKey",
            Some(key_id.as_str()),
            json!({"app": app_id.as_str()}),
        )
        .await?;
        Ok(k.into())
    }

    /// Makes a new token-signing secret; the current ones stay valid for `overlapSeconds`
    /// (admins and owners).
    async fn rotate_token_secret(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        overlap_seconds: Option<u32>,
    ) -> Result<TokenSecret> {
        let a = authorize(ctx, &tenant_id, Role::Admin).await?;
        let s = console(ctx)
            .cp
            .rotate_token_secret(
                &a.tenant,
                &self::app_id(&app_id)?,
                RotateTokenSecretIn {
                    overlap_seconds: overlap_seconds.map(u64::from),
                },
            )
            .await
            .map_err(|e| rename_field(e.into(), "overlap_seconds", "overlapSeconds"))?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "rotateTokenSecret",
            Some(app_id.as_str()),
            json!({"kid": s.kid.as_str()}),
        )
        .await?;
        Ok(TokenSecret {
            kid: ID(s.kid.to_string()),
            secret: s.secret,
            created_at: s.created_at,
            expires_at: s.expires_at,
        })
    }
}

pub(super) async fn set_app_status(
    ctx: &Context<'_>,
    tenant_id: &str,
    app: &str,
    status: CpStatus,
    action: &str,
) -> Result<App> {
    let a = authorize(ctx, tenant_id, Role::Admin).await?;
    let out = console(ctx)
        .cp
        .update_app(
            &a.tenant,
            &app_id(app)?,
            AppPatch {
                status: Some(status),
                ..Default::default()
            },
        )
        .await
        .map_err(Fail::from)?;
    audit::record(
        ctx,
        a.tenant.as_str(),
        action,
        Some(out.id.as_str()),
        json!({}),
    )
    .await?;
    Ok(App(out))
}

//! The GraphQL schema: queries under `viewer` and `tenant(id)`, and one mutation per change.
//! Every tenant-scoped resolver starts with [`authorize`]; every mutation that changes something
//! ends with an [`audit::record`].

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use starling_control_plane::entity::{Environment as CpEnvironment, Status as CpStatus};
use starling_control_plane::service::api_key::{
    ApiKeyIn, ApiKeyOut, KeyStatus as CpKeyStatus, RotateIn, Scope as CpScope,
};
use starling_control_plane::service::app::{AppIn, AppOut, AppPatch};
use starling_control_plane::service::plan::Limits;
use starling_control_plane::service::tenant::TenantOut;
use starling_control_plane::service::token_secret::RotateTokenSecretIn;
use starling_core::error::ErrorCode;
use starling_core::id::{ApiKeyId, AppId};

use crate::Console;
use crate::audit::{self, ACCOUNT_SCOPE};
use crate::auth::{Origin, SessionTokens};
use crate::entity::{account, audit as audit_entity, invitation, membership};
use crate::error::Fail;
use crate::moderation::{self, ChatMessage, EndUser, Messages, PageOf, UserConversation, seg};
use crate::page::{self, Conn};
use crate::role::{Role, account as signed_in, authorize, principal};
use crate::usage::{self, QuotaEvent, Usage};
use crate::webhook::{
    self, CreateWebhookEndpointInput, PreSendHook, PreSendHookInput, PreSendHookSet,
    UpdateWebhookEndpointInput, WebhookEndpoint, WebhookEndpointCreated, WebhookEventType,
    WebhookSecretRotated,
};

fn console<'a>(ctx: &'a Context<'_>) -> &'a Console {
    ctx.data_unchecked::<Console>()
}

fn app_id(id: &str) -> Result<AppId, Fail> {
    AppId::parse(id).map_err(|_| Fail::not_found("app", id))
}

fn key_id(id: &str) -> Result<ApiKeyId, Fail> {
    ApiKeyId::parse(id).map_err(|_| Fail::not_found("api key", id))
}

// ---------------------------------------------------------------------------------------------
// Enums

/// Whether a tenant or an app may be used.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In service.
    Active,
    /// Refused by the data plane with `app_suspended`; data kept.
    Suspended,
}

impl From<CpStatus> for Status {
    fn from(s: CpStatus) -> Self {
        match s {
            CpStatus::Active => Status::Active,
            CpStatus::Suspended => Status::Suspended,
        }
    }
}

/// What an app is for.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnvironment {
    /// Building and testing.
    Development,
    /// A pre-production copy.
    Staging,
    /// Real users.
    Production,
}

impl From<CpEnvironment> for AppEnvironment {
    fn from(e: CpEnvironment) -> Self {
        match e {
            CpEnvironment::Development => Self::Development,
            CpEnvironment::Staging => Self::Staging,
            CpEnvironment::Production => Self::Production,
        }
    }
}

impl From<AppEnvironment> for CpEnvironment {
    fn from(e: AppEnvironment) -> Self {
        match e {
            AppEnvironment::Development => Self::Development,
            AppEnvironment::Staging => Self::Staging,
            AppEnvironment::Production => Self::Production,
        }
    }
}

/// What an API key may do on the server API.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Everything the server API offers.
    ServerFull,
    /// Only reads.
    ReadOnly,
}

impl From<CpScope> for KeyScope {
    fn from(s: CpScope) -> Self {
        match s {
            CpScope::ServerFull => Self::ServerFull,
            CpScope::ReadOnly => Self::ReadOnly,
        }
    }
}

impl From<KeyScope> for CpScope {
    fn from(s: KeyScope) -> Self {
        match s {
            KeyScope::ServerFull => Self::ServerFull,
            KeyScope::ReadOnly => Self::ReadOnly,
        }
    }
}

/// Whether a key works now.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Past its expiry (or the end of its rotation overlap).
    Expired,
    /// Revoked.
    Revoked,
}

impl From<CpKeyStatus> for KeyStatus {
    fn from(s: CpKeyStatus) -> Self {
        match s {
            CpKeyStatus::Active => Self::Active,
            CpKeyStatus::Expired => Self::Expired,
            CpKeyStatus::Revoked => Self::Revoked,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

/// A person who signs in to the console.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Account {
    /// Id (`acc_…`).
    pub id: ID,
    /// Email, lowercased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

impl From<account::Model> for Account {
    fn from(m: account::Model) -> Self {
        Account {
            id: ID(m.id),
            email: m.email,
            name: m.name,
            created_at: m.created_at,
        }
    }
}

#[ComplexObject]
impl Account {
    /// The tenants this account belongs to, with its role in each.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn memberships(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Membership>> {
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let q =
            membership::Entity::find().filter(membership::Column::AccountId.eq(self.id.as_str()));
        let page = starling_core::db::paginate(
            &console(ctx).cp.db,
            q,
            membership::Column::TenantId,
            &p,
            |m| m,
            |m| m.tenant_id.as_str(),
        )
        .await
        .map_err(|e| page::after_arg(e.into()))?;
        let page = page.map(|m| Membership {
            tenant_id: m.tenant_id,
            role: Role::parse(&m.role).unwrap_or(Role::Viewer),
            joined_at: m.created_at,
        });
        Ok(page::conn(page, |m| m.tenant_id.clone(), had_after))
    }

    /// This account's own events: logins, logouts, password changes, accepted invitations.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<AuditEntry>> {
        audit_page(ctx, ACCOUNT_SCOPE, Some(self.id.as_str()), first, after).await
    }
}

/// An account's role in one tenant.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Membership {
    #[graphql(skip)]
    tenant_id: String,
    /// The role.
    pub role: Role,
    /// When the account joined.
    pub joined_at: DateTime<Utc>,
}

#[ComplexObject]
impl Membership {
    /// The tenant.
    async fn tenant(&self, ctx: &Context<'_>) -> Result<Tenant> {
        load_tenant(ctx, &self.tenant_id).await
    }
}

/// A member of a tenant.
#[derive(SimpleObject, Clone)]
pub struct Member {
    /// The member's account id.
    pub account_id: ID,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role in the tenant.
    pub role: Role,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// An invitation to join a tenant.
#[derive(SimpleObject, Clone)]
pub struct Invitation {
    /// Id (`inv_…`).
    pub id: ID,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: Role,
    /// Until when it can be accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was accepted.
    pub accepted_at: Option<DateTime<Utc>>,
}

impl From<invitation::Model> for Invitation {
    fn from(m: invitation::Model) -> Self {
        Invitation {
            id: ID(m.id),
            email: m.email,
            role: Role::parse(&m.role).unwrap_or(Role::Viewer),
            expires_at: m.expires_at,
            accepted_at: m.accepted_at,
        }
    }
}

/// Limits; an absent one is unlimited.
#[derive(SimpleObject, Clone, Default)]
pub struct QuotaLimits {
    /// Distinct users active in a calendar month.
    pub monthly_active_users: Option<u64>,
    /// Messages sent in a calendar month.
    pub messages_per_month: Option<u64>,
    /// WebSocket connections open at once.
    pub concurrent_connections: Option<u64>,
    /// Server API requests per second.
    pub api_requests_per_second: Option<u64>,
    /// Members of one group conversation.
    pub max_group_members: Option<u64>,
    /// Bytes of one message.
    pub max_message_bytes: Option<u64>,
}

impl From<Limits> for QuotaLimits {
    fn from(l: Limits) -> Self {
        QuotaLimits {
            monthly_active_users: l.monthly_active_users,
            messages_per_month: l.messages_per_month,
            concurrent_connections: l.concurrent_connections,
            api_requests_per_second: l.api_requests_per_second,
            max_group_members: l.max_group_members,
            max_message_bytes: l.max_message_bytes,
        }
    }
}

/// A plan: a named set of limits.
#[derive(SimpleObject, Clone)]
pub struct Plan {
    /// Id.
    pub id: ID,
    /// Machine name.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Its limits.
    pub limits: QuotaLimits,
}

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

/// A tenant: one customer of the platform.
#[derive(Clone)]
pub struct Tenant {
    out: TenantOut,
    my_role: Role,
}

async fn load_tenant(ctx: &Context<'_>, id: &str) -> Result<Tenant> {
    let access = authorize(ctx, id, Role::Viewer).await?;
    let out = console(ctx)
        .cp
        .get_tenant(&access.tenant)
        .await
        .map_err(Fail::from)?;
    Ok(Tenant {
        out,
        my_role: access.role,
    })
}

#[Object]
impl Tenant {
    /// Id (`tnt_…`).
    async fn id(&self) -> ID {
        ID(self.out.id.to_string())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.out.name
    }

    /// Status.
    async fn status(&self) -> Status {
        self.out.status.into()
    }

    /// The caller's role here (`OWNER` for the operator).
    async fn my_role(&self) -> Role {
        self.my_role
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.out.created_at
    }

    /// The tenant's plan. Plans change through the operator (or billing), not the console.
    async fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        authorize(ctx, self.out.id.as_str(), Role::Viewer).await?;
        let p = console(ctx)
            .cp
            .get_plan(self.out.plan_id.as_str())
            .await
            .map_err(Fail::from)?;
        Ok(Plan {
            id: ID(p.id.to_string()),
            code: p.code,
            name: p.name,
            limits: p.limits.into(),
        })
    }

    /// Members and their roles.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Member>> {
        let a = authorize(ctx, self.out.id.as_str(), Role::Viewer).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let db = &console(ctx).cp.db;
        let page = starling_core::db::paginate(
            db,
            membership::Entity::find().filter(membership::Column::TenantId.eq(a.tenant.as_str())),
            membership::Column::AccountId,
            &p,
            |m| m,
            |m| m.account_id.as_str(),
        )
        .await
        .map_err(|e| page::after_arg(e.into()))?;
        let ids: Vec<String> = page.data.iter().map(|m| m.account_id.clone()).collect();
        let accounts: std::collections::HashMap<String, account::Model> = account::Entity::find()
            .filter(account::Column::Id.is_in(ids))
            .all(db)
            .await
            .map_err(Fail::from)?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        let page = page.map(|m| {
            let a = accounts.get(&m.account_id);
            Member {
                account_id: ID(m.account_id.clone()),
                email: a.map(|a| a.email.clone()).unwrap_or_default(),
                name: a.map(|a| a.name.clone()).unwrap_or_default(),
                role: Role::parse(&m.role).unwrap_or(Role::Viewer),
                joined_at: m.created_at,
            }
        });
        Ok(page::conn(page, |m| m.account_id.to_string(), had_after))
    }

    /// Invitations not yet accepted or expired (admins and owners).
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn invitations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<Invitation>> {
        let a = authorize(ctx, self.out.id.as_str(), Role::Admin).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let q = invitation::Entity::find()
            .filter(invitation::Column::TenantId.eq(a.tenant.as_str()))
            .filter(invitation::Column::AcceptedAt.is_null())
            .filter(invitation::Column::ExpiresAt.gt(Utc::now()));
        let page = starling_core::db::paginate(
            &console(ctx).cp.db,
            q,
            invitation::Column::Id,
            &p,
            Invitation::from,
            |i| i.id.as_str(),
        )
        .await
        .map_err(|e| page::after_arg(e.into()))?;
        Ok(page::conn(page, |i| i.id.to_string(), had_after))
    }

    /// The tenant's apps, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn apps(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<App>> {
        let a = authorize(ctx, self.out.id.as_str(), Role::Viewer).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let page = console(ctx)
            .cp
            .list_apps(&a.tenant, &p)
            .await
            .map_err(|e| page::after_arg(e.into()))?
            .map(App);
        Ok(page::conn(page, |a| a.0.id.to_string(), had_after))
    }

    /// One app.
    async fn app(&self, ctx: &Context<'_>, id: ID) -> Result<App> {
        let a = authorize(ctx, self.out.id.as_str(), Role::Viewer).await?;
        let out = console(ctx)
            .cp
            .get_app(&a.tenant, &app_id(&id)?)
            .await
            .map_err(Fail::from)?;
        Ok(App(out))
    }

    /// Every console mutation on this tenant, newest last (admins and owners).
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<AuditEntry>> {
        let a = authorize(ctx, self.out.id.as_str(), Role::Admin).await?;
        audit_page(ctx, a.tenant.as_str(), None, first, after).await
    }
}

async fn audit_page(
    ctx: &Context<'_>,
    tenant: &str,
    actor: Option<&str>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Conn<AuditEntry>> {
    let had_after = after.is_some();
    let p = page::params(first, after)?;
    let mut q = audit_entity::Entity::find().filter(audit_entity::Column::TenantId.eq(tenant));
    if let Some(a) = actor {
        q = q.filter(audit_entity::Column::ActorId.eq(a));
    }
    let page = starling_core::db::paginate(
        &console(ctx).cp.db,
        q,
        audit_entity::Column::Id,
        &p,
        |m| AuditEntry {
            id: ID(m.id),
            actor_id: m.actor_id,
            actor_email: m.actor_email,
            action: m.action,
            target: m.target,
            detail: async_graphql::Json(m.detail),
            ip: m.ip,
            user_agent: m.user_agent,
            created_at: m.created_at,
        },
        |e| e.id.as_str(),
    )
    .await
    .map_err(|e| page::after_arg(e.into()))?;
    Ok(page::conn(page, |e| e.id.to_string(), had_after))
}

/// One console mutation: who, what, when, from where.
#[derive(SimpleObject, Clone)]
pub struct AuditEntry {
    /// Id (`aud_…`, time-ordered).
    pub id: ID,
    /// The account that acted (`operator` for the operator token).
    pub actor_id: String,
    /// Its email.
    pub actor_email: String,
    /// The mutation, e.g. `createApiKey`.
    pub action: String,
    /// The id of the resource acted on.
    pub target: Option<String>,
    /// The arguments that matter (never a secret).
    pub detail: async_graphql::Json<serde_json::Value>,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An app within a tenant.
#[derive(Clone)]
pub struct App(AppOut);

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
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
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
    #[graphql(complexity = "5 * child_complexity")]
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
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 10")]
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
    #[graphql(complexity = "10 + child_complexity")]
    async fn user(&self, ctx: &Context<'_>, id: String) -> Result<EndUser> {
        let cell = Cell::of(ctx, self.0.tenant_id.as_str(), self.0.id.as_str()).await?;
        Ok(cell
            .call(Method::GET, &format!("/users/{}", seg(&id)), None)
            .await?)
    }

    /// Moderation: the conversations a user is in (admins and owners).
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 10")]
    async fn user_conversations(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<moderation::ChatConversation>> {
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
    #[graphql(complexity = "last.unwrap_or(20).max(1) as usize * child_complexity + 10")]
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
    #[graphql(complexity = "5 + child_complexity")]
    async fn usage(&self, ctx: &Context<'_>, period: Option<String>) -> Result<Usage> {
        Ok(usage::usage(ctx, self.0.tenant_id.as_str(), &self.0.id, period).await?)
    }

    /// Quota thresholds passed (80 % and 100 % of a limit, once per month), oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn quota_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<QuotaEvent>> {
        Ok(usage::quota_events(ctx, self.0.tenant_id.as_str(), &self.0.id, first, after).await?)
    }

    /// The app's webhook endpoints, oldest first, never with their secrets.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity + 1")]
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<WebhookEndpoint>> {
        Ok(webhook::list(ctx, self.0.tenant_id.as_str(), &self.0.id, first, after).await?)
    }

    /// The app's pre-send hook (never with its secret); `null` when it has none.
    async fn pre_send_hook(&self, ctx: &Context<'_>) -> Result<Option<PreSendHook>> {
        Ok(webhook::pre_send_hook(ctx, self.0.tenant_id.as_str(), &self.0.id).await?)
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

/// A new session: tokens and the account.
#[derive(SimpleObject, Clone)]
pub struct Session {
    /// Send it as `Authorization: Bearer …`.
    pub access_token: String,
    /// When it expires; refresh before.
    pub access_token_expires_at: DateTime<Utc>,
    /// Trade it for new tokens with `refreshSession`. Shown once.
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_token_expires_at: DateTime<Utc>,
    /// Who is signed in.
    pub account: Account,
}

impl From<SessionTokens> for Session {
    fn from(t: SessionTokens) -> Self {
        Session {
            access_token: t.access_token,
            access_token_expires_at: t.access_token_expires_at,
            refresh_token: t.refresh_token,
            refresh_token_expires_at: t.refresh_token_expires_at,
            account: t.account.into(),
        }
    }
}

/// An invitation just made: the only time its token is shown. Send it to the invitee, who
/// accepts it with `acceptInvitation`.
#[derive(SimpleObject, Clone)]
pub struct InvitationCreated {
    /// The invitation.
    pub invitation: Invitation,
    /// The token to accept it with. Shown once.
    pub token: String,
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

// ---------------------------------------------------------------------------------------------
// The app's cell, for moderation.

struct Cell<'a> {
    console: &'a Console,
    base: String,
    cluster_id: String,
    app: String,
}

impl<'a> Cell<'a> {
    /// Authorizes (admin) and finds the cell the app lives on.
    async fn of(ctx: &'a Context<'_>, tenant: &str, app: &str) -> Result<Cell<'a>, Fail> {
        let a = authorize(ctx, tenant, Role::Admin).await?;
        let c = console(ctx);
        let out = c.cp.get_app(&a.tenant, &app_id(app)?).await?;
        let cluster = c.cp.get_cluster(out.cluster_id.as_str()).await?;
        let base = cluster.internal_endpoint.clone().ok_or_else(|| {
            Fail::new(
                ErrorCode::Unavailable,
                format!(
                    "cluster {} has no internal_endpoint: the operator must set one for moderation to reach it",
                    cluster.name
                ),
            )
        })?;
        Ok(Cell {
            console: c,
            base,
            cluster_id: cluster.id.into_string(),
            app: app.to_owned(),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Fail> {
        self.console
            .cells
            .call(&self.base, &self.cluster_id, &self.app, method, path, body)
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Query

/// Reads.
pub struct Query;

#[Object]
impl Query {
    /// The signed-in account.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Account> {
        let (id, _) = signed_in(ctx)?;
        let a = account::Entity::find_by_id(id.to_owned())
            .one(&console(ctx).cp.db)
            .await
            .map_err(Fail::from)?
            .ok_or_else(|| Fail::unauthorized("the session has ended; log in again"))?;
        Ok(a.into())
    }

    /// A tenant the caller is a member of (`NOT_FOUND` for any other).
    async fn tenant(&self, ctx: &Context<'_>, id: ID) -> Result<Tenant> {
        load_tenant(ctx, &id).await
    }

    /// The event types a webhook endpoint can subscribe to.
    #[graphql(complexity = "20 * child_complexity")]
    async fn webhook_event_types(&self) -> Vec<WebhookEventType> {
        webhook::event_types()
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation

/// Changes. Each one that changes something is recorded in the audit log.
pub struct Mutation;

async fn owners(
    ctx: &Context<'_>,
    tenant: &str,
    txn: &impl sea_orm::ConnectionTrait,
) -> Result<u64, Fail> {
    let _ = ctx;
    Ok(membership::Entity::find()
        .filter(membership::Column::TenantId.eq(tenant))
        .filter(membership::Column::Role.eq(Role::Owner.as_str()))
        .count(txn)
        .await?)
}

async fn member_row(
    db: &impl sea_orm::ConnectionTrait,
    tenant: &str,
    account_id: &str,
) -> Result<membership::Model, Fail> {
    membership::Entity::find_by_id((tenant.to_owned(), account_id.to_owned()))
        .one(db)
        .await?
        .ok_or_else(|| Fail::not_found("member", account_id))
}

async fn member_out(ctx: &Context<'_>, m: membership::Model) -> Result<Member, Fail> {
    let a = account::Entity::find_by_id(m.account_id.clone())
        .one(&console(ctx).cp.db)
        .await?
        .ok_or_else(|| Fail::not_found("member", &m.account_id))?;
    Ok(Member {
        account_id: ID(a.id),
        email: a.email,
        name: a.name,
        role: Role::parse(&m.role).unwrap_or(Role::Viewer),
        joined_at: m.created_at,
    })
}

#[Object]
impl Mutation {
    /// Signs in with email and password. After `console.login_max_failures` wrong passwords in a
    /// row the account is locked for `console.lockout_secs` (`ACCOUNT_LOCKED`).
    async fn login(&self, ctx: &Context<'_>, email: String, password: String) -> Result<Session> {
        let c = console(ctx);
        let t = c
            .login(&email, &password, ctx.data_unchecked::<Origin>())
            .await?;
        audit::record_as(
            ctx,
            ACCOUNT_SCOPE,
            &t.account.id,
            &t.account.email,
            "login",
            None,
            json!({}),
        )
        .await?;
        Ok(t.into())
    }

    /// New tokens for a refresh token; the old refresh token stops working.
    async fn refresh_session(&self, ctx: &Context<'_>, refresh_token: String) -> Result<Session> {
        Ok(console(ctx).refresh(&refresh_token).await?.into())
    }

    /// Ends the current session: its access and refresh tokens stop working at once.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let (_, sid) = signed_in(ctx)?;
        console(ctx).revoke_session(sid).await?;
        audit::record(ctx, ACCOUNT_SCOPE, "logout", Some(sid), json!({})).await?;
        Ok(true)
    }

    /// Changes the password; every other session of the account ends.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let (id, sid) = signed_in(ctx)?;
        console(ctx)
            .change_password(id, sid, &current_password, &new_password)
            .await?;
        audit::record(ctx, ACCOUNT_SCOPE, "changePassword", Some(id), json!({})).await?;
        Ok(true)
    }

    /// Accepts an invitation. A new account needs `name` and a `password` of 10..=256
    /// characters; an existing one signs in with its password. Starts a session.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        token: String,
        name: Option<String>,
        password: String,
    ) -> Result<Session> {
        let (t, inv) = console(ctx)
            .accept_invitation(
                &token,
                name.as_deref(),
                &password,
                ctx.data_unchecked::<Origin>(),
            )
            .await?;
        let detail = json!({"role": inv.role, "invitation": inv.id});
        audit::record_as(
            ctx,
            &inv.tenant_id,
            &t.account.id,
            &t.account.email,
            "acceptInvitation",
            Some(&t.account.id),
            detail,
        )
        .await?;
        Ok(t.into())
    }

    /// Invites someone by email (admins may invite admins, developers and viewers; only owners
    /// invite owners). Returns the token to send them, once.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        email: String,
        role: Role,
    ) -> Result<InvitationCreated> {
        let need = if role == Role::Owner {
            Role::Owner
        } else {
            Role::Admin
        };
        let a = authorize(ctx, &tenant_id, need).await?;
        let (inv, token) = console(ctx)
            .invite(a.tenant.as_str(), &email, role, principal(ctx).actor_id())
            .await?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "inviteMember",
            Some(&inv.id),
            json!({"email": inv.email, "role": role.as_str()}),
        )
        .await?;
        Ok(InvitationCreated {
            invitation: inv.into(),
            token,
        })
    }

    /// Changes a member's role (owners). The last owner cannot stop being one.
    async fn change_member_role(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        account_id: ID,
        role: Role,
    ) -> Result<Member> {
        let a = authorize(ctx, &tenant_id, Role::Owner).await?;
        let db = &console(ctx).cp.db;
        let txn = starling_core::db::begin_write(db)
            .await
            .map_err(Fail::from)?;
        let m = member_row(&txn, a.tenant.as_str(), &account_id).await?;
        let old = m.role.clone();
        if old == Role::Owner.as_str()
            && role != Role::Owner
            && owners(ctx, a.tenant.as_str(), &txn).await? <= 1
        {
            return Err(Fail::new(
                ErrorCode::Conflict,
                "the last owner of a tenant cannot be demoted; make someone else an owner first",
            )
            .into());
        }
        membership::Entity::update_many()
            .col_expr(
                membership::Column::Role,
                sea_orm::sea_query::Expr::value(role.as_str()),
            )
            .filter(membership::Column::TenantId.eq(a.tenant.as_str()))
            .filter(membership::Column::AccountId.eq(account_id.as_str()))
            .exec(&txn)
            .await
            .map_err(Fail::from)?;
        txn.commit().await.map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "changeMemberRole",
            Some(&account_id),
            json!({"from": old, "to": role.as_str()}),
        )
        .await?;
        let m = member_row(db, a.tenant.as_str(), &account_id).await?;
        Ok(member_out(ctx, m).await?)
    }

    /// Removes a member (owners). The last owner cannot be removed.
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        account_id: ID,
    ) -> Result<bool> {
        let a = authorize(ctx, &tenant_id, Role::Owner).await?;
        let db = &console(ctx).cp.db;
        let txn = starling_core::db::begin_write(db)
            .await
            .map_err(Fail::from)?;
        let m = member_row(&txn, a.tenant.as_str(), &account_id).await?;
        if m.role == Role::Owner.as_str() && owners(ctx, a.tenant.as_str(), &txn).await? <= 1 {
            return Err(Fail::new(
                ErrorCode::Conflict,
                "the last owner of a tenant cannot be removed; make someone else an owner first",
            )
            .into());
        }
        membership::Entity::delete_many()
            .filter(membership::Column::TenantId.eq(a.tenant.as_str()))
            .filter(membership::Column::AccountId.eq(account_id.as_str()))
            .exec(&txn)
            .await
            .map_err(Fail::from)?;
        txn.commit().await.map_err(Fail::from)?;
        audit::record(
            ctx,
            a.tenant.as_str(),
            "removeMember",
            Some(&account_id),
            json!({"role": m.role}),
        )
        .await?;
        Ok(true)
    }

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

    /// Adds a webhook endpoint to an app (developers and up); its signing secret is in the
    /// answer and nowhere else. At most 20 endpoints per app.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: CreateWebhookEndpointInput,
    ) -> Result<WebhookEndpointCreated> {
        Ok(webhook::create(ctx, &tenant_id, &app_id, input).await?)
    }

    /// Changes a webhook endpoint (developers and up).
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
        input: UpdateWebhookEndpointInput,
    ) -> Result<WebhookEndpoint> {
        Ok(webhook::update(ctx, &tenant_id, &app_id, &endpoint_id, input).await?)
    }

    /// Removes a webhook endpoint; deliveries still due to it are dropped (developers and up).
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
    ) -> Result<bool> {
        Ok(webhook::delete(ctx, &tenant_id, &app_id, &endpoint_id).await?)
    }

    /// Gives an endpoint a new signing secret, shown once; the current one keeps signing beside
    /// it for `overlapSeconds` (default 86400, at most 2592000) (developers and up).
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        endpoint_id: ID,
        overlap_seconds: Option<u32>,
    ) -> Result<WebhookSecretRotated> {
        Ok(webhook::rotate_secret(ctx, &tenant_id, &app_id, &endpoint_id, overlap_seconds).await?)
    }

    /// Sets or changes the app's pre-send hook (developers and up). Its signing secret is in the
    /// answer when this call creates the hook, and only then.
    async fn set_pre_send_hook(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        input: PreSendHookInput,
    ) -> Result<PreSendHookSet> {
        Ok(webhook::set_pre_send_hook(ctx, &tenant_id, &app_id, input).await?)
    }

    /// Removes the app's pre-send hook: messages are stored without asking anyone (developers
    /// and up).
    async fn delete_pre_send_hook(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
    ) -> Result<bool> {
        Ok(webhook::delete_pre_send_hook(ctx, &tenant_id, &app_id).await?)
    }

    /// Bans an end user from the whole app, until a time or for good (admins and owners). The
    /// data plane closes their open connections on every node (close code 4003) and refuses
    /// their connections and requests (`banned`).
    async fn ban_user(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        user_id: String,
        until: Option<DateTime<Utc>>,
        reason: Option<String>,
    ) -> Result<EndUser> {
        let cell = Cell::of(ctx, &tenant_id, &app_id).await?;
        let u: EndUser = cell
            .call(
                Method::POST,
                &format!("/users/{}/ban", seg(&user_id)),
                Some(json!({"until": until, "reason": reason})),
            )
            .await?;
        audit::record(
            ctx,
            &tenant_id,
            "banUser",
            Some(&user_id),
            json!({"app": app_id.as_str(), "until": until, "reason": reason}),
        )
        .await?;
        Ok(u)
    }

    /// Lifts an app-wide ban (admins and owners).
    async fn unban_user(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        user_id: String,
    ) -> Result<EndUser> {
        let cell = Cell::of(ctx, &tenant_id, &app_id).await?;
        let u: EndUser = cell
            .call(
                Method::DELETE,
                &format!("/users/{}/ban", seg(&user_id)),
                None,
            )
            .await?;
        audit::record(
            ctx,
            &tenant_id,
            "unbanUser",
            Some(&user_id),
            json!({"app": app_id.as_str()}),
        )
        .await?;
        Ok(u)
    }

    /// Deletes a message for everyone: its content is erased, its seq kept (admins and owners).
    async fn delete_message(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        app_id: ID,
        conversation_id: String,
        message_id: String,
    ) -> Result<ChatMessage> {
        let cell = Cell::of(ctx, &tenant_id, &app_id).await?;
        let m: ChatMessage = cell
            .call(
                Method::DELETE,
                &format!(
                    "/conversations/{}/messages/{}",
                    seg(&conversation_id),
                    seg(&message_id)
                ),
                None,
            )
            .await?;
        audit::record(
            ctx,
            &tenant_id,
            "deleteMessage",
            Some(&message_id),
            json!({"app": app_id.as_str(), "conversation": conversation_id}),
        )
        .await?;
        Ok(m)
    }
}

fn rename_field(mut f: Fail, from: &str, to: &str) -> Fail {
    if f.field.as_deref() == Some(from) {
        f.field = Some(to.to_owned());
        f.message = f.message.replacen(from, to, 1);
    }
    f
}

async fn set_app_status(
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

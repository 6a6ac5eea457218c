//! Tenants: their plan, members, invitations, apps and audit log, and member mutations.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use starling_control_plane::service::plan::Limits;
use starling_control_plane::service::tenant::TenantOut;
use starling_core::error::ErrorCode;

use super::*;
use crate::audit::{self};
use crate::entity::{account, audit as audit_entity, invitation, membership};
use crate::error::Fail;
use crate::page::{self, Conn};
use crate::role::{Role, authorize, principal};

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

/// A tenant: one customer of the platform.
#[derive(Clone)]
pub struct Tenant {
    out: TenantOut,
    my_role: Role,
}

pub(super) async fn load_tenant(ctx: &Context<'_>, id: &str) -> Result<Tenant> {
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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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

pub(super) async fn audit_page(
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

/// An invitation just made: the only time its token is shown. Send it to the invitee, who
/// accepts it with `acceptInvitation`.
#[derive(SimpleObject, Clone)]
pub struct InvitationCreated {
    /// The invitation.
    pub invitation: Invitation,
    /// The token to accept it with. Shown once.
    pub token: String,
}

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

/// Members: invitations, roles, removal.
#[derive(Default)]
pub struct MemberMutation;

#[Object]
impl MemberMutation {
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
}

//! Accounts and sessions: the signed-in person, their memberships, login and logout.

use async_graphql::{ComplexObject, Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::*;
use crate::audit::{self, ACCOUNT_SCOPE};
use crate::auth::{Origin, SessionTokens};
use crate::entity::{account, membership};
use crate::page::{self, Conn};
use crate::role::{Role, account as signed_in};

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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
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

/// Sign-in, sessions, passwords and invitations accepted.
#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
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
}

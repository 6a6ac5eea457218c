//! Roles and the one place every resolver asks "may the caller do this on this tenant?".
//!
//! | role | may |
//! | --- | --- |
//! | viewer | read the tenant, its members, apps, API keys and webhook endpoints (never secrets), quotas, plan, usage and quota events |
//! | developer | + create, rotate and revoke API keys; create, change, delete webhook endpoints and rotate their secrets; set and remove the pre-send hook; read token secrets |
//! | admin | + create, rename, suspend and resume apps; rotate token secrets; moderation (find users, read conversations, ban/unban, delete messages); invite admins, developers and viewers; read the audit log |
//! | owner | + invite owners, change roles, remove members |
//!
//! The operator (operator token) acts as an owner of every tenant. A tenant the caller is no
//! member of answers `not_found`, exactly like one that does not exist.

use async_graphql::{Context, Enum};
use sea_orm::EntityTrait;
use starling_core::id::TenantId;

use crate::Console;
use crate::auth::Principal;
use crate::entity::membership;
use crate::error::{Fail, Result};

/// A member's role in a tenant, from least to most powerful.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Reads everything but secrets.
    Viewer,
    /// + API keys, webhook endpoints, the pre-send hook, token secrets.
    Developer,
    /// + apps, token-secret rotation, moderation, invitations, audit log.
    Admin,
    /// + roles and members.
    Owner,
}

impl Role {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// From storage.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "developer" => Role::Developer,
            "admin" => Role::Admin,
            "owner" => Role::Owner,
            _ => return None,
        })
    }
}

/// What [`authorize`] established: the caller may act on this tenant with this role.
#[derive(Debug, Clone)]
pub struct Access {
    /// The tenant.
    pub tenant: TenantId,
    /// The caller's role there (owner for the operator).
    pub role: Role,
}

/// The request's principal.
pub fn principal<'a>(ctx: &'a Context<'_>) -> &'a Principal {
    ctx.data_unchecked::<Principal>()
}

/// The signed-in account, or `unauthorized`.
pub fn account<'a>(ctx: &'a Context<'_>) -> Result<(&'a str, &'a str)> {
    match principal(ctx) {
        Principal::Account { id, session_id, .. } => Ok((id, session_id)),
        Principal::Operator => Err(Fail::forbidden(
            "the operator token has no console account; log in as a person",
        )),
        Principal::Anonymous => Err(Fail::unauthorized(
            "log in first: send `Authorization: Bearer <access token>`",
        )),
    }
}

/// Checks that the caller has at least `need` on `tenant`. Every tenant-scoped resolver starts
/// here; nothing else decides access.
pub async fn authorize(ctx: &Context<'_>, tenant: &str, need: Role) -> Result<Access> {
    let console = ctx.data_unchecked::<Console>();
    let not_found = || Fail::not_found("tenant", tenant);
    let tenant_id = TenantId::parse(tenant).map_err(|_| not_found())?;
    let role = match principal(ctx) {
        Principal::Anonymous => {
            return Err(Fail::unauthorized(
                "log in first: send `Authorization: Bearer <access token>`",
            ));
        }
        Principal::Operator => {
            console
                .cp
                .get_tenant(&tenant_id)
                .await
                .map_err(|_| not_found())?;
            Role::Owner
        }
        Principal::Account { id, .. } => {
            let m = membership::Entity::find_by_id((tenant.to_owned(), id.clone()))
                .one(&console.cp.db)
                .await?
                .ok_or_else(not_found)?;
            Role::parse(&m.role).ok_or_else(|| Fail::internal(format!("bad role {}", m.role)))?
        }
    };
    if role < need {
        return Err(Fail::forbidden(format!(
            "your role in tenant {tenant} is {}; this needs {} or higher",
            role.as_str(),
            need.as_str()
        )));
    }
    Ok(Access {
        tenant: tenant_id,
        role,
    })
}

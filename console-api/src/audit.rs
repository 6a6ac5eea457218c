//! The audit log: one row per console mutation that changed something — who, what, when, from
//! where. Rows of a tenant are readable by its admins and owners; an account's own events (login,
//! logout, password change) are kept under the pseudo-tenant [`ACCOUNT_SCOPE`] and readable by
//! that account.

use async_graphql::Context;
use sea_orm::ActiveModelTrait;
use sea_orm::Set;

use crate::Console;
use crate::auth::{Origin, new_id, now};
use crate::entity::audit;
use crate::error::Result;
use crate::role::principal;

/// The `tenant_id` of an account's own events.
pub const ACCOUNT_SCOPE: &str = "account";

/// Records one mutation. A failure to record fails the request (the change is already made, but
/// the caller learns that the audit trail is incomplete instead of silently losing it).
pub async fn record(
    ctx: &Context<'_>,
    tenant: &str,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
) -> Result<()> {
    let p = principal(ctx);
    record_as(
        ctx,
        tenant,
        p.actor_id(),
        p.actor_email(),
        action,
        target,
        detail,
    )
    .await
}

/// Records one mutation by a named actor (for logins, where the request has no principal yet).
pub async fn record_as(
    ctx: &Context<'_>,
    tenant: &str,
    actor_id: &str,
    actor_email: &str,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
) -> Result<()> {
    let console = ctx.data_unchecked::<Console>();
    let origin = ctx.data_unchecked::<Origin>();
    audit::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        id: Set(new_id("aud")),
        actor_id: Set(actor_id.to_owned()),
        actor_email: Set(actor_email.to_owned()),
        action: Set(action.to_owned()),
        target: Set(target.map(str::to_owned)),
        detail: Set(detail),
        ip: Set(origin.ip.clone()),
        user_agent: Set(origin.user_agent.clone()),
        created_at: Set(now()),
    }
    .insert(&console.cp.db)
    .await?;
    Ok(())
}

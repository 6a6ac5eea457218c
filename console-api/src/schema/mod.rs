//! The GraphQL schema: queries under `viewer` and `tenant(id)`, and one mutation per change.
//! Every tenant-scoped resolver starts with [`authorize`]; every mutation that changes something
//! ends with an [`audit::record`].

mod account;
mod app;
mod enums;
mod moderation;
mod tenant;
mod webhook;

use async_graphql::{Context, ID, MergedObject, Object, Result};
use sea_orm::EntityTrait;
use starling_core::id::{ApiKeyId, AppId};

pub use self::account::{Account, AccountMutation, Membership, Session};
pub use self::app::{
    ApiKey, ApiKeyCreated, App, AppMutation, Cluster, CreateApiKeyInput, CreateAppInput, Quotas,
    TokenSecret, UpdateAppInput,
};
pub use self::enums::{AppEnvironment, KeyScope, KeyStatus, Status};
use self::moderation::Cell;
pub use self::moderation::ModerationMutation;
pub use self::tenant::{
    AuditEntry, Invitation, InvitationCreated, Member, MemberMutation, Plan, QuotaLimits, Tenant,
};
use self::tenant::{audit_page, load_tenant};
pub use self::webhook::WebhookMutation;
use crate::Console;
use crate::error::Fail;
use crate::role::account as signed_in;
use crate::webhook::WebhookEventType;

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
// Query

/// Reads.
pub struct Query;

#[Object]
impl Query {
    /// The signed-in account.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Account> {
        let (id, _) = signed_in(ctx)?;
        let a = crate::entity::account::Entity::find_by_id(id.to_owned())
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
    #[graphql(complexity = "crate::limits::times(20, child_complexity)")]
    async fn webhook_event_types(&self) -> Vec<WebhookEventType> {
        crate::webhook::event_types()
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation

// Changes. Each one that changes something is recorded in the audit log. A plain comment, not
// a doc comment: on a merged object it would become the type's description in the SDL, which
// the single `#[Object] impl Mutation` this replaced never had.
#[derive(MergedObject, Default)]
pub struct Mutation(
    pub AccountMutation,
    pub MemberMutation,
    pub AppMutation,
    pub WebhookMutation,
    pub ModerationMutation,
);

fn rename_field(mut f: Fail, from: &str, to: &str) -> Fail {
    if f.field.as_deref() == Some(from) {
        f.field = Some(to.to_owned());
        f.message = f.message.replacen(from, to, 1);
    }
    f
}

//! Moderation: the app's cell, reached through its internal API ([`crate::moderation`]).

use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use starling_core::error::ErrorCode;

use super::*;
use crate::audit::{self};
use crate::error::Fail;
use crate::moderation::{ChatMessage, EndUser, seg};
use crate::role::{Role, authorize};

pub(super) struct Cell<'a> {
    console: &'a Console,
    base: String,
    cluster_id: String,
    app: String,
}

impl<'a> Cell<'a> {
    /// Authorizes (admin) and finds the cell the app lives on.
    pub(super) async fn of(
        ctx: &'a Context<'_>,
        tenant: &str,
        app: &str,
    ) -> Result<Cell<'a>, Fail> {
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

    pub(super) async fn call<T: serde::de::DeserializeOwned>(
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

/// Moderation: bans and message deletion, served by the app's cell.
#[derive(Default)]
pub struct ModerationMutation;

#[Object]
impl ModerationMutation {
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

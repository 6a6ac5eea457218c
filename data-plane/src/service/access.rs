//! Access that ends, ends everywhere: a ban, a deactivation, a deletion or a revoked token
//! closes the user's sessions on every node of the cell, through the same inboxes that carry
//! their messages (the registry says which nodes hold them). Revocations of user tokens are
//! rows in the cell's database, so a handshake on any node sees them as soon as they commit.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use std::sync::Arc;

use super::{Messaging, Result, now};
use crate::bus::Delivery;
use crate::directory::{SessionEnd, TokenFacts};
use crate::entity::token_revocation;
use crate::hub::Ending;
use crate::store::scoped;

impl Messaging {
    /// Closes the user's sessions that `ending` names, on every node that holds one. Tells
    /// whether every node's notice was published (a node the registry does not know of holds
    /// no session of the user).
    pub async fn end_sessions(&self, app: &str, user: &str, ending: Ending) -> bool {
        let users = [user.to_owned()];
        let nodes = match self.registry.locate(app, &users).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, app, "registry lookup failed; sessions not ended");
                return false;
            }
        };
        let mut all = true;
        for (node, users) in nodes {
            let d = Delivery {
                app_id: app.to_owned(),
                users,
                frame: Arc::from(""),
                trace: starling_core::telemetry::inject(),
                order: None,
                end: Some(ending.clone()),
            };
            if let Err(e) = self.bus.publish(&node, d).await {
                tracing::error!(error = %e, node, "publishing a session ending failed");
                all = false;
            }
        }
        metrics::counter!("starling_sessions_ended_total", "reason" => reason_label(ending.why))
            .increment(1);
        all
    }

    /// Revokes every token of the user issued until now (this second included), and closes
    /// the sessions opened with them. Returns the user's new "not before".
    pub async fn revoke_user_tokens(&self, app: &str, user: &str) -> Result<DateTime<Utc>> {
        self.user_model(app, user).await?;
        let at = self.set_not_before(app, user).await?;
        self.end_sessions(
            app,
            user,
            Ending {
                why: SessionEnd::TokenRevoked,
                issued_until: Some(at.timestamp()),
                token_id: None,
            },
        )
        .await;
        Ok(at)
    }

    /// Makes every token of the user issued until now void (no session is closed here).
    pub(crate) async fn set_not_before(&self, app: &str, user: &str) -> Result<DateTime<Utc>> {
        let at = now();
        token_revocation::Entity::insert(token_revocation::ActiveModel {
            app_id: Set(app.to_owned()),
            user_id: Set(user.to_owned()),
            token_id: Set(String::new()),
            not_before: Set(Some(at)),
            created_at: Set(at),
            expires_at: Set(None),
        })
        .on_conflict(
            OnConflict::columns([
                token_revocation::Column::AppId,
                token_revocation::Column::UserId,
                token_revocation::Column::TokenId,
            ])
            .update_column(token_revocation::Column::NotBefore)
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(at)
    }

    /// Revokes one token of the user by its id (`jti`) and closes the sessions opened with
    /// it. The revocation is kept for `keep_secs` (the longest a token lives).
    pub async fn revoke_user_token(
        &self,
        app: &str,
        user: &str,
        token_id: &str,
        keep_secs: u64,
    ) -> Result<()> {
        if token_id.is_empty() || token_id.len() > 128 {
            return Err(super::invalid("token_id", "must be 1..=128 bytes"));
        }
        self.user_model(app, user).await?;
        let at = now();
        // Revocations whose tokens have all expired are of no more use.
        token_revocation::Entity::delete_many()
            .filter(token_revocation::Column::AppId.eq(app))
            .filter(token_revocation::Column::ExpiresAt.lt(at))
            .exec(&self.db)
            .await?;
        token_revocation::Entity::insert(token_revocation::ActiveModel {
            app_id: Set(app.to_owned()),
            user_id: Set(user.to_owned()),
            token_id: Set(token_id.to_owned()),
            not_before: Set(None),
            created_at: Set(at),
            expires_at: Set(Some(at + chrono::Duration::seconds(keep_secs as i64))),
        })
        .on_conflict(
            OnConflict::columns([
                token_revocation::Column::AppId,
                token_revocation::Column::UserId,
                token_revocation::Column::TokenId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        self.end_sessions(
            app,
            user,
            Ending {
                why: SessionEnd::TokenRevoked,
                issued_until: None,
                token_id: Some(token_id.to_owned()),
            },
        )
        .await;
        Ok(())
    }

    /// Whether the token was revoked: issued at or before the user's "not before", or its id
    /// revoked. One lookup by primary-key prefix.
    pub async fn token_revoked(&self, app: &str, user: &str, t: &TokenFacts) -> Result<bool> {
        let mut ids = vec![String::new()];
        if let Some(j) = &t.jti {
            ids.push(j.clone());
        }
        let rows = scoped::<token_revocation::Entity>(app)
            .filter(token_revocation::Column::UserId.eq(user))
            .filter(token_revocation::Column::TokenId.is_in(ids))
            .all(&self.db)
            .await?;
        Ok(rows.iter().any(|r| {
            if r.token_id.is_empty() {
                r.not_before.is_some_and(|nb| t.iat <= nb.timestamp())
            } else {
                true
            }
        }))
    }
}

fn reason_label(why: SessionEnd) -> &'static str {
    match why {
        SessionEnd::Banned => "banned",
        SessionEnd::Deactivated => "deactivated",
        SessionEnd::Deleted => "deleted",
        SessionEnd::AppSuspended => "app_suspended",
        SessionEnd::AppGone => "app_gone",
        SessionEnd::TokenRevoked => "token_revoked",
        SessionEnd::SigningKeyRetired => "signing_key_retired",
    }
}

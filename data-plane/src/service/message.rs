//! Messages: send (idempotent by `client_msg_id`, gap-free `seq`), edit, delete for everyone,
//! reactions, threads, history and sync, read state, typing.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::sea_query::{Condition, Expr, ExprTrait as _, JoinType};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set};
use serde::{Deserialize, Serialize};
use serde_json::json;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::limits::Limits;
use utoipa::ToSchema;

use super::commit::{Committed, NewMessage};
use super::user::check_url;
use super::{Messaging, Result, check_user_id, invalid, now};
use crate::entity::{conversation, member, message, outbox, reaction, user};
use crate::protocol::{Attachment, Event, MessageContent, MessageEdit, MessageOut};
use crate::store::scoped;
use crate::webhook::catalog::{MessageData, ReactionData, ReadReceiptData};

/// Claims up to $3 outbox rows of the apps in $4 (a JSON array of ids) created before $1, by
/// moving their `created_at` to $2; rows another transaction holds are skipped, so two nodes
/// never claim the same row.
const PG_CLAIM_OUTBOX: &str = r#"UPDATE outbox SET created_at = $2
WHERE (app_id, message_id) IN (
    SELECT app_id, message_id FROM outbox
    WHERE created_at < $1 AND app_id IN (SELECT jsonb_array_elements_text($4::jsonb))
    ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
RETURNING app_id, message_id, conversation_id, seq, created_at"#;

/// [`PG_CLAIM_OUTBOX`] for SQLite, whose one writer makes the statement atomic.
const SQLITE_CLAIM_OUTBOX: &str = r#"UPDATE outbox SET created_at = ?2
WHERE (app_id, message_id) IN (
    SELECT app_id, message_id FROM outbox
    WHERE created_at < ?1 AND app_id IN (SELECT value FROM json_each(?4))
    ORDER BY created_at LIMIT ?3
)
RETURNING app_id, message_id, conversation_id, seq, created_at"#;

/// The hard ceiling on a message, whatever the plan says: 256 KiB.
pub const MAX_MESSAGE_BYTES: u64 = 256 * 1024;

/// Bytes a message stores, for metering: its text, custom payload and attachments.
fn content_bytes(c: &MessageContent) -> u64 {
    let json_len = |v: &serde_json::Value| serde_json::to_string(v).map_or(0, |s| s.len());
    (c.text.as_ref().map_or(0, String::len)
        + c.custom.as_ref().map_or(0, json_len)
        + serde_json::to_string(&c.attachments).map_or(0, |s| s.len())) as u64
}

impl Messaging {
    /// The app's monthly quotas (from the cached app config): one message, and the sender as an
    /// active user.
    async fn admit_send(&self, app: &str, actor: &Actor<'_>) -> Result<()> {
        let Some(cfg) = self
            .directory
            .app(&starling_core::id::AppId::from_trusted(app.to_owned()))
        else {
            return Ok(());
        };
        // Each crossing is told as soon as it is counted: a refusal of the message after the
        // user was counted must not swallow the user's threshold.
        if let Actor::User(u) = actor
            && let Some(c) = self.metering.admit_user(&cfg, u).await?
        {
            self.threshold_reached(app, &c).await;
        }
        if let Some(c) = self.metering.admit_message(&cfg).await? {
            self.threshold_reached(app, &c).await;
        }
        Ok(())
    }

    /// Gives back the message [`Messaging::admit_send`] took from the app's quota.
    async fn give_back_send(&self, app: &str) {
        if let Some(cfg) = self
            .directory
            .app(&starling_core::id::AppId::from_trusted(app.to_owned()))
        {
            self.metering.give_back_message(&cfg).await;
        }
    }

    /// Tells the app's webhooks that a quota counter reached a threshold.
    pub(crate) async fn threshold_reached(&self, app: &str, c: &crate::metering::Crossing) {
        tracing::info!(
            app_id = app,
            metric = c.metric,
            threshold = c.threshold,
            limit = c.limit,
            "usage threshold reached"
        );
        self.emit_after(
            app,
            "usage.threshold_reached",
            &crate::webhook::catalog::UsageThresholdData {
                metric: c.metric.to_owned(),
                threshold: c.threshold as i64,
                value: c.threshold as i64,
                period_start: c.period_start,
            },
        )
        .await;
    }
}

/// Which messages of a conversation to read.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a seq greater than this.
    pub after_seq: Option<i64>,
    /// Only messages with a seq less than this.
    pub before_seq: Option<i64>,
    /// At most this many, 1..=200 (default 50).
    pub limit: Option<u32>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
}

/// A page of messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagesOut {
    /// The messages, in the order asked for.
    pub messages: Vec<MessageOut>,
    /// Whether more messages lie beyond this page in the same direction.
    pub has_more: bool,
}

/// What [`Messaging::send_checks`] reads in one query.
#[derive(Debug, sea_orm::FromQueryResult)]
struct SendCheck {
    post_policy: String,
    m_role: Option<String>,
    m_muted_until: Option<chrono::DateTime<Utc>>,
    m_banned: Option<bool>,
    u_status: Option<String>,
    u_banned: Option<bool>,
    u_banned_until: Option<chrono::DateTime<Utc>>,
    dup_id: Option<String>,
}

/// Who performs an action: a user (through the socket or the server API "as" them), or the
/// customer's backend itself.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user, with their rights in the conversation.
    User(&'a str),
    /// The customer's backend: may act on any message; sends system messages.
    Server,
}

pub(super) fn message_out(m: message::Model, reactions: BTreeMap<String, i64>) -> MessageOut {
    MessageOut {
        id: m.id,
        conversation_id: m.conversation_id,
        seq: m.seq,
        sender_id: (!m.sender_id.is_empty()).then_some(m.sender_id),
        client_msg_id: m.client_msg_id,
        kind: m.kind,
        text: m.text,
        custom: m.custom,
        attachments: serde_json::from_value(m.attachments).unwrap_or_default(),
        mentions: serde_json::from_value(m.mentions).unwrap_or_default(),
        parent_id: m.parent_id,
        reply_count: m.reply_count,
        reactions,
        created_at: m.created_at,
        edited_at: m.edited_at,
        deleted: m.deleted_at.is_some(),
    }
}

fn max_bytes(limits: &Limits) -> u64 {
    std::cmp::min(
        limits.max_message_bytes.unwrap_or(MAX_MESSAGE_BYTES),
        MAX_MESSAGE_BYTES,
    )
}

fn check_size(
    limits: &Limits,
    text: &Option<String>,
    custom: &Option<serde_json::Value>,
    attachments: &[Attachment],
) -> Result<()> {
    let n = text.as_ref().map_or(0, String::len)
        + custom.as_ref().map_or(0, |c| {
            serde_json::to_vec(c).map_or(usize::MAX / 2, |v| v.len())
        })
        + serde_json::to_vec(attachments).map_or(0, |v| v.len());
    let max = max_bytes(limits);
    if n as u64 > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("message is {n} bytes; this app allows {max} (max_message_bytes)"),
        ));
    }
    Ok(())
}

fn check_content(limits: &Limits, c: &MessageContent) -> Result<()> {
    if let Some(id) = &c.client_msg_id
        && (id.is_empty() || id.len() > 64)
    {
        return Err(invalid("client_msg_id", "must be 1..=64 bytes"));
    }
    let empty_text = c.text.as_deref().is_none_or(str::is_empty);
    if empty_text && c.custom.is_none() && c.attachments.is_empty() {
        return Err(invalid(
            "text",
            "a message needs text, custom or attachments",
        ));
    }
    if c.attachments.len() > 10 {
        return Err(invalid("attachments", "at most 10 attachments"));
    }
    for (i, a) in c.attachments.iter().enumerate() {
        check_url(&format!("attachments[{i}].url"), &a.url)?;
        if a.mime_type.is_empty() || a.mime_type.len() > 128 || !a.mime_type.contains('/') {
            return Err(invalid(
                &format!("attachments[{i}].type"),
                "must be a MIME type such as image/png",
            ));
        }
    }
    if c.mentions.len() > 50 {
        return Err(invalid("mentions", "at most 50 mentions"));
    }
    for (i, m) in c.mentions.iter().enumerate() {
        check_user_id(&format!("mentions[{i}]"), m)?;
    }
    check_size(limits, &c.text, &c.custom, &c.attachments)
}

impl Messaging {
    async fn reactions_of(
        &self,
        app: &str,
        ids: &[String],
    ) -> Result<HashMap<String, BTreeMap<String, i64>>> {
        Self::reactions_on(&self.db, app, ids).await
    }

    /// [`Messaging::reactions_of`] on `conn` (a transaction sees its own changes).
    async fn reactions_on(
        conn: &impl sea_orm::ConnectionTrait,
        app: &str,
        ids: &[String],
    ) -> Result<HashMap<String, BTreeMap<String, i64>>> {
        let mut out: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(String, String)> = scoped::<reaction::Entity>(app)
            .filter(reaction::Column::MessageId.is_in(ids.iter().cloned()))
            .select_only()
            .column(reaction::Column::MessageId)
            .column(reaction::Column::Emoji)
            .into_tuple()
            .all(conn)
            .await?;
        for (mid, emoji) in rows {
            *out.entry(mid).or_default().entry(emoji).or_default() += 1;
        }
        Ok(out)
    }

    async fn outs(&self, app: &str, rows: Vec<message::Model>) -> Result<Vec<MessageOut>> {
        let ids: Vec<String> = rows.iter().map(|m| m.id.clone()).collect();
        let mut reactions = self.reactions_of(app, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|m| {
                let r = reactions.remove(&m.id).unwrap_or_default();
                message_out(m, r)
            })
            .collect())
    }

    async fn out(&self, app: &str, m: message::Model) -> Result<MessageOut> {
        Ok(self.outs(app, vec![m]).await?.remove(0))
    }

    pub(crate) async fn message_at(
        &self,
        app: &str,
        cid: &str,
        seq: i64,
    ) -> Result<Option<MessageOut>> {
        let m = scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(cid))
            .filter(message::Column::Seq.eq(seq))
            .one(&self.db)
            .await?;
        match m {
            Some(m) => Ok(Some(self.out(app, m).await?)),
            None => Ok(None),
        }
    }

    async fn message_model(&self, app: &str, cid: &str, mid: &str) -> Result<message::Model> {
        scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(cid))
            .filter(message::Column::Id.eq(mid))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found("message", mid))
    }

    /// Sends a message. With a `client_msg_id` seen before from the same sender in the same
    /// conversation, returns the original (`true`: duplicate) and delivers nothing.
    pub async fn send(
        &self,
        app: &str,
        limits: &Limits,
        cid: &str,
        actor: Actor<'_>,
        mut content: MessageContent,
    ) -> Result<(MessageOut, bool)> {
        check_content(limits, &content)?;
        let sender = match actor {
            Actor::User(u) => u.to_owned(),
            Actor::Server => String::new(),
        };
        let checked = self
            .send_checks(app, cid, &sender, content.client_msg_id.as_deref())
            .await?
            .ok_or_else(|| ApiError::not_found("conversation", cid))?;
        if let Actor::User(u) = actor {
            let Some(status) = &checked.u_status else {
                return Err(ApiError::not_found("user", u));
            };
            super::user::may_act(
                u,
                status,
                checked.u_banned.unwrap_or(false),
                checked.u_banned_until,
            )?;
            super::conversation::is_member(cid, u, checked.m_banned)?;
            if let Some(until) = checked.m_muted_until
                && until > Utc::now()
            {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "user {u} is muted in conversation {cid} until {}",
                        until.to_rfc3339()
                    ),
                ));
            }
            if checked.post_policy == "admins" && checked.m_role.as_deref() == Some("member") {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("only admins post in conversation {cid}"),
                ));
            }
        }
        if let Some(cm) = &content.client_msg_id
            && checked.dup_id.is_some()
            && let Some(orig) = self.find_by_client_id(app, cid, &sender, cm).await?
        {
            return Ok((self.out(app, orig).await?, true));
        }
        if let Some(p) = &content.parent_id {
            let parent = self.message_model(app, cid, p).await.map_err(|_| {
                invalid(
                    "parent_id",
                    format!("message {p} is not in conversation {cid}"),
                )
            })?;
            if parent.parent_id.is_some() {
                return Err(invalid(
                    "parent_id",
                    "replies go to the thread's first message, not to a reply",
                ));
            }
        }
        // The app's pre-send hook may refuse or rewrite the message; a rewrite is checked again.
        let before = (content.text.clone(), content.custom.clone());
        self.pre_send(
            app,
            cid,
            (!sender.is_empty()).then_some(sender.as_str()),
            &mut content,
        )
        .await?;
        if before != (content.text.clone(), content.custom.clone()) {
            check_content(limits, &content)?;
        }
        let kind = match (&actor, &content.text, &content.custom) {
            (Actor::Server, _, _) => "system",
            (_, None, Some(_)) => "custom",
            _ => "text",
        };
        self.admit_send(app, &actor).await?;
        let bytes = content_bytes(&content);
        let parent_id = content.parent_id.clone();
        // Written by the node's committer with whatever else is being sent (group commit): the
        // seq, the message, its outbox row and its webhook event in one transaction; answered
        // after the commit.
        let written = self
            .committer
            .write(NewMessage {
                app: app.to_owned(),
                cid: cid.to_owned(),
                sender: sender.clone(),
                kind,
                content,
            })
            .await;
        let (m, recipients) = match written {
            Ok(Committed::New {
                message,
                recipients,
            }) => (message, recipients),
            // A concurrent retry with the same client_msg_id won; return its message. Only
            // the stored one counts against the quota.
            Ok(Committed::Duplicate(orig)) => {
                self.give_back_send(app).await;
                return Ok((self.out(app, orig).await?, true));
            }
            // Not stored (or, when the database gave no answer in time, perhaps stored: the
            // customer is not charged for a send answered as failed).
            Err(e) => {
                self.give_back_send(app).await;
                return Err(e);
            }
        };
        metrics::counter!("starling_messages_total").increment(1);
        self.metering
            .record_message(app, (!sender.is_empty()).then_some(sender.as_str()), bytes);
        let out = message_out(m, BTreeMap::new());
        let to = match recipients {
            Some(to) => to,
            None => std::sync::Arc::new(self.recipients(app, cid).await?),
        };
        if self
            .try_deliver(
                app,
                &to,
                &Event::MessageNew {
                    message: out.clone(),
                },
            )
            .await
        {
            // Cleared in a batch a moment later; a crash before that only means the relay
            // publishes it again, and receivers dedupe by id.
            if self
                .outbox_cleared
                .try_send((app.to_owned(), out.id.clone()))
                .is_err()
            {
                self.outbox_done(app, &out.id).await;
            }
        }
        if let Some(p) = &parent_id
            && let Ok(parent) = self.message_model(app, cid, p).await
        {
            let parent = self.out(app, parent).await?;
            self.deliver(app, &to, &Event::MessageUpdated { message: parent })
                .await;
        }
        Ok((out, false))
    }

    /// The checks of a send in one round trip: the conversation's post policy, the sender's
    /// membership and account, and whether their `client_msg_id` was seen before. `None` when
    /// the conversation does not exist in `app`. Every table is filtered by `app`.
    async fn send_checks(
        &self,
        app: &str,
        cid: &str,
        sender: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Option<SendCheck>> {
        fn sub<E: crate::store::AppOwned>(q: sea_orm::Select<E>) -> Expr {
            Expr::SubQuery(None, Box::new(q.into_query().into()))
        }
        let dup = scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(cid))
            .filter(message::Column::SenderId.eq(sender))
            .filter(message::Column::ClientMsgId.eq(client_msg_id.unwrap_or("")))
            .select_only()
            .column(message::Column::Id);
        let mut q = scoped::<conversation::Entity>(app)
            .filter(conversation::Column::Id.eq(cid))
            .select_only()
            .column(conversation::Column::PostPolicy)
            .expr_as(Expr::col((member::Entity, member::Column::Role)), "m_role")
            .expr_as(
                Expr::col((member::Entity, member::Column::MutedUntil)),
                "m_muted_until",
            )
            .expr_as(
                Expr::col((member::Entity, member::Column::Banned)),
                "m_banned",
            )
            .expr_as(Expr::col((user::Entity, user::Column::Status)), "u_status")
            .expr_as(Expr::col((user::Entity, user::Column::Banned)), "u_banned")
            .expr_as(
                Expr::col((user::Entity, user::Column::BannedUntil)),
                "u_banned_until",
            )
            .expr_as(sub(dup), "dup_id");
        // The sender's membership and account rows, each by its primary key within `app`
        // (the joined tables are filtered by the app like everything [`scoped`] builds).
        QueryTrait::query(&mut q)
            .join(
                JoinType::LeftJoin,
                member::Entity,
                Condition::all()
                    .add(Expr::col((member::Entity, member::Column::AppId)).eq(app))
                    .add(Expr::col((member::Entity, member::Column::ConversationId)).eq(cid))
                    .add(Expr::col((member::Entity, member::Column::UserId)).eq(sender)),
            )
            .join(
                JoinType::LeftJoin,
                user::Entity,
                Condition::all()
                    .add(Expr::col((user::Entity, user::Column::AppId)).eq(app))
                    .add(Expr::col((user::Entity, user::Column::Id)).eq(sender)),
            );
        Ok(q.into_model::<SendCheck>().one(&self.db).await?)
    }

    /// Clears outbox rows in batches (the node runs this in the background).
    pub(crate) async fn clear_outbox(&self, batch: Vec<(String, String)>) {
        let mut by_app: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (app, id) in batch {
            by_app.entry(app).or_default().push(id);
        }
        for (app, ids) in by_app {
            let r = outbox::Entity::delete_many()
                .filter(outbox::Column::AppId.eq(app))
                .filter(outbox::Column::MessageId.is_in(ids))
                .exec(&self.db)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "clearing outbox rows failed; the relay will republish them");
            }
        }
    }

    async fn outbox_done(&self, app: &str, message_id: &str) {
        let r = outbox::Entity::delete_many()
            .filter(outbox::Column::AppId.eq(app))
            .filter(outbox::Column::MessageId.eq(message_id))
            .exec(&self.db)
            .await;
        if let Err(e) = r {
            // The relay will publish it again; receivers dedupe by id.
            tracing::warn!(error = %e, "clearing an outbox row failed");
        }
    }

    /// Publishes messages whose delivery was not confirmed within `older_than` (the sender's
    /// node died, or the bus refused). Returns how many were published. Runs on every node of
    /// the cell; each row is claimed first (its `created_at` moved to now, in one statement
    /// that skips rows another node is claiming), so one node relays it per `older_than`, and
    /// a row whose publication fails waits `older_than` again before the next try. Only rows
    /// of the apps this node serves are read: rows of an app it does not know (moved to
    /// another cell, deleted, or not in its feed yet) are left for a node that does, and
    /// however many there are, they never stand in front of the others.
    pub async fn relay_outbox(&self, older_than: std::time::Duration, batch: u64) -> Result<usize> {
        let at = now();
        let cutoff = at - chrono::Duration::from_std(older_than).unwrap_or_default();
        let apps = serde_json::Value::from(self.directory.app_ids());
        let backend = self.db.get_database_backend();
        let sql = if backend == sea_orm::DbBackend::Postgres {
            PG_CLAIM_OUTBOX
        } else {
            SQLITE_CLAIM_OUTBOX
        };
        // Infrastructure across the node's apps: each row is then handled within its app's
        // scope.
        let rows = outbox::Entity::find()
            .from_raw_sql(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [
                    cutoff.into(),
                    at.into(),
                    (batch as i64).into(),
                    apps.to_string().into(),
                ],
            ))
            .all(&self.db)
            .await?;
        let mut n = 0;
        for r in rows {
            match self
                .message_at(&r.app_id, &r.conversation_id, r.seq)
                .await?
            {
                Some(msg) => {
                    let to = self.recipients(&r.app_id, &r.conversation_id).await?;
                    if self
                        .try_deliver(&r.app_id, &to, &Event::MessageNew { message: msg })
                        .await
                    {
                        self.outbox_done(&r.app_id, &r.message_id).await;
                        n += 1;
                        metrics::counter!("starling_outbox_relayed_total").increment(1);
                    }
                }
                // The conversation or the message is gone: nothing to publish.
                None => self.outbox_done(&r.app_id, &r.message_id).await,
            }
        }
        Ok(n)
    }

    pub(super) async fn find_by_client_id(
        &self,
        app: &str,
        cid: &str,
        sender: &str,
        client_msg_id: &str,
    ) -> Result<Option<message::Model>> {
        Ok(scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(cid))
            .filter(message::Column::SenderId.eq(sender))
            .filter(message::Column::ClientMsgId.eq(client_msg_id))
            .one(&self.db)
            .await?)
    }

    async fn may_moderate(&self, app: &str, cid: &str, user: &str) -> Result<bool> {
        Ok(self
            .require_member(app, cid, user)
            .await
            .map(|m| m.role != "member")
            .unwrap_or(false))
    }

    /// Edits a message (its sender, or the server).
    pub async fn edit(
        &self,
        app: &str,
        limits: &Limits,
        cid: &str,
        mid: &str,
        actor: Actor<'_>,
        edit: MessageEdit,
    ) -> Result<MessageOut> {
        let m = self.message_model(app, cid, mid).await?;
        if let Actor::User(u) = actor {
            // A banned or deactivated user edits nothing, not even their own messages.
            self.active_user(app, u).await?;
            self.require_member(app, cid, u).await?;
            if m.sender_id != u {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only the sender may edit a message",
                ));
            }
        }
        if m.deleted_at.is_some() {
            return Err(ApiError::conflict(format!("message {mid} was deleted")));
        }
        if edit.text.is_none() && edit.custom.is_none() {
            return Err(invalid("text", "an edit needs text or custom"));
        }
        let text = edit.text.clone().or(m.text.clone());
        let custom = edit.custom.clone().or(m.custom.clone());
        let attachments: Vec<Attachment> =
            serde_json::from_value(m.attachments.clone()).unwrap_or_default();
        check_size(limits, &text, &custom, &attachments)?;
        // The webhook event commits with the edit. The row is changed only if it is still not
        // deleted: a delete that committed since the read above must not get its text back.
        let txn = starling_core::db::begin_write(&self.db).await?;
        let Some(m) = message::Entity::update_many()
            .col_expr(message::Column::Text, Expr::value(text))
            .col_expr(message::Column::Custom, Expr::value(custom))
            .col_expr(message::Column::EditedAt, Expr::value(Some(now())))
            .filter(message::Column::AppId.eq(app))
            .filter(message::Column::Id.eq(mid))
            .filter(message::Column::DeletedAt.is_null())
            .exec_with_returning(&txn)
            .await?
            .pop()
        else {
            txn.rollback().await?;
            return Err(ApiError::conflict(format!("message {mid} was deleted")));
        };
        let reactions = Self::reactions_on(&txn, app, std::slice::from_ref(&m.id))
            .await?
            .remove(&m.id)
            .unwrap_or_default();
        let out = message_out(m, reactions);
        self.emit(
            &txn,
            app,
            "message.updated",
            &MessageData {
                message: out.clone(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        let to = self.recipients(app, cid).await?;
        self.deliver(
            app,
            &to,
            &Event::MessageUpdated {
                message: out.clone(),
            },
        )
        .await;
        Ok(out)
    }

    /// Deletes a message for everyone: content erased, seq kept (a tombstone).
    pub async fn delete_message(
        &self,
        app: &str,
        cid: &str,
        mid: &str,
        actor: Actor<'_>,
    ) -> Result<MessageOut> {
        let m = self.message_model(app, cid, mid).await?;
        if let Actor::User(u) = actor {
            // Banned (from the app or this conversation), deactivated or no longer a member:
            // deletes nothing, not even their own messages.
            self.active_user(app, u).await?;
            self.require_member(app, cid, u).await?;
        }
        if let Actor::User(u) = actor
            && m.sender_id != u
            && !self.may_moderate(app, cid, u).await?
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the sender or an admin may delete a message",
            ));
        }
        if m.deleted_at.is_some() {
            return self.out(app, m).await;
        }
        // The tombstone, its reactions' removal and the webhook event: all or nothing. Only a
        // message not deleted yet: of two racing deletes one tells the members, and an edit
        // racing this one either lands before (and is erased) or finds the tombstone.
        let txn = starling_core::db::begin_write(&self.db).await?;
        let Some(m) = message::Entity::update_many()
            .col_expr(message::Column::Text, Expr::value(Option::<String>::None))
            .col_expr(
                message::Column::Custom,
                Expr::value(Option::<serde_json::Value>::None),
            )
            .col_expr(message::Column::Attachments, Expr::value(json!([])))
            .col_expr(message::Column::Mentions, Expr::value(json!([])))
            .col_expr(message::Column::DeletedAt, Expr::value(Some(now())))
            .filter(message::Column::AppId.eq(app))
            .filter(message::Column::Id.eq(mid))
            .filter(message::Column::DeletedAt.is_null())
            .exec_with_returning(&txn)
            .await?
            .pop()
        else {
            txn.rollback().await?;
            let m = self.message_model(app, cid, mid).await?;
            return self.out(app, m).await;
        };
        reaction::Entity::delete_many()
            .filter(reaction::Column::AppId.eq(app))
            .filter(reaction::Column::MessageId.eq(mid))
            .exec(&txn)
            .await?;
        let out = message_out(m, BTreeMap::new());
        self.emit(
            &txn,
            app,
            "message.deleted",
            &MessageData {
                message: out.clone(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        let to = self.recipients(app, cid).await?;
        self.deliver(
            app,
            &to,
            &Event::MessageDeleted {
                message: out.clone(),
            },
        )
        .await;
        Ok(out)
    }

    /// Adds (or with `remove`, removes) a user's reaction; returns the counts per emoji.
    pub async fn react(
        &self,
        app: &str,
        cid: &str,
        mid: &str,
        user: &str,
        emoji: &str,
        remove: bool,
    ) -> Result<BTreeMap<String, i64>> {
        if emoji.is_empty() || emoji.len() > 64 || emoji.chars().any(char::is_whitespace) {
            return Err(invalid("emoji", "must be 1..=64 bytes without spaces"));
        }
        self.active_user(app, user).await?;
        self.require_member(app, cid, user).await?;
        let m = self.message_model(app, cid, mid).await?;
        if m.deleted_at.is_some() {
            return Err(ApiError::conflict(format!("message {mid} was deleted")));
        }
        // The reaction, the counts the event shows, and the event: one transaction.
        let txn = starling_core::db::begin_write(&self.db).await?;
        if remove {
            reaction::Entity::delete_many()
                .filter(reaction::Column::AppId.eq(app))
                .filter(reaction::Column::MessageId.eq(mid))
                .filter(reaction::Column::UserId.eq(user))
                .filter(reaction::Column::Emoji.eq(emoji))
                .exec(&txn)
                .await?;
        } else {
            // Already there (or added concurrently): nothing to do, and no failed statement
            // to abort the transaction.
            reaction::Entity::insert(reaction::ActiveModel {
                app_id: Set(app.to_owned()),
                message_id: Set(mid.to_owned()),
                user_id: Set(user.to_owned()),
                emoji: Set(emoji.to_owned()),
                created_at: Set(now()),
            })
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await?;
        }
        let counts = Self::reactions_on(&txn, app, &[mid.to_owned()])
            .await?
            .remove(mid)
            .unwrap_or_default();
        self.emit(
            &txn,
            app,
            if remove {
                "reaction.removed"
            } else {
                "reaction.added"
            },
            &ReactionData {
                conversation_id: cid.to_owned(),
                message_id: mid.to_owned(),
                user_id: user.to_owned(),
                emoji: emoji.to_owned(),
                reactions: counts.clone(),
            },
        )
        .await?;
        self.commit_events(txn).await?;
        let to = self.recipients(app, cid).await?;
        let (conversation_id, message_id, user_id, emoji) = (
            cid.to_owned(),
            mid.to_owned(),
            user.to_owned(),
            emoji.to_owned(),
        );
        let ev = if remove {
            Event::ReactionRemoved {
                conversation_id,
                message_id,
                user_id,
                emoji,
                reactions: counts.clone(),
            }
        } else {
            Event::ReactionAdded {
                conversation_id,
                message_id,
                user_id,
                emoji,
                reactions: counts.clone(),
            }
        };
        self.deliver(app, &to, &ev).await;
        Ok(counts)
    }

    /// Reads a conversation's messages by seq.
    pub async fn history(&self, app: &str, cid: &str, q: &HistoryQuery) -> Result<MessagesOut> {
        self.conversation_model(app, cid).await?;
        let limit = match q.limit {
            None => 50,
            Some(n) if (1..=200).contains(&n) => n as u64,
            Some(_) => {
                let mut e = ApiError::new(ErrorCode::InvalidRequest, "limit: must be 1..=200");
                e.field = Some("limit".into());
                return Err(e);
            }
        };
        let asc = match q.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                let mut e = ApiError::new(ErrorCode::InvalidRequest, "order: must be asc or desc");
                e.field = Some("order".into());
                return Err(e);
            }
        };
        let mut s = scoped::<message::Entity>(app).filter(message::Column::ConversationId.eq(cid));
        if let Some(a) = q.after_seq {
            s = s.filter(message::Column::Seq.gt(a));
        }
        if let Some(b) = q.before_seq {
            s = s.filter(message::Column::Seq.lt(b));
        }
        s = if asc {
            s.order_by_asc(message::Column::Seq)
        } else {
            s.order_by_desc(message::Column::Seq)
        };
        let mut rows = s.limit(limit + 1).all(&self.db).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok(MessagesOut {
            messages: self.outs(app, rows).await?,
            has_more,
        })
    }

    /// The replies in a message's thread, oldest first.
    pub async fn replies(
        &self,
        app: &str,
        cid: &str,
        mid: &str,
        limit: Option<u32>,
        after_seq: Option<i64>,
    ) -> Result<MessagesOut> {
        self.message_model(app, cid, mid).await?;
        let limit = limit.unwrap_or(50).clamp(1, 200) as u64;
        let mut s = scoped::<message::Entity>(app)
            .filter(message::Column::ConversationId.eq(cid))
            .filter(message::Column::ParentId.eq(mid));
        if let Some(a) = after_seq {
            s = s.filter(message::Column::Seq.gt(a));
        }
        let mut rows = s
            .order_by_asc(message::Column::Seq)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok(MessagesOut {
            messages: self.outs(app, rows).await?,
            has_more,
        })
    }

    /// Marks read up to `seq` (never backwards) and sends read receipts to the members.
    pub async fn mark_read(&self, app: &str, cid: &str, user: &str, seq: i64) -> Result<i64> {
        let c = self.conversation_model(app, cid).await?;
        let m = self.require_member(app, cid, user).await?;
        if seq < 0 {
            return Err(invalid("seq", "must be at least 0"));
        }
        let seq = std::cmp::min(seq, c.last_seq);
        if seq <= m.last_read_seq {
            return Ok(m.last_read_seq);
        }
        let update = member::Entity::update_many()
            .col_expr(member::Column::LastReadSeq, Expr::value(seq))
            .filter(member::Column::AppId.eq(app))
            .filter(member::Column::ConversationId.eq(cid))
            .filter(member::Column::UserId.eq(user))
            .filter(member::Column::LastReadSeq.lt(seq));
        // Read receipts are opt-in webhooks: only pay for a transaction when one is wanted.
        if self.wants(app, "read_receipt.updated") {
            let txn = starling_core::db::begin_write(&self.db).await?;
            update.exec(&txn).await?;
            self.emit(
                &txn,
                app,
                "read_receipt.updated",
                &ReadReceiptData {
                    conversation_id: cid.to_owned(),
                    user_id: user.to_owned(),
                    seq,
                },
            )
            .await?;
            self.commit_events(txn).await?;
        } else {
            update.exec(&self.db).await?;
        }
        let to = self.recipients(app, cid).await?;
        self.deliver(
            app,
            &to,
            &Event::Read {
                conversation_id: cid.to_owned(),
                user_id: user.to_owned(),
                seq,
            },
        )
        .await;
        Ok(seq)
    }

    /// Tells the members that a user is typing (`start`) or stopped (`stop`).
    pub async fn typing(&self, app: &str, cid: &str, user: &str, state: &str) -> Result<()> {
        if state != "start" && state != "stop" {
            return Err(invalid("state", "must be start or stop"));
        }
        self.require_member(app, cid, user).await?;
        let to = self.recipients(app, cid).await?;
        self.deliver(
            app,
            &to,
            &Event::Typing {
                conversation_id: cid.to_owned(),
                user_id: user.to_owned(),
                state: state.to_owned(),
            },
        )
        .await;
        Ok(())
    }
}

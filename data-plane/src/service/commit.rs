//! Group commit: one task per node writes the messages its sends hand over, several per
//! database transaction.
//!
//! A send checks everything it can before (conversation, membership, idempotency, pre-send
//! hook, quotas), then queues a [`Pending`] and waits. The committer takes whatever queued up
//! while its previous transaction ran (at most `gateway.send_batch_max`) and writes it in one
//! transaction: per app, the conversations' rows are locked in id order (so two nodes cannot
//! deadlock) and advanced by one `UPDATE … SET last_seq = last_seq + k … RETURNING` (several
//! messages of one conversation get consecutive seqs in queue order), then one multi-row
//! `INSERT` each for the messages, their outbox rows and their webhook events and deliveries,
//! the thread reply counts, and one `COMMIT`. On PostgreSQL the seq update and the message and
//! outbox insert are one statement each whose text does not depend on the batch (the rows go
//! as one JSON parameter), so they are prepared once per connection instead of parsed and
//! planned again for every batch size. Every send is answered after that
//! commit. When the transaction fails (a concurrent retry took a `client_msg_id`, say), the
//! batch is written again one message per transaction, so that only the failing send fails.
//!
//! An error does not always mean nothing was written: when the connection breaks after
//! `COMMIT` was sent, PostgreSQL may have committed. Every message's id is drawn before the
//! first attempt and kept for the retries, and the message table is unique on it, so before
//! writing again the committer reads which of the batch's ids are stored (they are answered
//! as written), and a retry that meets its own id stored answers with that row: a message is
//! never stored twice, with or without `client_msg_id`. One batch, retries included, gets
//! `gateway.commit_timeout_ms`; whatever is not written by then is answered `unavailable`,
//! so a database that hangs holds the committer that long, not once per send.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, Statement,
};
use serde_json::json;
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::MessageId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument as _;

use super::{Messaging, Result, now};
use crate::entity::{conversation, member, message, outbox, webhook_delivery, webhook_event};
use crate::protocol::MessageContent;
use crate::store::scoped;
use crate::webhook::catalog::MessageData;

/// Advances the seqs of one app's conversations ($1) by their counts ($2: `[{"id", "k"}]`),
/// sets `last_message_at` ($3); the rows are locked in id order first. Returns the new
/// `last_seq` of each conversation that exists.
const PG_ADVANCE_SEQS: &str = r#"WITH want AS (
    SELECT id, k FROM jsonb_to_recordset($2::jsonb) AS w(id text, k bigint)
), locked AS (
    SELECT id FROM conversation
    WHERE app_id = $1 AND id IN (SELECT id FROM want)
    ORDER BY id FOR UPDATE
)
UPDATE conversation AS c
SET last_seq = c.last_seq + want.k, last_message_at = $3
FROM want, locked
WHERE c.app_id = $1 AND c.id = want.id AND locked.id = want.id
RETURNING c.id, c.last_seq"#;

/// Inserts a batch's messages ($1: one JSON object each) and their outbox rows, created at $2.
const PG_INSERT_MESSAGES: &str = r#"WITH m AS (
    INSERT INTO message (app_id, conversation_id, seq, id, sender_id, client_msg_id, kind, text,
        custom, attachments, mentions, parent_id, reply_count, created_at)
    SELECT app_id, conversation_id, seq, id, sender_id, client_msg_id, kind, text,
        custom, attachments, mentions, parent_id, 0, $2
    FROM jsonb_to_recordset($1::jsonb) AS r(app_id text, conversation_id text, seq bigint,
        id text, sender_id text, client_msg_id text, kind text, text text, custom json,
        attachments json, mentions json, parent_id text)
    RETURNING app_id, id, conversation_id, seq
)
INSERT INTO outbox (app_id, message_id, conversation_id, seq, created_at)
SELECT app_id, id, conversation_id, seq, $2 FROM m"#;

/// A checked message to write.
pub(crate) struct NewMessage {
    pub app: String,
    pub cid: String,
    /// The sending user; empty for a system message.
    pub sender: String,
    /// `text`, `custom` or `system`.
    pub kind: &'static str,
    pub content: MessageContent,
}

/// A send waiting for the committer.
pub(crate) struct Pending {
    msg: NewMessage,
    done: oneshot::Sender<Result<Committed>>,
}

/// What became of a [`Pending`].
pub(crate) enum Committed {
    /// Written and committed, with the conversation's recipients when the committer could
    /// read them after the commit.
    New {
        message: message::Model,
        recipients: Option<Arc<Vec<String>>>,
    },
    /// A message with the same `client_msg_id` from the same sender was there first.
    Duplicate(message::Model),
}

/// The sending side of a node's committer.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Pending>,
}

impl Committer {
    /// A committer whose queue holds `queue` sends; [`run`] drains the receiver.
    pub(crate) fn new(queue: usize) -> (Self, mpsc::Receiver<Pending>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (Self { tx }, rx)
    }

    /// Queues a send (waiting for room when the queue is full) and waits for its commit.
    pub(crate) async fn write(&self, msg: NewMessage) -> Result<Committed> {
        let (done, rx) = oneshot::channel();
        let p = Pending { msg, done };
        let gone = || {
            ApiError::new(
                ErrorCode::Unavailable,
                "the node's message writer is not running; retry",
            )
        };
        self.tx.send(p).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// The node's committer: writes what queued up, at most `max` per transaction, until every
/// sender is gone.
pub(crate) async fn run(
    m: Messaging,
    mut rx: mpsc::Receiver<Pending>,
    max: usize,
    limit: Duration,
) {
    let mut buf = Vec::with_capacity(max);
    while rx.recv_many(&mut buf, max.max(1)).await > 0 {
        let batch = std::mem::take(&mut buf);
        let span = tracing::info_span!("commit_batch", size = batch.len());
        // A bug in one batch must not stop the node's sends: its senders get `unavailable`
        // (their answers are dropped) and the committer goes on.
        let run = std::panic::AssertUnwindSafe(m.commit(batch, limit).instrument(span));
        if futures::FutureExt::catch_unwind(run).await.is_err() {
            tracing::error!(
                "writing a batch of messages panicked; its sends were answered unavailable"
            );
        }
    }
}

/// Retries within a batch: the first one is written, the others are answered with it (the
/// index of that first one).
fn same_as(batch: &[Pending]) -> Vec<Option<usize>> {
    let mut first: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    let mut same_as: Vec<Option<usize>> = vec![None; batch.len()];
    for (i, p) in batch.iter().enumerate() {
        if let Some(cm) = &p.msg.content.client_msg_id {
            let key = (
                p.msg.app.as_str(),
                p.msg.cid.as_str(),
                p.msg.sender.as_str(),
                cm.as_str(),
            );
            match first.get(&key) {
                Some(j) => same_as[i] = Some(*j),
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    same_as
}

/// What the batch transaction made of one pending send.
enum Slot {
    New(message::Model),
    /// A concurrent retry with the same `client_msg_id` committed this message first.
    Duplicate(message::Model),
    /// The same `client_msg_id` as the pending send at this index of the batch.
    SameAs(usize),
    Failed(ApiError),
}

/// The answer to a send whose batch ran out of `gateway.commit_timeout_ms`.
fn gave_up() -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::Unavailable,
        "the database did not answer in time; the message may or may not be stored: retry with the same client_msg_id",
    );
    e.retry_after = Some(1);
    e
}

impl Messaging {
    async fn commit(&self, batch: Vec<Pending>, limit: Duration) {
        metrics::counter!("starling_send_batches_total").increment(1);
        let deadline = Instant::now() + limit;
        // Drawn once, kept for every retry: what tells a retry what the first try stored.
        let ids: Vec<String> = batch
            .iter()
            .map(|_| MessageId::generate().into_string())
            .collect();
        let slots = match timeout_at(deadline, self.write_batch(&batch, &ids)).await {
            Ok(Ok(slots)) => slots,
            Ok(Err(e)) => self.recover(&batch, &ids, &e.to_string(), deadline).await,
            Err(_) => self.recover(&batch, &ids, "timed out", deadline).await,
        };
        let mut results: Vec<Result<Committed>> = Vec::with_capacity(batch.len());
        for (i, s) in slots.iter().enumerate() {
            results.push(match s {
                Slot::New(m) => Ok(Committed::New {
                    message: m.clone(),
                    recipients: None,
                }),
                Slot::Duplicate(m) => Ok(Committed::Duplicate(m.clone())),
                Slot::SameAs(j) => match &slots[*j] {
                    Slot::New(m) | Slot::Duplicate(m) => Ok(Committed::Duplicate(m.clone())),
                    Slot::Failed(e) => Err(e.clone()),
                    Slot::SameAs(_) => Err(ApiError::internal(format!(
                        "send {i} of a batch points at another duplicate"
                    ))),
                },
                Slot::Failed(e) => Err(e.clone()),
            });
        }
        // The recipients of every written message, one query per app, off the committer's
        // path: the next batch can start meanwhile.
        let m = self.clone();
        tokio::spawn(
            async move {
                let lists = m.recipients_of(&batch, &results).await;
                for (p, r) in batch.into_iter().zip(results) {
                    let r = r.map(|c| match c {
                        Committed::New { message, .. } => Committed::New {
                            recipients: lists
                                .get(&(message.app_id.clone(), message.conversation_id.clone()))
                                .cloned(),
                            message,
                        },
                        d => d,
                    });
                    // The sender may have gone (its connection closed): the message stands.
                    let _ = p.done.send(r);
                }
            }
            .in_current_span(),
        );
    }

    /// The members who receive the messages written in a batch, per (app, conversation).
    /// A failure is logged; the sends then read their recipients themselves.
    async fn recipients_of(
        &self,
        batch: &[Pending],
        results: &[Result<Committed>],
    ) -> HashMap<(String, String), Arc<Vec<String>>> {
        let mut per_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (p, r) in batch.iter().zip(results) {
            if let Ok(Committed::New { .. }) = r {
                let v = per_app.entry(p.msg.app.as_str()).or_default();
                if !v.contains(&p.msg.cid.as_str()) {
                    v.push(p.msg.cid.as_str());
                }
            }
        }
        let mut out = HashMap::new();
        for (app, cids) in per_app {
            let rows: Vec<(String, String)> = match scoped::<member::Entity>(app)
                .filter(member::Column::ConversationId.is_in(cids.iter().copied()))
                .filter(member::Column::Banned.eq(false))
                .select_only()
                .column(member::Column::ConversationId)
                .column(member::Column::UserId)
                .into_tuple()
                .all(&self.db)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, app_id = app, "reading a batch's recipients failed");
                    continue;
                }
            };
            let mut lists: HashMap<String, Vec<String>> =
                cids.iter().map(|c| ((*c).to_owned(), Vec::new())).collect();
            for (cid, user) in rows {
                lists.entry(cid).or_default().push(user);
            }
            for (cid, users) in lists {
                out.insert((app.to_owned(), cid), Arc::new(users));
            }
        }
        out
    }

    /// After a batch's transaction failed or timed out: answers the sends whose messages are
    /// stored after all (the connection broke after `COMMIT`), else writes each send on its
    /// own (so that only the failing one fails), all within `deadline`.
    async fn recover(
        &self,
        batch: &[Pending],
        ids: &[String],
        error: &str,
        deadline: Instant,
    ) -> Vec<Slot> {
        metrics::counter!("starling_send_batches_failed_total").increment(1);
        match timeout_at(deadline, self.stored(batch, ids)).await {
            Ok(Ok(stored)) if !stored.is_empty() => {
                // The transaction committed (it is all or nothing): every send has its row,
                // or its conversation was gone.
                tracing::warn!(
                    error,
                    size = batch.len(),
                    "a batch's commit failed on the way back but was stored; answered as written"
                );
                metrics::counter!("starling_send_batches_ambiguous_total").increment(1);
                let mut stored = stored;
                return same_as(batch)
                    .into_iter()
                    .enumerate()
                    .map(|(i, same)| match same {
                        Some(j) => Slot::SameAs(j),
                        None => match stored.remove(&ids[i]) {
                            Some(m) => Slot::New(m),
                            None => {
                                Slot::Failed(ApiError::not_found("conversation", &batch[i].msg.cid))
                            }
                        },
                    })
                    .collect();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // The database cannot even be read: writing again one by one would only wait
                // for it once per send.
                tracing::warn!(error, lookup = %e, size = batch.len(), "a batch failed and the database is unreachable");
                let mut e = ApiError::from(e);
                e.message = gave_up().message;
                return batch.iter().map(|_| Slot::Failed(e.clone())).collect();
            }
            Err(_) => return batch.iter().map(|_| Slot::Failed(gave_up())).collect(),
        }
        // One send spoiled the transaction: write each on its own, so that only that one fails.
        tracing::debug!(
            error,
            size = batch.len(),
            "batch failed; writing its messages one by one"
        );
        let mut slots = Vec::with_capacity(batch.len());
        for (p, id) in batch.iter().zip(ids) {
            slots.push(
                match timeout_at(deadline, self.write_one(p, id.clone())).await {
                    Ok(s) => s,
                    Err(_) => Slot::Failed(gave_up()),
                },
            );
        }
        slots
    }

    /// The batch's messages that are stored, by id.
    async fn stored(
        &self,
        batch: &[Pending],
        ids: &[String],
    ) -> Result<HashMap<String, message::Model>, sea_orm::DbErr> {
        let mut per_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (p, id) in batch.iter().zip(ids) {
            per_app.entry(p.msg.app.as_str()).or_default().push(id);
        }
        let mut out = HashMap::new();
        for (app, ids) in per_app {
            for m in scoped::<message::Entity>(app)
                .filter(message::Column::Id.is_in(ids))
                .all(&self.db)
                .await?
            {
                out.insert(m.id.clone(), m);
            }
        }
        Ok(out)
    }

    /// One send in its own transaction (after its batch failed), with the id its batch gave
    /// it. A unique violation on that id means an earlier try stored it after all (answered as
    /// written); on its `client_msg_id`, that a concurrent retry won (answered with that one).
    async fn write_one(&self, p: &Pending, id: String) -> Slot {
        match self
            .write_batch(std::slice::from_ref(p), std::slice::from_ref(&id))
            .await
        {
            Ok(mut s) => s.pop().unwrap_or_else(|| {
                Slot::Failed(ApiError::internal("a batch of one wrote nothing"))
            }),
            Err(e) => {
                if let Ok(Some(m)) = scoped::<message::Entity>(&p.msg.app)
                    .filter(message::Column::Id.eq(id.as_str()))
                    .one(&self.db)
                    .await
                {
                    return Slot::New(m);
                }
                let e = ApiError::from(e);
                if let Some(cm) = &p.msg.content.client_msg_id
                    && let Ok(Some(orig)) = self
                        .find_by_client_id(&p.msg.app, &p.msg.cid, &p.msg.sender, cm)
                        .await
                {
                    return Slot::Duplicate(orig);
                }
                Slot::Failed(e)
            }
        }
    }

    /// Writes a batch in one transaction, message `i` with id `ids[i]`; `Err` when the
    /// transaction failed (nothing of it is written, unless the error came after `COMMIT`
    /// reached the database), else what became of each send.
    async fn write_batch(
        &self,
        batch: &[Pending],
        ids: &[String],
    ) -> Result<Vec<Slot>, sea_orm::DbErr> {
        let at = now();
        let n = batch.len();
        let same_as = same_as(batch);
        // Messages per conversation, per app, in id order.
        let mut per_app: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
        for (i, p) in batch.iter().enumerate() {
            if same_as[i].is_none() {
                *per_app
                    .entry(p.msg.app.as_str())
                    .or_default()
                    .entry(p.msg.cid.as_str())
                    .or_default() += 1;
            }
        }
        let txn = starling_core::db::begin_write(&self.db).await?;
        let pg = txn.get_database_backend() == sea_orm::DbBackend::Postgres;
        // The next seq to give in each conversation.
        let mut next: HashMap<(&str, &str), i64> = HashMap::new();
        for (app, convs) in &per_app {
            if pg {
                // One statement whose text does not depend on the batch (prepared once per
                // connection): lock the rows in id order (two nodes cannot deadlock), then
                // advance each by its count.
                let want = serde_json::Value::Array(
                    convs
                        .iter()
                        .map(|(id, k)| json!({"id": id, "k": k}))
                        .collect(),
                );
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        PG_ADVANCE_SEQS,
                        [(*app).into(), want.into(), at.into()],
                    ))
                    .await?;
                for r in rows {
                    let id: String = r.try_get("", "id")?;
                    let last: i64 = r.try_get("", "last_seq")?;
                    if let Some((cid, k)) = convs.get_key_value(id.as_str()) {
                        next.insert((*app, *cid), last - k + 1);
                    }
                }
                continue;
            }
            let ids: Vec<&str> = convs.keys().copied().collect();
            let mut case = CaseStatement::new();
            for (cid, k) in convs {
                case = case.case(conversation::Column::Id.eq(*cid), *k);
            }
            let case = case.finally(0i64);
            // SQLite has one writer: the transaction holds the database, seqs are gap-free
            // and ordered.
            let updated = conversation::Entity::update_many()
                .col_expr(
                    conversation::Column::LastSeq,
                    Expr::col(conversation::Column::LastSeq).add(Expr::Case(Box::new(case))),
                )
                .col_expr(conversation::Column::LastMessageAt, Expr::value(Some(at)))
                .filter(conversation::Column::AppId.eq(*app))
                .filter(conversation::Column::Id.is_in(ids.iter().copied()))
                .exec_with_returning(&txn)
                .await?;
            for c in updated {
                if let Some((cid, k)) = convs.get_key_value(c.id.as_str()) {
                    next.insert((*app, *cid), c.last_seq - k + 1);
                }
            }
        }
        let mut slots = Vec::with_capacity(n);
        let mut messages = Vec::new();
        for (i, p) in batch.iter().enumerate() {
            if let Some(j) = same_as[i] {
                slots.push(Slot::SameAs(j));
                continue;
            }
            let Some(seq) = next.get_mut(&(p.msg.app.as_str(), p.msg.cid.as_str())) else {
                // The conversation vanished since the send's checks.
                slots.push(Slot::Failed(ApiError::not_found(
                    "conversation",
                    &p.msg.cid,
                )));
                continue;
            };
            let c = &p.msg.content;
            let m = message::Model {
                app_id: p.msg.app.clone(),
                conversation_id: p.msg.cid.clone(),
                seq: *seq,
                id: ids[i].clone(),
                sender_id: p.msg.sender.clone(),
                client_msg_id: c.client_msg_id.clone(),
                kind: p.msg.kind.to_owned(),
                text: c.text.clone(),
                custom: c.custom.clone(),
                attachments: serde_json::to_value(&c.attachments).unwrap_or_else(|_| json!([])),
                mentions: json!(c.mentions),
                parent_id: c.parent_id.clone(),
                reply_count: 0,
                created_at: at,
                edited_at: None,
                deleted_at: None,
            };
            *seq += 1;
            messages.push(m.clone());
            slots.push(Slot::New(m));
        }
        // The outbox rows say: publication not confirmed yet. If this node dies before a
        // delivery is out, a relay publishes it (receivers dedupe by message id).
        if pg && !messages.is_empty() {
            let rows = serde_json::Value::Array(
                messages
                    .iter()
                    .map(|m| {
                        json!({
                            "app_id": m.app_id, "conversation_id": m.conversation_id,
                            "seq": m.seq, "id": m.id, "sender_id": m.sender_id,
                            "client_msg_id": m.client_msg_id, "kind": m.kind, "text": m.text,
                            "custom": m.custom, "attachments": m.attachments,
                            "mentions": m.mentions, "parent_id": m.parent_id,
                        })
                    })
                    .collect(),
            );
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_INSERT_MESSAGES,
                [rows.into(), at.into()],
            ))
            .await?;
        } else if !messages.is_empty() {
            message::Entity::insert_many(
                messages
                    .iter()
                    .cloned()
                    .map(IntoActiveModel::into_active_model),
            )
            .exec_without_returning(&txn)
            .await?;
            outbox::Entity::insert_many(messages.iter().map(|m| {
                outbox::Model {
                    app_id: m.app_id.clone(),
                    message_id: m.id.clone(),
                    conversation_id: m.conversation_id.clone(),
                    seq: m.seq,
                    created_at: at,
                }
                .into_active_model()
            }))
            .exec_without_returning(&txn)
            .await?;
        }
        // The webhook events commit with their messages: acknowledged means delivered later.
        let mut events: Vec<webhook_event::ActiveModel> = Vec::new();
        let mut deliveries: Vec<webhook_delivery::ActiveModel> = Vec::new();
        for m in &messages {
            if let Some((e, d)) = self.event_rows(
                &m.app_id,
                "message.created",
                &MessageData {
                    message: super::message::message_out(m.clone(), BTreeMap::new()),
                },
            ) {
                events.push(e);
                deliveries.extend(d);
            }
        }
        let n_events = events.len();
        if !events.is_empty() {
            webhook_event::Entity::insert_many(events)
                .exec_without_returning(&txn)
                .await?;
            webhook_delivery::Entity::insert_many(deliveries)
                .exec_without_returning(&txn)
                .await?;
        }
        // Thread replies count on their first message.
        let mut replies: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for m in &messages {
            if let Some(p) = &m.parent_id {
                *replies.entry((m.app_id.as_str(), p.as_str())).or_default() += 1;
            }
        }
        for ((app, parent), k) in replies {
            message::Entity::update_many()
                .col_expr(
                    message::Column::ReplyCount,
                    Expr::col(message::Column::ReplyCount).add(k),
                )
                .filter(message::Column::AppId.eq(app))
                .filter(message::Column::Id.eq(parent))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        if n_events > 0 {
            metrics::counter!("starling_webhook_events_total").increment(n_events as u64);
            self.webhooks.wake();
        }
        Ok(slots)
    }
}

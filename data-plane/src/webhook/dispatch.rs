//! The dispatcher of a node: takes due deliveries under a lease (so nodes share the work and a
//! dead node's deliveries are taken over when its lease ends), POSTs them, records each attempt
//! and moves the delivery on: delivered, retried later, or dead-lettered.
//!
//! Costs are per batch, not per delivery: due deliveries are claimed up to [`BATCH`] at a time
//! (one select and one conditional update per app), their events and endpoint health read in
//! one query each, and the outcomes are written by one recorder task, as many as have
//! accumulated in one transaction (one multi-row insert of the attempts, one update per kind of
//! outcome, one update of the health of the endpoints that succeeded, which changes no row when
//! they were healthy). Requests run concurrently, at most `concurrency` per node and
//! `endpoint_concurrency` per endpoint, over pooled keep-alive connections.
//!
//! A delivery stays `pending` and leased until its outcome is written, so a node that dies
//! with outcomes unwritten loses nothing: the lease runs out and the delivery is tried again
//! (at least once). Ordered endpoints get one delivery at a time, the oldest pending first; the
//! next is claimed only once the outcome of the previous one is written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};
use starling_core::appconfig::WebhookEndpointConfig;
use starling_core::id::AppId;
use tokio::sync::{Semaphore, mpsc};

use super::catalog::EndpointDisabledData;
use super::{signing_secrets, webhook_attempt, webhook_delivery, webhook_endpoint_state};
use crate::entity::{webhook_event, webhook_notification};
use crate::service::{Messaging, Result, now};

/// Most deliveries claimed at once; most rows in one statement.
const BATCH: usize = 500;
/// Most outcomes written in one transaction.
const MAX_OUTCOMES: usize = 2000;

/// The delivery row's new state. Outcomes with equal changes are written by one UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Change {
    status: &'static str,
    /// `None`: unchanged.
    next_attempt_at: Option<DateTime<Utc>>,
    /// An attempt was made: `attempts + 1`.
    counted: bool,
    /// `None`: unchanged.
    last_status_code: Option<Option<i32>>,
    /// `None`: unchanged.
    last_error: Option<Option<String>>,
}

/// What became of one claimed delivery, waiting to be written.
struct Outcome {
    app: String,
    delivery: String,
    change: Change,
    /// The attempt made, if one was.
    attempt: Option<webhook_attempt::ActiveModel>,
    /// For endpoint health: the endpoint, and whether this attempt succeeded.
    health: Option<(WebhookEndpointConfig, bool)>,
}

impl Outcome {
    fn skipped(d: &webhook_delivery::Model, note: &str) -> Self {
        Self {
            app: d.app_id.clone(),
            delivery: d.id.clone(),
            change: Change {
                status: "skipped",
                next_attempt_at: None,
                counted: false,
                last_status_code: None,
                last_error: Some(Some(note.to_owned())),
            },
            attempt: None,
            health: None,
        }
    }
}

/// The dispatcher's state on this node.
struct Dispatcher {
    m: Messaging,
    permits: Arc<Semaphore>,
    /// Requests in flight by endpoint id: (count, the endpoint's cap).
    inflight: Mutex<HashMap<String, (usize, usize)>>,
    outcomes: mpsc::Sender<Outcome>,
}

/// How many slots must be free before more is claimed: claiming one delivery per finished
/// request would cost a claim's queries per delivery.
fn refill_at(cap: usize) -> usize {
    (cap / 4).max(1)
}

impl Dispatcher {
    fn endpoint_started(&self, id: &str, cap: usize) {
        let mut f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let e = f.entry(id.to_owned()).or_insert((0, cap));
        e.0 += 1;
        e.1 = cap;
    }

    fn endpoint_done(&self, id: &str) {
        let mut f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = f.get_mut(id) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                f.remove(id);
            }
        }
    }

    /// Endpoints that may not take more now, and how many more each of the others may take.
    fn endpoint_room(&self) -> (Vec<String>, HashMap<String, usize>) {
        let f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut full = Vec::new();
        let mut room = HashMap::new();
        for (id, (n, cap)) in f.iter() {
            let free = cap.saturating_sub(*n);
            if free < refill_at(*cap) {
                full.push(id.clone());
            } else {
                room.insert(id.clone(), free);
            }
        }
        (full, room)
    }
}

/// Runs the dispatcher until the process ends.
pub async fn run(m: Messaging) {
    let cfg = m.webhooks.cfg.clone();
    let (tx, rx) = mpsc::channel(cfg.concurrency * 4);
    tokio::spawn(record(m.clone(), rx));
    tokio::spawn(super::retention::run(m.clone()));
    let d = Arc::new(Dispatcher {
        m,
        permits: Arc::new(Semaphore::new(cfg.concurrency)),
        inflight: Mutex::new(HashMap::new()),
        outcomes: tx,
    });
    let poll = Duration::from_millis(cfg.poll_interval_ms);
    let low = refill_at(cfg.concurrency);
    loop {
        let free = d.permits.available_permits();
        let n = if free < low {
            0
        } else {
            match d.dispatch_once(free.min(BATCH)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e.message, "webhook dispatch failed; retrying");
                    0
                }
            }
        };
        if n == 0 || d.permits.available_permits() < low {
            tokio::select! {
                _ = d.m.webhooks.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Writes outcomes as they come, as many at once as have accumulated.
async fn record(m: Messaging, mut rx: mpsc::Receiver<Outcome>) {
    let mut buf = Vec::new();
    loop {
        if rx.recv_many(&mut buf, MAX_OUTCOMES).await == 0 {
            return;
        }
        let mut tries = 0;
        loop {
            match m.write_outcomes(&buf).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(error = %e.message, "recording webhook outcomes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    // The deliveries stay pending under their lease: tried again when it ends.
                    tracing::error!(error = %e.message, n = buf.len(), "recording webhook outcomes failed; they are tried again when their lease ends");
                    break;
                }
            }
        }
        m.endpoints_health(&buf).await;
        buf.clear();
        // An ordered endpoint's next delivery may go now.
        m.webhooks.wake();
    }
}

impl Dispatcher {
    /// Claims up to `max` due deliveries and starts them; returns how many.
    async fn dispatch_once(self: &Arc<Self>, max: usize) -> Result<usize> {
        let m = &self.m;
        let cfg = &m.webhooks.cfg;
        let now = now();
        let free = Condition::any()
            .add(webhook_delivery::Column::LeaseUntil.is_null())
            .add(webhook_delivery::Column::LeaseUntil.lt(now));
        let (full, mut room) = self.endpoint_room();
        // Across the apps this node serves: the dispatcher is cell infrastructure; each
        // delivery is then handled within its own app. Rows of apps it does not know (deleted,
        // or another cell's in a shared database) are left alone and never fill a batch, or
        // they would starve every other app's deliveries.
        let apps = m.directory.app_ids();
        if apps.is_empty() {
            return Ok(0);
        }
        let mut q = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::AppId.is_in(apps))
            .filter(webhook_delivery::Column::Status.eq("pending"))
            .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
            .filter(free.clone());
        if !full.is_empty() {
            q = q.filter(webhook_delivery::Column::EndpointId.is_not_in(full));
        }
        let due = q
            .order_by_asc(webhook_delivery::Column::NextAttemptAt)
            .limit(max as u64)
            .all(&m.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut eps = HashMap::new();
        let mut keep = Vec::new();
        let mut first_of: HashMap<(String, String), Option<String>> = HashMap::new();
        for d in due {
            let app = AppId::from_trusted(d.app_id.clone());
            let Some(app_cfg) = m.directory.app(&app) else {
                continue;
            };
            let ep = app_cfg
                .webhooks
                .iter()
                .find(|e| e.id == d.endpoint_id)
                .cloned();
            if let Some(ep) = &ep {
                let cap = if ep.ordered {
                    1
                } else {
                    cfg.endpoint_concurrency
                };
                let left = room.entry(ep.id.clone()).or_insert(cap);
                if *left == 0 {
                    continue;
                }
                if ep.ordered {
                    // Only the oldest pending delivery of an ordered endpoint may go.
                    let key = (d.app_id.clone(), d.endpoint_id.clone());
                    if !first_of.contains_key(&key) {
                        let first: Option<String> = webhook_delivery::Entity::find()
                            .filter(webhook_delivery::Column::AppId.eq(&d.app_id))
                            .filter(webhook_delivery::Column::EndpointId.eq(&d.endpoint_id))
                            .filter(webhook_delivery::Column::Status.eq("pending"))
                            .order_by_asc(webhook_delivery::Column::Id)
                            .select_only()
                            .column(webhook_delivery::Column::Id)
                            .into_tuple()
                            .one(&m.db)
                            .await?;
                        first_of.insert(key.clone(), first);
                    }
                    if first_of[&key].as_deref() != Some(d.id.as_str()) {
                        continue;
                    }
                }
                *left -= 1;
            }
            eps.insert(d.id.clone(), ep);
            keep.push(d);
        }
        if keep.is_empty() {
            return Ok(0);
        }
        let lease = now
            + chrono::Duration::milliseconds(cfg.attempt_timeout_ms as i64)
            + chrono::Duration::seconds(30);
        let mut claimed = Vec::new();
        let mut by_app: HashMap<String, Vec<String>> = HashMap::new();
        for d in &keep {
            by_app
                .entry(d.app_id.clone())
                .or_default()
                .push(d.id.clone());
        }
        for (app, ids) in by_app {
            let got = webhook_delivery::Entity::update_many()
                .col_expr(
                    webhook_delivery::Column::LeaseUntil,
                    Expr::value(Some(lease)),
                )
                .filter(webhook_delivery::Column::AppId.eq(&app))
                .filter(webhook_delivery::Column::Id.is_in(ids))
                .filter(webhook_delivery::Column::Status.eq("pending"))
                .filter(free.clone())
                .exec_with_returning(&m.db)
                .await?;
            claimed.extend(got);
        }
        let n = claimed.len();
        // The events' bodies, and the endpoints' health, in one query each per app.
        let mut bodies: HashMap<(String, String), Arc<str>> = HashMap::new();
        let mut health: HashMap<(String, String), webhook_endpoint_state::Model> = HashMap::new();
        let apps: HashSet<String> = claimed.iter().map(|d| d.app_id.clone()).collect();
        for app in apps {
            let ids: Vec<String> = claimed
                .iter()
                .filter(|d| d.app_id == app)
                .map(|d| d.event_id.clone())
                .collect();
            for e in webhook_event::Entity::find()
                .filter(webhook_event::Column::AppId.eq(&app))
                .filter(webhook_event::Column::Id.is_in(ids))
                .all(&m.db)
                .await?
            {
                bodies.insert((app.clone(), e.id), Arc::from(e.payload));
            }
            for s in webhook_endpoint_state::Entity::find()
                .filter(webhook_endpoint_state::Column::AppId.eq(&app))
                .filter(webhook_endpoint_state::Column::DisabledAt.is_not_null())
                .all(&m.db)
                .await?
            {
                health.insert((app.clone(), s.endpoint_id.clone()), s);
            }
        }
        for d in claimed {
            let ep = eps.remove(&d.id).flatten();
            let Some(ep) = ep else {
                self.done(Outcome::skipped(&d, "the endpoint was removed"))
                    .await;
                continue;
            };
            let st = health.get(&(d.app_id.clone(), ep.id.clone()));
            let auto_off = st
                .and_then(|s| s.disabled_at)
                .is_some_and(|at| at > ep.enabled_at);
            if !ep.enabled || auto_off {
                self.done(Outcome::skipped(&d, "the endpoint is disabled"))
                    .await;
                continue;
            }
            let Some(body) = bodies.get(&(d.app_id.clone(), d.event_id.clone())).cloned() else {
                self.done(Outcome::skipped(&d, "the event is gone")).await;
                continue;
            };
            if let Some(r) = ep.rate_limit_per_second
                && !m.webhooks.allow(&ep.id, r)
            {
                // Not an attempt: try again shortly, without counting it.
                let later = now
                    + chrono::Duration::milliseconds(Ord::max(1000 / Ord::max(r, 1), 20) as i64);
                self.done(Outcome {
                    app: d.app_id.clone(),
                    delivery: d.id.clone(),
                    change: Change {
                        status: "pending",
                        next_attempt_at: Some(later),
                        counted: false,
                        last_status_code: None,
                        last_error: None,
                    },
                    attempt: None,
                    health: None,
                })
                .await;
                continue;
            }
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let cap = if ep.ordered {
                1
            } else {
                cfg.endpoint_concurrency
            };
            self.endpoint_started(&ep.id, cap);
            let me = self.clone();
            tokio::spawn(async move {
                let ep_id = ep.id.clone();
                let o = me.m.attempt(d, ep, body).await;
                me.endpoint_done(&ep_id);
                me.done(o).await;
                // A free slot: take the next due deliveries soon, not at the next poll.
                drop(permit);
                me.m.webhooks.wake();
            });
        }
        Ok(n)
    }

    async fn done(&self, o: Outcome) {
        if self.outcomes.send(o).await.is_err() {
            tracing::error!(
                "the webhook recorder stopped; the delivery is tried again when its lease ends"
            );
        }
    }
}

impl Messaging {
    /// POSTs one delivery; what became of it.
    async fn attempt(
        &self,
        d: webhook_delivery::Model,
        ep: WebhookEndpointConfig,
        body: Arc<str>,
    ) -> Outcome {
        let cfg = &self.webhooks.cfg;
        let secrets = signing_secrets(&ep);
        let started = Instant::now();
        let at = now();
        let sent = self
            .webhooks
            .post(
                &ep.url,
                &d.event_id,
                &secrets,
                body.as_bytes(),
                Duration::from_millis(cfg.attempt_timeout_ms),
                false,
            )
            .await;
        let latency = started.elapsed().as_millis() as i64;
        let ok = sent.status.is_some_and(|s| (200..300).contains(&s));
        metrics::counter!("starling_webhook_attempts_total", "ok" => ok.to_string()).increment(1);
        metrics::histogram!("starling_webhook_attempt_seconds").record(latency as f64 / 1000.0);
        let attempt = webhook_attempt::ActiveModel {
            app_id: Set(d.app_id.clone()),
            id: Set(format!(
                "atm_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            )),
            delivery_id: Set(d.id.clone()),
            event_id: Set(d.event_id.clone()),
            endpoint_id: Set(d.endpoint_id.clone()),
            attempted_at: Set(at),
            ok: Set(ok),
            status_code: Set(sent.status.map(i32::from)),
            latency_ms: Set(latency),
            response_excerpt: Set(sent.excerpt.clone()),
            error: Set(sent.error.clone()),
        };
        let error = sent
            .error
            .clone()
            .or_else(|| (!ok).then(|| format!("answered {}", sent.status.unwrap_or(0))));
        let (status, next) = if ok {
            ("delivered", None)
        } else {
            match cfg.retry_schedule_secs.get(d.attempts as usize) {
                Some(secs) => (
                    "pending",
                    Some(now() + chrono::Duration::from_std(cfg.scaled(*secs)).unwrap_or_default()),
                ),
                None => ("dead", None),
            }
        };
        Outcome {
            app: d.app_id.clone(),
            delivery: d.id.clone(),
            change: Change {
                status,
                next_attempt_at: next,
                counted: true,
                last_status_code: Some(sent.status.map(i32::from)),
                last_error: Some(error),
            },
            attempt: Some(attempt),
            health: Some((ep, ok)),
        }
    }

    /// Writes a batch of outcomes in one transaction: the attempts in multi-row inserts, the
    /// deliveries with one update per kind of change.
    async fn write_outcomes(&self, batch: &[Outcome]) -> Result<()> {
        let txn = starling_core::db::begin_write(&self.db).await?;
        let attempts: Vec<webhook_attempt::ActiveModel> =
            batch.iter().filter_map(|o| o.attempt.clone()).collect();
        for chunk in attempts.chunks(BATCH) {
            webhook_attempt::Entity::insert_many(chunk.to_vec())
                .exec(&txn)
                .await?;
        }
        let mut groups: HashMap<(&str, &Change), Vec<&str>> = HashMap::new();
        for o in batch {
            groups
                .entry((o.app.as_str(), &o.change))
                .or_default()
                .push(o.delivery.as_str());
        }
        let now = now();
        let mut dead = 0;
        for ((app, c), ids) in groups {
            if c.status == "dead" {
                dead += ids.len();
            }
            for chunk in ids.chunks(BATCH) {
                let mut q = webhook_delivery::Entity::update_many()
                    .col_expr(webhook_delivery::Column::Status, Expr::value(c.status))
                    .col_expr(
                        webhook_delivery::Column::LeaseUntil,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now));
                if let Some(n) = c.next_attempt_at {
                    q = q.col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(n));
                }
                if c.counted {
                    q = q.col_expr(
                        webhook_delivery::Column::Attempts,
                        Expr::col(webhook_delivery::Column::Attempts).add(1),
                    );
                }
                if let Some(s) = c.last_status_code {
                    q = q.col_expr(webhook_delivery::Column::LastStatusCode, Expr::value(s));
                }
                if let Some(e) = &c.last_error {
                    q = q.col_expr(webhook_delivery::Column::LastError, Expr::value(e.clone()));
                }
                q.filter(webhook_delivery::Column::AppId.eq(app))
                    .filter(webhook_delivery::Column::Id.is_in(chunk.iter().copied()))
                    .exec(&txn)
                    .await?;
            }
        }
        // Endpoints that succeeded are healthy: one statement per app, which changes nothing
        // for endpoints that were (the usual case) and clears the failing period of the others.
        let mut ok_by_app: HashMap<&str, HashSet<&str>> = HashMap::new();
        for o in batch {
            if let Some((ep, true)) = &o.health {
                ok_by_app
                    .entry(o.app.as_str())
                    .or_default()
                    .insert(ep.id.as_str());
            }
        }
        for (app, eps) in ok_by_app {
            webhook_endpoint_state::Entity::update_many()
                .col_expr(
                    webhook_endpoint_state::Column::FailingSince,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(webhook_endpoint_state::Column::AppId.eq(app))
                .filter(webhook_endpoint_state::Column::EndpointId.is_in(eps))
                .filter(webhook_endpoint_state::Column::FailingSince.is_not_null())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        if dead > 0 {
            metrics::counter!("starling_webhook_dead_letters_total").increment(dead as u64);
        }
        Ok(())
    }

    /// Endpoints whose last outcome in the batch failed start or continue their failing
    /// period (successes were written with the outcomes).
    async fn endpoints_health(&self, batch: &[Outcome]) {
        let mut last: HashMap<&str, (&str, &WebhookEndpointConfig, bool)> = HashMap::new();
        for o in batch {
            if let Some((ep, ok)) = &o.health {
                last.insert(ep.id.as_str(), (o.app.as_str(), ep, *ok));
            }
        }
        for (app, ep, ok) in last.into_values() {
            if ok {
                continue;
            }
            if let Err(e) = self.endpoint_failed(app, ep).await {
                tracing::warn!(error = %e.message, app_id = app, endpoint_id = %ep.id, "recording webhook endpoint health failed");
            }
        }
    }

    /// A failure: starts or continues the endpoint's failing period; disables it after
    /// `disable_after_secs`.
    async fn endpoint_failed(&self, app: &str, ep: &WebhookEndpointConfig) -> Result<()> {
        let now = now();
        let st = webhook_endpoint_state::Entity::find()
            .filter(webhook_endpoint_state::Column::AppId.eq(app))
            .filter(webhook_endpoint_state::Column::EndpointId.eq(&ep.id))
            .one(&self.db)
            .await?;
        let Some(st) = st else {
            let r = webhook_endpoint_state::ActiveModel {
                app_id: Set(app.to_owned()),
                endpoint_id: Set(ep.id.clone()),
                failing_since: Set(Some(now)),
                disabled_at: Set(None),
            }
            .insert(&self.db)
            .await;
            if let Err(e) = r
                && !matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                )
            {
                return Err(e.into());
            }
            return Ok(());
        };
        let since = match st.failing_since {
            // Failures before the endpoint was last enabled do not count.
            Some(s) if s > ep.enabled_at => s,
            _ => {
                webhook_endpoint_state::Entity::update_many()
                    .col_expr(
                        webhook_endpoint_state::Column::FailingSince,
                        Expr::value(Some(now)),
                    )
                    .filter(webhook_endpoint_state::Column::AppId.eq(app))
                    .filter(webhook_endpoint_state::Column::EndpointId.eq(&ep.id))
                    .exec(&self.db)
                    .await?;
                return Ok(());
            }
        };
        let limit = chrono::Duration::from_std(
            self.webhooks
                .cfg
                .scaled(self.webhooks.cfg.disable_after_secs),
        )
        .unwrap_or_default();
        let already = st.disabled_at.is_some_and(|d| d > ep.enabled_at);
        if already || now - since < limit {
            return Ok(());
        }
        // Only one node disables it (and writes the notice and the event), all in one
        // transaction: a disabled endpoint always has its notice and its event.
        let txn = starling_core::db::begin_write(&self.db).await?;
        let r = webhook_endpoint_state::Entity::update_many()
            .col_expr(
                webhook_endpoint_state::Column::DisabledAt,
                Expr::value(Some(now)),
            )
            .filter(webhook_endpoint_state::Column::AppId.eq(app))
            .filter(webhook_endpoint_state::Column::EndpointId.eq(&ep.id))
            .filter(
                Condition::any()
                    .add(webhook_endpoint_state::Column::DisabledAt.is_null())
                    .add(webhook_endpoint_state::Column::DisabledAt.lte(ep.enabled_at)),
            )
            .exec(&txn)
            .await?;
        if r.rows_affected == 0 {
            return Ok(());
        }
        tracing::warn!(app_id = app, endpoint_id = %ep.id, %since, "webhook endpoint disabled after failing too long");
        metrics::counter!("starling_webhook_endpoints_disabled_total").increment(1);
        let reason = format!(
            "every delivery failed since {} ({} s)",
            since.to_rfc3339(),
            (now - since).num_seconds()
        );
        let tenant = self
            .directory
            .app(&AppId::from_trusted(app.to_owned()))
            .map(|c| c.tenant_id.to_string())
            .unwrap_or_default();
        webhook_notification::ActiveModel {
            app_id: Set(app.to_owned()),
            id: Set(format!("ntf_{}", ulid::Ulid::new().to_string().to_lowercase())),
            tenant_id: Set(tenant),
            endpoint_id: Set(ep.id.clone()),
            kind: Set("endpoint_disabled".into()),
            subject: Set(format!("Starling: webhook endpoint {} was disabled", ep.id)),
            body: Set(format!(
                "Your webhook endpoint {id} ({url}) of app {app} failed every delivery since {since} and was disabled.\n\n\
                 Events meanwhile are kept: fix the endpoint, enable it again (PATCH …/webhook-endpoints/{id} with {{\"enabled\": true}}), \
                 then replay what it missed (POST /v1/webhooks/replay with {{\"endpoint_id\": \"{id}\", \"since\": \"{since}\"}}).\n",
                id = ep.id,
                url = ep.url,
                since = since.to_rfc3339(),
            )),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        self.emit(
            &txn,
            app,
            "webhook.endpoint_disabled",
            &EndpointDisabledData {
                endpoint_id: ep.id.clone(),
                url: ep.url.clone(),
                failing_since: since,
                reason,
            },
        )
        .await?;
        self.commit_events(txn).await?;
        Ok(())
    }
}

//! The dispatcher of a node: takes due deliveries under a lease (so nodes share the work and a
//! dead node's deliveries are taken over when its lease ends), POSTs them, records each attempt
//! and moves the delivery on: delivered, retried later, or dead-lettered.
//!
//! Ordered endpoints get one delivery at a time, the oldest pending first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};
use starling_core::id::AppId;

use super::catalog::EndpointDisabledData;
use super::{signing_secrets, webhook_attempt, webhook_delivery, webhook_endpoint_state};
use crate::entity::{webhook_event, webhook_notification};
use crate::service::{Messaging, Result, now};

/// Runs the dispatcher until the process ends.
pub async fn run(m: Messaging) {
    let permits = Arc::new(tokio::sync::Semaphore::new(m.webhooks.cfg.concurrency));
    let poll = Duration::from_millis(m.webhooks.cfg.poll_interval_ms);
    loop {
        let free = permits.available_permits();
        let n = if free == 0 {
            0
        } else {
            match m.dispatch_once(free.min(500), &permits).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e.message, "webhook dispatch failed; retrying");
                    0
                }
            }
        };
        if n == 0 || permits.available_permits() == 0 {
            tokio::select! {
                _ = m.webhooks.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

impl Messaging {
    /// Claims up to `max` due deliveries and starts them; returns how many.
    async fn dispatch_once(
        &self,
        max: usize,
        permits: &Arc<tokio::sync::Semaphore>,
    ) -> Result<usize> {
        let cfg = &self.webhooks.cfg;
        let now = now();
        let free = Condition::any()
            .add(webhook_delivery::Column::LeaseUntil.is_null())
            .add(webhook_delivery::Column::LeaseUntil.lt(now));
        // Across apps: the dispatcher is cell infrastructure; each delivery is then handled
        // within its own app (and only for apps this node serves).
        let due = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Status.eq("pending"))
            .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
            .filter(free.clone())
            .order_by_asc(webhook_delivery::Column::NextAttemptAt)
            .limit(max as u64)
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut eps = HashMap::new();
        let mut keep = Vec::new();
        let mut first_of: HashMap<(String, String), Option<String>> = HashMap::new();
        for d in due {
            let app = AppId::from_trusted(d.app_id.clone());
            let Some(cfg) = self.directory.app(&app) else {
                continue;
            };
            let ep = cfg.webhooks.iter().find(|e| e.id == d.endpoint_id).cloned();
            if let Some(ep) = &ep
                && ep.ordered
            {
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
                        .one(&self.db)
                        .await?;
                    first_of.insert(key.clone(), first);
                }
                if first_of[&key].as_deref() != Some(d.id.as_str()) {
                    continue;
                }
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
                .exec_with_returning(&self.db)
                .await?;
            claimed.extend(got);
        }
        let n = claimed.len();
        // The events' bodies, and the endpoints' health, in one query each per app.
        let mut bodies: HashMap<(String, String), Arc<str>> = HashMap::new();
        let mut disabled: HashMap<(String, String), webhook_endpoint_state::Model> = HashMap::new();
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
                .all(&self.db)
                .await?
            {
                bodies.insert((app.clone(), e.id), Arc::from(e.payload));
            }
            for s in webhook_endpoint_state::Entity::find()
                .filter(webhook_endpoint_state::Column::AppId.eq(&app))
                .filter(webhook_endpoint_state::Column::DisabledAt.is_not_null())
                .all(&self.db)
                .await?
            {
                disabled.insert((app.clone(), s.endpoint_id.clone()), s);
            }
        }
        for d in claimed {
            let ep = eps.remove(&d.id).flatten();
            let body = bodies.get(&(d.app_id.clone(), d.event_id.clone())).cloned();
            let auto_off = ep.as_ref().is_some_and(|e| {
                disabled
                    .get(&(d.app_id.clone(), e.id.clone()))
                    .and_then(|s| s.disabled_at)
                    .is_some_and(|at| at > e.enabled_at)
            });
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let m = self.clone();
            tokio::spawn(async move {
                if let Err(e) = m.attempt(d, ep, body, auto_off).await {
                    tracing::warn!(error = %e.message, "recording a webhook attempt failed; the lease will run out and it is tried again");
                }
                // A free slot: take the next due delivery now, not at the next poll.
                drop(permit);
                m.webhooks.wake();
            });
        }
        Ok(n)
    }

    async fn finish(&self, d: &webhook_delivery::Model, status: &str, note: &str) -> Result<()> {
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::Status, Expr::value(status))
            .col_expr(
                webhook_delivery::Column::LeaseUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(
                webhook_delivery::Column::LastError,
                Expr::value(Some(note.to_owned())),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now()))
            .filter(webhook_delivery::Column::AppId.eq(&d.app_id))
            .filter(webhook_delivery::Column::Id.eq(&d.id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn attempt(
        &self,
        d: webhook_delivery::Model,
        ep: Option<starling_core::appconfig::WebhookEndpointConfig>,
        body: Option<Arc<str>>,
        auto_off: bool,
    ) -> Result<()> {
        let cfg = &self.webhooks.cfg;
        let Some(ep) = ep else {
            return self.finish(&d, "skipped", "the endpoint was removed").await;
        };
        if !ep.enabled || auto_off {
            return self.finish(&d, "skipped", "the endpoint is disabled").await;
        }
        let Some(body) = body else {
            return self.finish(&d, "skipped", "the event is gone").await;
        };
        if let Some(r) = ep.rate_limit_per_second
            && !self.webhooks.allow(&ep.id, r)
        {
            // Not an attempt: try again shortly, without counting it.
            let later = now() + chrono::Duration::milliseconds((1000 / r.max(1)).max(20) as i64);
            webhook_delivery::Entity::update_many()
                .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(later))
                .col_expr(
                    webhook_delivery::Column::LeaseUntil,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                )
                .filter(webhook_delivery::Column::AppId.eq(&d.app_id))
                .filter(webhook_delivery::Column::Id.eq(&d.id))
                .exec(&self.db)
                .await?;
            return Ok(());
        }
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
        webhook_attempt::ActiveModel {
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
        }
        .insert(&self.db)
        .await?;
        let attempts = d.attempts + 1;
        let error = sent
            .error
            .clone()
            .or_else(|| (!ok).then(|| format!("answered {}", sent.status.unwrap_or(0))));
        let (status, next) = if ok {
            ("delivered", now())
        } else {
            match cfg.retry_schedule_secs.get(d.attempts as usize) {
                Some(secs) => (
                    "pending",
                    now() + chrono::Duration::from_std(cfg.scaled(*secs)).unwrap_or_default(),
                ),
                None => ("dead", now()),
            }
        };
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::Status, Expr::value(status))
            .col_expr(webhook_delivery::Column::Attempts, Expr::value(attempts))
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next))
            .col_expr(
                webhook_delivery::Column::LeaseUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(
                webhook_delivery::Column::LastStatusCode,
                Expr::value(sent.status.map(i32::from)),
            )
            .col_expr(webhook_delivery::Column::LastError, Expr::value(error))
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now()))
            .filter(webhook_delivery::Column::AppId.eq(&d.app_id))
            .filter(webhook_delivery::Column::Id.eq(&d.id))
            .exec(&self.db)
            .await?;
        if status == "dead" {
            metrics::counter!("starling_webhook_dead_letters_total").increment(1);
        }
        self.endpoint_health(&d.app_id, &ep, ok).await?;
        Ok(())
    }

    /// Tracks how long an endpoint has been failing; disables it after `disable_after_secs`.
    async fn endpoint_health(
        &self,
        app: &str,
        ep: &starling_core::appconfig::WebhookEndpointConfig,
        ok: bool,
    ) -> Result<()> {
        if ok {
            webhook_endpoint_state::Entity::update_many()
                .col_expr(
                    webhook_endpoint_state::Column::FailingSince,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                )
                .filter(webhook_endpoint_state::Column::AppId.eq(app))
                .filter(webhook_endpoint_state::Column::EndpointId.eq(&ep.id))
                .filter(webhook_endpoint_state::Column::FailingSince.is_not_null())
                .exec(&self.db)
                .await?;
            return Ok(());
        }
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
        // Only one node disables it (and writes the notice and the event).
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
            .exec(&self.db)
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
        .insert(&self.db)
        .await?;
        self.emit_after(
            app,
            "webhook.endpoint_disabled",
            &EndpointDisabledData {
                endpoint_id: ep.id.clone(),
                url: ep.url.clone(),
                failing_since: since,
                reason,
            },
        )
        .await;
        Ok(())
    }
}

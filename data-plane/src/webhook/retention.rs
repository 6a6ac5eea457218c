//! Forgetting old webhook history. An event that nothing is due for any more (each of its
//! deliveries delivered, dead-lettered or skipped) is deleted with its deliveries and attempts
//! once it is older than `gateway.webhooks.retention_secs`; an event with a delivery still
//! pending (retrying, or queued by a replay) stays whatever its age.
//!
//! Every delivering node prunes every `prune_interval_secs`, app by app (each query uses the
//! app's own index, as everywhere else) and in batches (no long transaction holds the tables).
//! Several nodes pruning at once only find less to delete.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{webhook_attempt, webhook_delivery, webhook_event};
use crate::service::{Messaging, Result, now};
use crate::store::scoped;

/// Events deleted per transaction.
const BATCH: u64 = 500;

/// Runs until the process ends: prunes now, then every `prune_interval_secs`.
pub(crate) async fn run(m: Messaging) {
    let cfg = m.webhooks.cfg.clone();
    if cfg.retention_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.prune_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = now() - chrono::Duration::seconds(cfg.retention_secs as i64);
        match m.prune_webhooks(before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(events = n, %before, "old webhook events pruned");
                metrics::counter!("starling_webhook_events_pruned_total").increment(n);
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "pruning webhook events failed; retrying later")
            }
        }
    }
}

impl Messaging {
    /// Deletes the events of the cell's apps recorded before `before` that nothing is due for
    /// any more, with their deliveries and attempts. Returns how many events went.
    pub async fn prune_webhooks(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut total = 0;
        for app in self.directory.app_ids() {
            loop {
                let (gone, full) = self.prune_app(&app, before).await?;
                total += gone;
                if !full {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// One batch of one app: how many events went, and whether the batch was full (there may
    /// be more).
    async fn prune_app(&self, app: &str, before: DateTime<Utc>) -> Result<(u64, bool)> {
        let pending = || {
            Query::select()
                .column(webhook_delivery::Column::EventId)
                .from(webhook_delivery::Entity)
                .and_where(webhook_delivery::Column::AppId.eq(app))
                .and_where(webhook_delivery::Column::Status.eq("pending"))
                .to_owned()
        };
        let ids: Vec<String> = scoped::<webhook_event::Entity>(app)
            .filter(webhook_event::Column::CreatedAt.lt(before))
            .filter(webhook_event::Column::Id.not_in_subquery(pending()))
            .select_only()
            .column(webhook_event::Column::Id)
            .order_by_asc(webhook_event::Column::CreatedAt)
            .limit(BATCH)
            .into_tuple()
            .all(&self.db)
            .await?;
        if ids.is_empty() {
            return Ok((0, false));
        }
        let txn = starling_core::db::begin_write(&self.db).await?;
        // The events first, checking again that nothing became due for them (a replay).
        let gone = webhook_event::Entity::delete_many()
            .filter(webhook_event::Column::AppId.eq(app))
            .filter(webhook_event::Column::Id.is_in(ids.clone()))
            .filter(webhook_event::Column::Id.not_in_subquery(pending()))
            .exec(&txn)
            .await?
            .rows_affected;
        // Then what belonged to the events that went (an event kept keeps its history).
        let kept = || {
            Query::select()
                .column(webhook_event::Column::Id)
                .from(webhook_event::Entity)
                .and_where(webhook_event::Column::AppId.eq(app))
                .and_where(webhook_event::Column::Id.is_in(ids.clone()))
                .to_owned()
        };
        webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::AppId.eq(app))
            .filter(webhook_delivery::Column::EventId.is_in(ids.clone()))
            .filter(webhook_delivery::Column::EventId.not_in_subquery(kept()))
            .exec(&txn)
            .await?;
        webhook_attempt::Entity::delete_many()
            .filter(webhook_attempt::Column::AppId.eq(app))
            .filter(webhook_attempt::Column::EventId.is_in(ids.clone()))
            .filter(webhook_attempt::Column::EventId.not_in_subquery(kept()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok((gone, ids.len() as u64 == BATCH))
    }
}

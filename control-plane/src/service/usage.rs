//! Usage aggregation, usage queries and quota threshold events.
//!
//! Cells send [`UsageReport`]s (see `starling_core::usage`). [`ControlPlane::record_usage`]
//! stores one in a transaction that first records its id: a report seen before changes nothing,
//! so re-sent and redelivered reports count once. Figures are kept per app, hour and node;
//! monthly figures are sums over the month's hours (peak connections: the largest sum over nodes
//! in one hour; monthly active users: distinct users recorded for the month).
//!
//! After a report is stored, the app's month is compared with its limits; passing 80 % or
//! 100 % of a limit records a [`QuotaEventOut`] once per app, limit, threshold and period
//! (a unique index makes it once even with concurrent aggregators), then calls the quota hook
//! (where webhooks plug in).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};
use serde::{Deserialize, Serialize};
use starling_core::clock::{month_start, next_month_start, parse_period, period_of};
use starling_core::http::{Page, PageParams};
use starling_core::id::{AppId, TenantId};
use starling_core::usage::{UsageFeed, UsageReport};
use utoipa::{IntoParams, ToSchema};

use super::{ControlPlane, Result, invalid};
use crate::entity::app;
use crate::entity::usage::{active_user, hourly, quota_event, report};
use crate::store::app_scoped;

/// Called for every quota threshold event, once, after it is recorded.
pub type QuotaHook = Arc<dyn Fn(&QuotaEventOut) + Send + Sync>;

/// Usage figures of a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageFigures {
    /// Messages sent.
    pub messages: u64,
    /// Server API requests.
    pub api_calls: u64,
    /// Distinct users active (connected or sending) in the calendar month.
    pub monthly_active_users: u64,
    /// Most WebSocket connections open at once (per hour, summed over the cell's nodes).
    pub peak_connections: u64,
    /// Bytes of message content stored in the period.
    pub stored_bytes: u64,
}

/// One month of an app's usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MonthlyUsage {
    /// The calendar month, `YYYY-MM` (UTC).
    #[schema(example = "2026-11")]
    pub period: String,
    /// The figures.
    pub usage: UsageFigures,
}

/// One limit of the plan and how much of it is used.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaStatus {
    /// The limit (`messages_per_month`, `monthly_active_users`, `concurrent_connections`).
    pub name: String,
    /// The limit's value.
    pub limit: u64,
    /// Used so far in the period.
    pub used: u64,
    /// `used` as a percentage of `limit` (may pass 100 for soft limits).
    pub percent: u64,
    /// A soft limit warns; a hard one refuses with `quota_exceeded` when reached.
    pub soft: bool,
}

/// An app's usage: the current period, its quotas, and earlier months.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppUsageOut {
    /// The app.
    pub app_id: AppId,
    /// The current period, `YYYY-MM`.
    pub period: String,
    /// When the current period started.
    pub period_start: DateTime<Utc>,
    /// When monthly quotas reset (the next period starts).
    pub resets_at: DateTime<Utc>,
    /// The current period's figures so far.
    pub usage: UsageFigures,
    /// Limits of the plan that usage counts against.
    pub quotas: Vec<QuotaStatus>,
    /// Earlier months, newest first.
    pub history: Vec<MonthlyUsage>,
}

/// Which months to show.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// How many earlier months to include (0..=24, default 6).
    pub months: Option<u32>,
}

/// One hour of an app's usage (all nodes).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HourlyUsage {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Messages sent.
    pub messages: u64,
    /// Server API requests.
    pub api_calls: u64,
    /// Most WebSocket connections open at once (summed over nodes).
    pub peak_connections: u64,
    /// Bytes of message content stored.
    pub stored_bytes: u64,
}

/// A range of hours.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HourlyQuery {
    /// From this instant (RFC 3339; default: 24 hours ago).
    pub from: Option<DateTime<Utc>>,
    /// Until this instant, exclusive (default: now). At most 31 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

/// Hours of usage, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HourlyUsageOut {
    /// The hours that had usage.
    pub hours: Vec<HourlyUsage>,
}

/// A quota threshold passed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaEventOut {
    /// Event id.
    pub id: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The app.
    pub app_id: AppId,
    /// The period, `YYYY-MM`.
    pub period: String,
    /// The limit.
    pub limit_name: String,
    /// 80 or 100 (percent of the limit).
    pub threshold: u32,
    /// Usage when it was noticed.
    pub used: u64,
    /// The limit's value.
    pub limit: u64,
    /// Whether the limit is soft (warns only).
    pub soft: bool,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Quota events of an app, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaEventsOut {
    /// The events.
    pub data: Vec<QuotaEventOut>,
}

impl From<quota_event::Model> for QuotaEventOut {
    fn from(m: quota_event::Model) -> Self {
        QuotaEventOut {
            id: m.id,
            tenant_id: TenantId::from_trusted(m.tenant_id),
            app_id: AppId::from_trusted(m.app_id),
            period: m.period,
            limit_name: m.limit_name,
            threshold: m.threshold.max(0) as u32,
            used: m.used.max(0) as u64,
            limit: m.limit_value.max(0) as u64,
            soft: m.soft,
            created_at: m.created_at,
        }
    }
}

fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Sums hourly rows into per-period figures (MAU filled in separately).
fn figures_by_period(rows: &[hourly::Model]) -> BTreeMap<String, UsageFigures> {
    let mut per_hour: BTreeMap<DateTime<Utc>, (u64, u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let e = per_hour.entry(r.hour).or_default();
        e.0 += r.messages.max(0) as u64;
        e.1 += r.api_calls.max(0) as u64;
        e.2 += r.peak_connections.max(0) as u64;
        e.3 += r.stored_bytes.max(0) as u64;
    }
    let mut out: BTreeMap<String, UsageFigures> = BTreeMap::new();
    for (hour, (m, a, p, b)) in per_hour {
        let f = out.entry(period_of(hour)).or_default();
        f.messages += m;
        f.api_calls += a;
        f.peak_connections = f.peak_connections.max(p);
        f.stored_bytes += b;
    }
    out
}

impl ControlPlane {
    /// Calls `hook` for every quota threshold event from now on.
    pub fn with_quota_hook(mut self, hook: QuotaHook) -> Self {
        self.quota_hook = Some(hook);
        self
    }

    /// Takes usage reports from `feed` in a background task and aggregates them; a report is
    /// confirmed only once stored (else it comes again).
    pub async fn consume_usage(&self, feed: Arc<dyn UsageFeed>) -> anyhow::Result<()> {
        let mut rx = feed.subscribe().await?;
        let cp = self.clone();
        tokio::spawn(async move {
            while let Some((r, from, ack)) = rx.recv().await {
                let ok = match cp.record_usage_from(from.as_deref(), &r).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, report = %r.id, "storing a usage report failed; it will come again");
                        false
                    }
                };
                let _ = ack.send(ok);
            }
        });
        Ok(())
    }

    /// Aggregates one report. Returns `false` when it was seen before (or its app is gone):
    /// nothing changed.
    pub async fn record_usage(&self, r: &UsageReport) -> Result<bool> {
        self.record_usage_from(None, r).await
    }

    /// Aggregates one report that the cell `from` sent (as its transport says: the cell's own
    /// usage topic), refusing it — `false`, nothing changed, counted in
    /// `starling_usage_reports_refused_total` — when the app is not placed on that cell: a cell
    /// bills only its own apps. `None`: an in-process node, trusted.
    pub async fn record_usage_from(&self, from: Option<&str>, r: &UsageReport) -> Result<bool> {
        let Some(a) = app::Entity::find()
            .filter(app::Column::Id.eq(r.app_id.as_str()))
            .one(&self.db)
            .await?
        else {
            tracing::debug!(app_id = %r.app_id, "usage of an unknown app dropped");
            return Ok(false);
        };
        if let Some(cell) = from
            && !a.cluster_id.eq_ignore_ascii_case(cell)
        {
            metrics::counter!("starling_usage_reports_refused_total").increment(1);
            tracing::warn!(
                app_id = %r.app_id,
                cell,
                placed_on = a.cluster_id,
                "usage report from a cell the app is not placed on refused"
            );
            return Ok(false);
        }
        let tenant = a.tenant_id.clone();
        let hour = starling_core::clock::hour_start(r.hour);
        let period = period_of(hour);
        let now = self.clock.now();
        let txn = starling_core::db::begin_write(&self.db).await?;
        let first = report::Entity::insert(report::ActiveModel {
            id: Set(r.id.clone()),
            tenant_id: Set(tenant.clone()),
            app_id: Set(a.id.clone()),
            received_at: Set(super::now()),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(first, TryInsertResult::Inserted(n) if n > 0) {
            txn.rollback().await?;
            metrics::counter!("starling_usage_reports_duplicate_total").increment(1);
            return Ok(false);
        }
        let add = |c: hourly::Column| {
            sea_orm::sea_query::ExprTrait::add(
                Expr::col((hourly::Entity, c)),
                Expr::cust(format!("excluded.{}", sea_orm::IdenStatic::as_str(&c))),
            )
        };
        hourly::Entity::insert(hourly::ActiveModel {
            tenant_id: Set(tenant.clone()),
            app_id: Set(a.id.clone()),
            hour: Set(hour),
            node_id: Set(r.node_id.clone()),
            messages: Set(to_i64(r.messages)),
            api_calls: Set(to_i64(r.api_calls)),
            peak_connections: Set(to_i64(r.peak_connections)),
            stored_bytes: Set(to_i64(r.stored_bytes)),
        })
        .on_conflict(
            OnConflict::columns([
                hourly::Column::TenantId,
                hourly::Column::AppId,
                hourly::Column::Hour,
                hourly::Column::NodeId,
            ])
            .value(hourly::Column::Messages, add(hourly::Column::Messages))
            .value(hourly::Column::ApiCalls, add(hourly::Column::ApiCalls))
            .value(
                hourly::Column::StoredBytes,
                add(hourly::Column::StoredBytes),
            )
            .value(
                hourly::Column::PeakConnections,
                Expr::cust(
                    "CASE WHEN excluded.peak_connections > usage_hourly.peak_connections \
                     THEN excluded.peak_connections ELSE usage_hourly.peak_connections END",
                ),
            )
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        for chunk in r.active_users.chunks(500) {
            let rows = chunk.iter().map(|u| active_user::ActiveModel {
                tenant_id: Set(tenant.clone()),
                app_id: Set(a.id.clone()),
                period: Set(period.clone()),
                user_id: Set(u.clone()),
                first_seen_at: Set(super::now()),
            });
            active_user::Entity::insert_many(rows)
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        metrics::counter!("starling_usage_reports_total").increment(1);
        // Thresholds are about the current period only: a late report of an old month raises
        // no event.
        if period == period_of(now)
            && let Err(e) = self
                .check_thresholds(&TenantId::from_trusted(tenant), &r.app_id)
                .await
        {
            tracing::warn!(error = %e, app_id = %r.app_id, "checking quota thresholds failed");
        }
        Ok(true)
    }

    async fn period_figures(
        &self,
        tenant: &TenantId,
        app: &AppId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<String, UsageFigures>> {
        let rows = app_scoped::<hourly::Entity>(tenant, app)
            .filter(hourly::Column::Hour.gte(from))
            .filter(hourly::Column::Hour.lt(to))
            .all(&self.db)
            .await?;
        let mut out = figures_by_period(&rows);
        let mau: Vec<(String, i64)> = app_scoped::<active_user::Entity>(tenant, app)
            .filter(active_user::Column::Period.gte(period_of(from)))
            .filter(active_user::Column::Period.lte(period_of(to - Duration::seconds(1))))
            .select_only()
            .column(active_user::Column::Period)
            .column_as(active_user::Column::UserId.count(), "n")
            .group_by(active_user::Column::Period)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (p, n) in mau {
            out.entry(p).or_default().monthly_active_users = n.max(0) as u64;
        }
        Ok(out)
    }

    /// The limits of an app that usage counts against, with their use this period.
    async fn quota_status(
        &self,
        tenant: &TenantId,
        app: &AppId,
        f: &UsageFigures,
    ) -> Result<Vec<QuotaStatus>> {
        let Some(cfg) = self.app_config(tenant.as_str(), app.as_str()).await? else {
            return Ok(vec![]);
        };
        let l = &cfg.limits;
        Ok([
            ("messages_per_month", l.messages_per_month, f.messages),
            (
                "monthly_active_users",
                l.monthly_active_users,
                f.monthly_active_users,
            ),
            (
                "concurrent_connections",
                l.concurrent_connections,
                f.peak_connections,
            ),
        ]
        .into_iter()
        .filter_map(|(name, limit, used)| {
            let limit = limit?;
            Some(QuotaStatus {
                name: name.to_owned(),
                limit,
                used,
                percent: used.saturating_mul(100).checked_div(limit).unwrap_or(100),
                soft: name == "concurrent_connections" || cfg.soft_limits.iter().any(|s| s == name),
            })
        })
        .collect())
    }

    async fn check_thresholds(&self, tenant: &TenantId, app: &AppId) -> Result<()> {
        let now = self.clock.now();
        let period = period_of(now);
        let figures = self
            .period_figures(tenant, app, month_start(now), next_month_start(now))
            .await?
            .remove(&period)
            .unwrap_or_default();
        for q in self.quota_status(tenant, app, &figures).await? {
            for threshold in [80u64, 100] {
                if q.used.saturating_mul(100) < q.limit.saturating_mul(threshold) {
                    continue;
                }
                let m = quota_event::ActiveModel {
                    id: Set(format!("qev_{}", ulid::Ulid::new())),
                    tenant_id: Set(tenant.to_string()),
                    app_id: Set(app.to_string()),
                    period: Set(period.clone()),
                    limit_name: Set(q.name.clone()),
                    threshold: Set(threshold as i32),
                    used: Set(to_i64(q.used)),
                    limit_value: Set(to_i64(q.limit)),
                    soft: Set(q.soft),
                    created_at: Set(super::now()),
                };
                let r = quota_event::Entity::insert(m.clone())
                    .on_conflict_do_nothing_on([
                        quota_event::Column::TenantId,
                        quota_event::Column::AppId,
                        quota_event::Column::Period,
                        quota_event::Column::LimitName,
                        quota_event::Column::Threshold,
                    ])
                    .exec_without_returning(&self.db)
                    .await?;
                if matches!(r, TryInsertResult::Inserted(n) if n > 0) {
                    let ev = QuotaEventOut::from(sea_orm::TryIntoModel::try_into_model(m)?);
                    tracing::info!(
                        app_id = %app,
                        limit = %ev.limit_name,
                        threshold,
                        used = ev.used,
                        "quota threshold passed"
                    );
                    metrics::counter!("starling_quota_threshold_events_total").increment(1);
                    if let Some(h) = &self.quota_hook {
                        h(&ev);
                    }
                }
            }
        }
        Ok(())
    }

    /// An app's usage: the current period with its quotas, and `months` earlier months.
    pub async fn app_usage(
        &self,
        tenant: &TenantId,
        app: &AppId,
        q: &UsageQuery,
    ) -> Result<AppUsageOut> {
        self.app_model(tenant, app).await?;
        let months = q.months.unwrap_or(6);
        if months > 24 {
            return Err(invalid("months", "must be 0..=24"));
        }
        let now = self.clock.now();
        let start = month_start(now);
        let mut from = start;
        for _ in 0..months {
            from = month_start(from - Duration::days(1));
        }
        let mut all = self
            .period_figures(tenant, app, from, next_month_start(now))
            .await?;
        let period = period_of(now);
        let usage = all.remove(&period).unwrap_or_default();
        let quotas = self.quota_status(tenant, app, &usage).await?;
        let mut history = Vec::new();
        let mut p = start;
        for _ in 0..months {
            p = month_start(p - Duration::days(1));
            let key = period_of(p);
            history.push(MonthlyUsage {
                usage: all.remove(&key).unwrap_or_default(),
                period: key,
            });
        }
        Ok(AppUsageOut {
            app_id: app.clone(),
            period,
            period_start: start,
            resets_at: next_month_start(now),
            usage,
            quotas,
            history,
        })
    }

    /// One month of an app's usage (`YYYY-MM`).
    pub async fn app_usage_month(
        &self,
        tenant: &TenantId,
        app: &AppId,
        period: &str,
    ) -> Result<MonthlyUsage> {
        self.app_model(tenant, app).await?;
        let start = parse_period(period).ok_or_else(|| invalid("period", "must be YYYY-MM"))?;
        let usage = self
            .period_figures(tenant, app, start, next_month_start(start))
            .await?
            .remove(period)
            .unwrap_or_default();
        Ok(MonthlyUsage {
            period: period.to_owned(),
            usage,
        })
    }

    /// An app's usage per hour.
    pub async fn app_usage_hourly(
        &self,
        tenant: &TenantId,
        app: &AppId,
        q: &HourlyQuery,
    ) -> Result<HourlyUsageOut> {
        self.app_model(tenant, app).await?;
        let to = q.to.unwrap_or_else(|| self.clock.now());
        let from = q.from.unwrap_or(to - Duration::hours(24));
        if from >= to {
            return Err(invalid("from", "must be before to"));
        }
        if to - from > Duration::days(31) {
            return Err(invalid("to", "must be at most 31 days after from"));
        }
        let rows = app_scoped::<hourly::Entity>(tenant, app)
            .filter(hourly::Column::Hour.gte(starling_core::clock::hour_start(from)))
            .filter(hourly::Column::Hour.lt(to))
            .order_by_asc(hourly::Column::Hour)
            .all(&self.db)
            .await?;
        let mut hours: Vec<HourlyUsage> = Vec::new();
        for r in rows {
            if hours.last().is_none_or(|h| h.hour != r.hour) {
                hours.push(HourlyUsage {
                    hour: r.hour,
                    messages: 0,
                    api_calls: 0,
                    peak_connections: 0,
                    stored_bytes: 0,
                });
            }
            let h = hours.last_mut().expect("pushed above");
            h.messages += r.messages.max(0) as u64;
            h.api_calls += r.api_calls.max(0) as u64;
            h.peak_connections += r.peak_connections.max(0) as u64;
            h.stored_bytes += r.stored_bytes.max(0) as u64;
        }
        Ok(HourlyUsageOut { hours })
    }

    /// An app's quota threshold events, newest first (at most 100).
    pub async fn quota_events(&self, tenant: &TenantId, app: &AppId) -> Result<QuotaEventsOut> {
        self.app_model(tenant, app).await?;
        let data = app_scoped::<quota_event::Entity>(tenant, app)
            .order_by_desc(quota_event::Column::CreatedAt)
            .limit(100)
            .all(&self.db)
            .await?
            .into_iter()
            .map(QuotaEventOut::from)
            .collect();
        Ok(QuotaEventsOut { data })
    }

    /// An app's quota threshold events, oldest first, a page at a time (the console's list).
    pub async fn list_quota_events(
        &self,
        tenant: &TenantId,
        app: &AppId,
        page: &PageParams,
    ) -> Result<Page<QuotaEventOut>> {
        self.app_model(tenant, app).await?;
        super::paginate(
            &self.db,
            app_scoped::<quota_event::Entity>(tenant, app),
            quota_event::Column::Id,
            page,
            QuotaEventOut::from,
            |e| e.id.as_str(),
        )
        .await
    }

    /// How many usage reports were aggregated for an app (tests and diagnostics).
    pub async fn usage_report_count(&self, tenant: &TenantId, app: &AppId) -> Result<u64> {
        Ok(report::Entity::find()
            .filter(report::Column::TenantId.eq(tenant.as_str()))
            .filter(report::Column::AppId.eq(app.as_str()))
            .count(&self.db)
            .await?)
    }
}

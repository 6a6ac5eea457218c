//! Metered usage of an app in the console: a calendar month's figures against the app's limits,
//! the month hour by hour, and quota threshold events. Everything comes from the control plane's
//! usage service (`starling_control_plane::service::usage`), the same figures the admin REST API
//! shows; readable by every role of the app's tenant.

use async_graphql::{ComplexObject, Context, ID, Result, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use starling_control_plane::service::usage::{
    HourlyQuery, HourlyUsage as CpHourlyUsage, QuotaEventOut, QuotaStatus, UsageFigures, UsageQuery,
};
use starling_core::clock::{next_month_start, parse_period};
use starling_core::http::{Page, PageParams, encode_cursor};
use starling_core::id::{AppId, TenantId};

use crate::Console;
use crate::error::Fail;
use crate::page::{self, Conn};
use crate::role::{Role, authorize};

/// One limit the month's usage counts against.
#[derive(SimpleObject, Clone, Debug)]
pub struct QuotaUse {
    /// The limit: `messages_per_month`, `monthly_active_users` or `concurrent_connections`.
    pub name: String,
    /// Its value (overrides over the plan: what the data plane enforces).
    pub limit: u64,
    /// Used so far this month (for `concurrent_connections`: the month's peak).
    pub used: u64,
    /// `used` as a percentage of `limit`; may pass 100 for a soft limit.
    pub percent: u64,
    /// A soft limit only warns; a hard one is refused with `quota_exceeded` once reached.
    pub soft: bool,
}

impl From<QuotaStatus> for QuotaUse {
    fn from(q: QuotaStatus) -> Self {
        QuotaUse {
            name: q.name,
            limit: q.limit,
            used: q.used,
            percent: q.percent,
            soft: q.soft,
        }
    }
}

/// An app's metered usage in one calendar month (UTC).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Usage {
    #[graphql(skip)]
    tenant: TenantId,
    #[graphql(skip)]
    app: AppId,
    /// The month, `YYYY-MM`.
    pub period: String,
    /// When the month started.
    pub period_start: DateTime<Utc>,
    /// When it ends: monthly quotas reset then.
    pub resets_at: DateTime<Utc>,
    /// Whether this is the month in progress (its figures are "so far").
    pub is_current: bool,
    /// Messages sent.
    pub messages: u64,
    /// Server API requests.
    pub api_calls: u64,
    /// Distinct end users active (connected or sending) in the month.
    pub monthly_active_users: u64,
    /// Most WebSocket connections open at once (per hour, summed over the cell's nodes).
    pub peak_connections: u64,
    /// Bytes of message content stored.
    pub stored_bytes: u64,
    /// The month in progress against the app's limits (only the limits that are set). Empty for
    /// other months: limits apply to the month in progress.
    pub quotas: Vec<QuotaUse>,
}

impl Usage {
    fn new(
        tenant: TenantId,
        app: AppId,
        period: String,
        start: DateTime<Utc>,
        is_current: bool,
        f: UsageFigures,
        quotas: Vec<QuotaStatus>,
    ) -> Self {
        Usage {
            tenant,
            app,
            period,
            period_start: start,
            resets_at: next_month_start(start),
            is_current,
            messages: f.messages,
            api_calls: f.api_calls,
            monthly_active_users: f.monthly_active_users,
            peak_connections: f.peak_connections,
            stored_bytes: f.stored_bytes,
            quotas: quotas.into_iter().map(Into::into).collect(),
        }
    }
}

/// One hour of an app's usage (all nodes of its cell).
#[derive(SimpleObject, Clone, Debug)]
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

impl From<CpHourlyUsage> for HourlyUsage {
    fn from(h: CpHourlyUsage) -> Self {
        HourlyUsage {
            hour: h.hour,
            messages: h.messages,
            api_calls: h.api_calls,
            peak_connections: h.peak_connections,
            stored_bytes: h.stored_bytes,
        }
    }
}

/// The cursor of an hour (its start, RFC 3339).
fn hour_key(h: &HourlyUsage) -> String {
    h.hour.to_rfc3339()
}

#[ComplexObject]
impl Usage {
    /// The month hour by hour, oldest first; only hours that had usage.
    #[graphql(complexity = "crate::limits::page_cost(first, child_complexity, 1)")]
    async fn hourly(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<HourlyUsage>> {
        authorize(ctx, self.tenant.as_str(), Role::Viewer).await?;
        let had_after = after.is_some();
        let p = page::params(first, after)?;
        let limit = p.limit.unwrap_or(page::DEFAULT_FIRST as u32) as u64;
        let bad_after = || Fail::field("after", "not a cursor returned by this API");
        let from = match PageParams::after(&p).map_err(|e| page::after_arg(e.into()))? {
            None => self.period_start,
            Some(k) => {
                let h = DateTime::parse_from_rfc3339(&k).map_err(|_| bad_after())?;
                // A cursor of another month cannot widen the range past this one.
                (h.with_timezone(&Utc) + Duration::hours(1)).max(self.period_start)
            }
        };
        let to = self.resets_at;
        let mut hours = Vec::new();
        if from < to {
            hours = console(ctx)
                .cp
                .app_usage_hourly(
                    &self.tenant,
                    &self.app,
                    &HourlyQuery {
                        from: Some(from),
                        to: Some(to),
                    },
                )
                .await
                .map_err(Fail::from)?
                .hours
                .into_iter()
                .take(limit as usize + 1)
                .map(HourlyUsage::from)
                .collect();
        }
        let more = hours.len() as u64 > limit;
        hours.truncate(limit as usize);
        let next_cursor = if more {
            hours.last().map(|h| encode_cursor(&hour_key(h)))
        } else {
            None
        };
        let page = Page {
            data: hours,
            next_cursor,
        };
        Ok(page::conn(page, hour_key, had_after))
    }
}

/// A quota threshold passed: 80 % or 100 % of a limit, recorded once per month.
#[derive(SimpleObject, Clone, Debug)]
pub struct QuotaEvent {
    /// Id (`qev_…`).
    pub id: ID,
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The limit (`messages_per_month`, …).
    pub limit_name: String,
    /// 80 or 100 (percent of the limit).
    pub threshold: u32,
    /// Usage when it was noticed.
    pub used: u64,
    /// The limit's value then.
    pub limit: u64,
    /// Whether the limit is soft (warns only).
    pub soft: bool,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl From<QuotaEventOut> for QuotaEvent {
    fn from(e: QuotaEventOut) -> Self {
        QuotaEvent {
            id: ID(e.id),
            period: e.period,
            limit_name: e.limit_name,
            threshold: e.threshold,
            used: e.used,
            limit: e.limit,
            soft: e.soft,
            created_at: e.created_at,
        }
    }
}

fn console<'a>(ctx: &'a Context<'_>) -> &'a Console {
    ctx.data_unchecked::<Console>()
}

/// `App.usage(period)`: the month in progress when `period` is omitted.
pub async fn usage(
    ctx: &Context<'_>,
    tenant: &str,
    app: &AppId,
    period: Option<String>,
) -> Result<Usage, Fail> {
    let a = authorize(ctx, tenant, Role::Viewer).await?;
    let cp = &console(ctx).cp;
    let current = cp
        .app_usage(&a.tenant, app, &UsageQuery { months: Some(0) })
        .await?;
    match period {
        Some(p) if p != current.period => {
            let start = parse_period(&p)
                .ok_or_else(|| Fail::field("period", "must be a month, YYYY-MM (UTC)"))?;
            let m = cp.app_usage_month(&a.tenant, app, &p).await?;
            Ok(Usage::new(
                a.tenant,
                app.clone(),
                m.period,
                start,
                false,
                m.usage,
                vec![],
            ))
        }
        _ => Ok(Usage::new(
            a.tenant,
            app.clone(),
            current.period,
            current.period_start,
            true,
            current.usage,
            current.quotas,
        )),
    }
}

/// `App.quotaEvents(first, after)`: oldest first.
pub async fn quota_events(
    ctx: &Context<'_>,
    tenant: &str,
    app: &AppId,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Conn<QuotaEvent>, Fail> {
    let a = authorize(ctx, tenant, Role::Viewer).await?;
    let had_after = after.is_some();
    let p = page::params(first, after)?;
    let page = console(ctx)
        .cp
        .list_quota_events(&a.tenant, app, &p)
        .await
        .map_err(|e| page::after_arg(e.into()))?
        .map(QuotaEvent::from);
    Ok(page::conn(page, |e| e.id.to_string(), had_after))
}

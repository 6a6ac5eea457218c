//! Usage metering and quota enforcement on a node.
//!
//! Counting: messages, API calls, active users, peak connections and stored bytes per app and
//! hour are counted in memory and cut into [`UsageReport`]s every flush interval. A cut report
//! waits in a queue until the usage feed confirms it, and is re-sent with the same id until
//! then: the control plane counts each id once.
//!
//! Enforcement: `messages_per_month` and `monthly_active_users` are checked against the cell's
//! shared counters ([`QuotaStore`]) with the limits from the app configuration the node caches,
//! so it goes on while the control plane is down. A hard limit refuses with `quota_exceeded`,
//! naming the limit and when it resets; a limit the plan marks soft (`soft_limits`) is counted
//! and logged, never refused. Periods are calendar months (UTC) of an injectable [`Clock`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use starling_core::appconfig::AppConfig;
use starling_core::clock::{Clock, hour_start, next_month_start, period_of};
use starling_core::error::{ApiError, ErrorCode};
use starling_core::id::AppId;
use starling_core::usage::{UsageFeed, UsageReport};

use crate::quota::{QuotaStore, Taken};

#[derive(Default)]
struct Counts {
    messages: u64,
    api_calls: u64,
    users: HashSet<String>,
    peak: u64,
    bytes: u64,
}

#[derive(Default)]
struct State {
    buckets: HashMap<(String, DateTime<Utc>), Counts>,
    live: HashMap<String, u64>,
}

/// Counts usage and enforces monthly quotas for one node.
pub struct Metering {
    node_id: String,
    clock: Arc<dyn Clock>,
    quotas: Arc<dyn QuotaStore>,
    feed: Option<Arc<dyn UsageFeed>>,
    state: Mutex<State>,
    pending: tokio::sync::Mutex<VecDeque<UsageReport>>,
}

/// Reports kept at most while the feed is down (oldest dropped first, loudly).
const MAX_PENDING: usize = 100_000;

/// The `quota_exceeded` refusal for limit `name`.
/// A monthly quota counter that reached one of the thresholds customers are told about by the
/// `usage.threshold_reached` webhook: 80 % (rounded up) and 100 % of the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// `messages` or `monthly_active_users`.
    pub metric: &'static str,
    /// The threshold reached (a count).
    pub threshold: u64,
    /// The limit it is a share of.
    pub limit: u64,
    /// The first instant of the month it counts in.
    pub period_start: DateTime<Utc>,
}

impl Crossing {
    /// The crossing that count `n` makes, if it is exactly a threshold.
    pub fn of(metric: &'static str, limit: u64, n: u64, now: DateTime<Utc>) -> Option<Self> {
        let eighty = (limit * 8).div_ceil(10).max(1);
        (n == eighty || n == limit).then(|| Crossing {
            metric,
            threshold: n,
            limit,
            period_start: starling_core::clock::month_start(now),
        })
    }
}

pub fn quota_error(name: &str, limit: u64, now: DateTime<Utc>) -> ApiError {
    let resets = next_month_start(now);
    let mut e = ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "quota {name} of {limit} reached for period {}; it resets at {}",
            period_of(now),
            resets.to_rfc3339()
        ),
    );
    e.retry_after = Some((resets - now).num_seconds().max(1) as u64);
    e
}

impl Metering {
    /// Metering for node `node_id`; reports go to `feed` (none: counted and enforced, not sent).
    pub fn new(
        node_id: &str,
        clock: Arc<dyn Clock>,
        quotas: Arc<dyn QuotaStore>,
        feed: Option<Arc<dyn UsageFeed>>,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            clock,
            quotas,
            feed,
            state: Mutex::new(State::default()),
            pending: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// The clock periods are taken from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn with_bucket(&self, app: &str, f: impl FnOnce(&mut Counts, u64)) {
        let hour = hour_start(self.clock.now());
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let live = s.live.get(app).copied().unwrap_or(0);
        let c = s.buckets.entry((app.to_owned(), hour)).or_default();
        f(c, live);
    }

    /// Counts a stored message of `bytes` content bytes, sent by `user` (none: the server).
    pub fn record_message(&self, app: &str, user: Option<&str>, bytes: u64) {
        self.with_bucket(app, |c, _| {
            c.messages += 1;
            c.bytes += bytes;
            if let Some(u) = user {
                c.users.insert(u.to_owned());
            }
        });
    }

    /// Counts a server API request.
    pub fn record_api_call(&self, app: &str) {
        self.with_bucket(app, |c, _| c.api_calls += 1);
    }

    /// Counts a WebSocket connection opened by `user`.
    pub fn connection_opened(&self, app: &str, user: &str) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            *s.live.entry(app.to_owned()).or_default() += 1;
        }
        self.with_bucket(app, |c, live| {
            c.users.insert(user.to_owned());
            c.peak = c.peak.max(live);
        });
    }

    /// A WebSocket connection closed.
    pub fn connection_closed(&self, app: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.live.get_mut(app) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.live.remove(app);
            }
        }
    }

    fn is_soft(cfg: &AppConfig, name: &str) -> bool {
        cfg.soft_limits.iter().any(|s| s == name)
    }

    /// Takes one message from the app's monthly quota, or refuses with `quota_exceeded`. Tells
    /// when this message is the one that reached 80 % or 100 % of the limit (the shared counter
    /// hands each count to exactly one caller, so each threshold is reported once per period).
    pub async fn admit_message(&self, cfg: &AppConfig) -> Result<Option<Crossing>, ApiError> {
        let Some(limit) = cfg.limits.messages_per_month else {
            return Ok(None);
        };
        let now = self.clock.now();
        let soft = Self::is_soft(cfg, "messages_per_month");
        let key = format!("{}:{}:messages", cfg.app_id, period_of(now));
        match self.quotas.incr(&key, (!soft).then_some(limit)).await {
            Ok(Taken::Counted(n)) => {
                if n > limit {
                    tracing::warn!(app_id = %cfg.app_id, used = n, limit, "soft quota messages_per_month passed");
                    metrics::counter!("starling_quota_soft_exceeded_total", "limit" => "messages_per_month").increment(1);
                }
                Ok(Crossing::of("messages", limit, n, now))
            }
            Ok(Taken::Refused(_)) => {
                metrics::counter!("starling_quota_refused_total", "limit" => "messages_per_month")
                    .increment(1);
                Err(quota_error("messages_per_month", limit, now))
            }
            Err(e) => {
                // Availability first, as with rate limits: a counter outage lets traffic through.
                tracing::warn!(error = %e, "quota counters unavailable; message allowed");
                Ok(None)
            }
        }
    }

    /// Counts `user` as active this month, or refuses with `quota_exceeded` when the app is at
    /// its `monthly_active_users` limit and the user was not active yet.
    /// Like [`Metering::admit_message`], tells when this user reached a threshold.
    pub async fn admit_user(
        &self,
        cfg: &AppConfig,
        user: &str,
    ) -> Result<Option<Crossing>, ApiError> {
        let Some(limit) = cfg.limits.monthly_active_users else {
            return Ok(None);
        };
        let now = self.clock.now();
        let soft = Self::is_soft(cfg, "monthly_active_users");
        let key = format!("{}:{}:mau", cfg.app_id, period_of(now));
        match self
            .quotas
            .add_member(&key, user, (!soft).then_some(limit))
            .await
        {
            Ok(Taken::Counted(n)) => {
                if n > limit {
                    tracing::warn!(app_id = %cfg.app_id, used = n, limit, "soft quota monthly_active_users passed");
                    metrics::counter!("starling_quota_soft_exceeded_total", "limit" => "monthly_active_users").increment(1);
                }
                Ok(Crossing::of("monthly_active_users", limit, n, now))
            }
            Ok(Taken::Refused(_)) => {
                metrics::counter!("starling_quota_refused_total", "limit" => "monthly_active_users").increment(1);
                Err(quota_error("monthly_active_users", limit, now))
            }
            Err(e) => {
                tracing::warn!(error = %e, "quota counters unavailable; user allowed");
                Ok(None)
            }
        }
    }

    /// Cuts the counts so far into reports (queued) and sends the queue in order, stopping at
    /// the first failure (the rest, and the failed one, go again next time with the same ids).
    /// Returns how many reports were confirmed.
    pub async fn flush(&self) -> usize {
        let cut: Vec<UsageReport> = {
            let now_hour = hour_start(self.clock.now());
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // Apps with open connections report their current count as this hour's peak.
            let live: Vec<(String, u64)> = s.live.iter().map(|(a, n)| (a.clone(), *n)).collect();
            for (app, n) in live {
                let c = s.buckets.entry((app, now_hour)).or_default();
                c.peak = c.peak.max(n);
            }
            s.buckets
                .drain()
                .filter_map(|((app, hour), c)| {
                    let app_id = AppId::parse(&app).ok()?;
                    let mut users: Vec<String> = c.users.into_iter().collect();
                    users.sort();
                    Some(UsageReport {
                        id: ulid::Ulid::new().to_string(),
                        app_id,
                        node_id: self.node_id.clone(),
                        hour,
                        messages: c.messages,
                        api_calls: c.api_calls,
                        active_users: users,
                        peak_connections: c.peak,
                        stored_bytes: c.bytes,
                    })
                })
                .collect()
        };
        let mut pending = self.pending.lock().await;
        pending.extend(cut);
        while pending.len() > MAX_PENDING {
            pending.pop_front();
            tracing::error!("usage report queue full; the oldest report was dropped");
        }
        let Some(feed) = &self.feed else {
            pending.clear();
            return 0;
        };
        let mut sent = 0;
        while let Some(r) = pending.front() {
            match feed.publish(r).await {
                Ok(()) => {
                    pending.pop_front();
                    sent += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, queued = pending.len(), "sending usage failed; will retry");
                    break;
                }
            }
        }
        metrics::gauge!("starling_usage_reports_queued").set(pending.len() as f64);
        sent
    }

    /// Reports waiting to be confirmed.
    pub async fn queued(&self) -> usize {
        self.pending.lock().await.len()
    }

    /// Flushes every `every` in a background task.
    pub fn spawn(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.flush().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thresholds_are_80_percent_rounded_up_and_the_limit() {
        let now = chrono::Utc::now();
        let at = |limit, n| Crossing::of("messages", limit, n, now).map(|c| c.threshold);
        assert_eq!(at(10, 7), None);
        assert_eq!(at(10, 8), Some(8));
        assert_eq!(at(10, 9), None);
        assert_eq!(at(10, 10), Some(10));
        assert_eq!(at(10, 11), None, "past the limit (soft): nothing more");
        assert_eq!(at(5, 4), Some(4));
        assert_eq!(
            at(1, 1),
            Some(1),
            "one event when both thresholds are the same count"
        );
        let c = Crossing::of("messages", 10, 8, now).unwrap();
        assert_eq!(c.period_start.format("%d %H:%M").to_string(), "01 00:00");
    }

    use super::*;
    use chrono::TimeZone;
    use starling_core::clock::ManualClock;
    use starling_core::id::TenantId;
    use starling_core::limits::Limits;
    use starling_core::usage::InProcessUsageFeed;

    fn cfg(limits: Limits, soft: &[&str]) -> AppConfig {
        AppConfig {
            app_id: AppId::generate(),
            tenant_id: TenantId::generate(),
            suspended: None,
            limits,
            soft_limits: soft.iter().map(|s| s.to_string()).collect(),
            keys: vec![],
            token_secrets: vec![],
            webhooks: vec![],
            pre_send_hook: None,
            version: 1,
        }
    }

    #[tokio::test]
    async fn hard_limit_refuses_until_the_period_resets() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 30, 22, 0, 0).unwrap(),
        ));
        let m = Metering::new(
            "n1",
            clock.clone(),
            Arc::new(crate::quota::InProcessQuotas::default()),
            None,
        );
        let c = cfg(
            Limits {
                messages_per_month: Some(2),
                ..Default::default()
            },
            &[],
        );
        m.admit_message(&c).await.unwrap();
        m.admit_message(&c).await.unwrap();
        let e = m.admit_message(&c).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded);
        assert!(e.message.contains("messages_per_month"), "{}", e.message);
        assert!(
            e.message.contains("2026-12-01T00:00:00+00:00"),
            "{}",
            e.message
        );
        assert_eq!(e.retry_after, Some(2 * 3600));
        clock.advance(chrono::Duration::hours(2));
        m.admit_message(&c).await.expect("a new period");

        let soft = cfg(
            Limits {
                messages_per_month: Some(1),
                ..Default::default()
            },
            &["messages_per_month"],
        );
        for _ in 0..3 {
            m.admit_message(&soft)
                .await
                .expect("soft limits never refuse");
        }
    }

    #[tokio::test]
    async fn reports_are_resent_with_the_same_id_until_confirmed() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 27, 10, 30, 0).unwrap(),
        ));
        let feed = Arc::new(InProcessUsageFeed::new());
        let mut rx = feed.subscribe().await.unwrap();
        let m = Arc::new(Metering::new(
            "n1",
            clock.clone(),
            Arc::new(crate::quota::InProcessQuotas::default()),
            Some(feed),
        ));
        let app = AppId::generate();
        m.record_message(app.as_str(), Some("u1"), 10);
        m.record_message(app.as_str(), None, 5);
        m.connection_opened(app.as_str(), "u2");
        m.record_api_call(app.as_str());
        let m2 = m.clone();
        let first = tokio::spawn(async move { m2.flush().await });
        let (r1, _, ack) = rx.recv().await.unwrap();
        ack.send(false).unwrap();
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(m.queued().await, 1);
        let m2 = m.clone();
        let second = tokio::spawn(async move { m2.flush().await });
        let (r2, _, ack) = rx.recv().await.unwrap();
        assert_eq!(r1.id, r2.id, "a re-sent report keeps its id");
        assert_eq!(r2.messages, 2);
        assert_eq!(r2.stored_bytes, 15);
        assert_eq!(r2.api_calls, 1);
        assert_eq!(r2.peak_connections, 1);
        assert_eq!(r2.active_users, vec!["u1".to_string(), "u2".to_string()]);
        ack.send(true).unwrap();
        // The second flush also cuts the live connection's peak into a new report.
        let (r3, _, ack) = rx.recv().await.unwrap();
        assert_ne!(r3.id, r2.id);
        assert_eq!((r3.messages, r3.peak_connections), (0, 1));
        ack.send(true).unwrap();
        assert_eq!(second.await.unwrap(), 2);
        assert_eq!(m.queued().await, 0);
    }
}

//! Usage metering and quota enforcement on a node.
//!
//! Counting: messages, API calls, active users, peak connections and stored bytes per app and
//! hour are counted in memory and cut into [`UsageReport`]s every flush interval. A cut report
//! waits in a queue until the usage feed confirms it, and is re-sent with the same id until
//! then: the control plane counts each id once.
//!
//! The queue is in memory (a node that dies loses what it did not send: at most one flush
//! interval while the feed is up) and bounded by [`MAX_PENDING_BYTES`]: when it is full, counts
//! are not cut but go on adding up in their app-hour (bounded by apps × hours), so nothing is
//! dropped. A report never carries more than [`MAX_USERS_PER_REPORT`] active users: a big
//! app's hour is cut into several reports (the counts ride on the first), each well under the
//! bus's message size. A report the feed refuses goes to the back of the queue, so it never
//! holds up the ones behind it.
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
    /// [`MAX_PENDING_BYTES`], smaller in tests.
    max_pending_bytes: usize,
}

/// Bytes of reports (about their JSON size) queued at most; past it counts wait uncut.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Active users in one report at most: 10,000 ids of ≤ 128 bytes stay under 1.4 MB, far from
/// Pulsar's 5 MB message limit.
pub const MAX_USERS_PER_REPORT: usize = 10_000;

/// Failed sends in a row after which a flush stops (the feed is down, not one report bad).
const FAILURES_IN_A_ROW: usize = 3;

/// About the bytes a report takes queued and on the bus.
fn report_bytes(r: &UsageReport) -> usize {
    256 + r.active_users.iter().map(|u| u.len() + 3).sum::<usize>()
}

/// `r` cut into reports of at most `max_users` users; the first carries the counts.
fn split(r: UsageReport, max_users: usize) -> Vec<UsageReport> {
    if r.active_users.len() <= max_users {
        return vec![r];
    }
    let mut out = Vec::new();
    for (i, users) in r.active_users.chunks(max_users.max(1)).enumerate() {
        let first = i == 0;
        out.push(UsageReport {
            id: if first {
                r.id.clone()
            } else {
                ulid::Ulid::new().to_string()
            },
            app_id: r.app_id.clone(),
            node_id: r.node_id.clone(),
            hour: r.hour,
            messages: if first { r.messages } else { 0 },
            api_calls: if first { r.api_calls } else { 0 },
            active_users: users.to_vec(),
            peak_connections: if first { r.peak_connections } else { 0 },
            stored_bytes: if first { r.stored_bytes } else { 0 },
        });
    }
    out
}

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
            max_pending_bytes: MAX_PENDING_BYTES,
        }
    }

    /// The same, with a queue of at most `bytes` (tests).
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
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

    /// Takes back a message [`Metering::admit_message`] counted for `cfg`'s app, when it was
    /// not stored after all (its commit failed, or a concurrent retry stored it first). Only
    /// for hard or soft limits that are counted: without a limit nothing was taken.
    pub async fn give_back_message(&self, cfg: &AppConfig) {
        if cfg.limits.messages_per_month.is_none() {
            return;
        }
        let key = format!("{}:{}:messages", cfg.app_id, period_of(self.clock.now()));
        if let Err(e) = self.quotas.give_back(&key).await {
            tracing::warn!(error = %e, app_id = %cfg.app_id, "giving back a message's quota failed");
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

    /// Cuts the counts so far into reports (queued, while the queue has room) and sends the
    /// queue. A report the feed refuses goes to the back (it is sent again with the same id
    /// next time); after a few refusals in a row the flush stops, the feed being down. Returns
    /// how many reports were confirmed.
    pub async fn flush(&self) -> usize {
        let mut pending = self.pending.lock().await;
        let queued: usize = pending.iter().map(report_bytes).sum();
        if queued < self.max_pending_bytes {
            let cut: Vec<UsageReport> = {
                let now_hour = hour_start(self.clock.now());
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                // Apps with open connections report their current count as this hour's peak.
                let live: Vec<(String, u64)> =
                    s.live.iter().map(|(a, n)| (a.clone(), *n)).collect();
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
            pending.extend(cut.into_iter().flat_map(|r| split(r, MAX_USERS_PER_REPORT)));
        } else {
            // Counts stay in their app-hour and are cut once the queue drains: nothing lost.
            tracing::warn!(
                queued_bytes = queued,
                "usage report queue full; counting on without cutting reports"
            );
        }
        let Some(feed) = &self.feed else {
            pending.clear();
            return 0;
        };
        let mut sent = 0;
        let mut failed = 0;
        // Each report at most once per flush.
        let mut left = pending.len();
        while left > 0 && failed < FAILURES_IN_A_ROW {
            left -= 1;
            let Some(r) = pending.pop_front() else { break };
            match feed.publish(&r).await {
                Ok(()) => {
                    sent += 1;
                    failed = 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, report = %r.id, queued = pending.len() + 1, "sending usage failed; will retry");
                    failed += 1;
                    pending.push_back(r);
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

    /// Metering of node `n1` at 2026-11-27 10:30 on a manual clock, reporting to an in-process
    /// feed (with a queue of `queue_bytes` when given), and the feed's receiving end.
    async fn metered(
        queue_bytes: Option<usize>,
    ) -> (
        Arc<ManualClock>,
        Arc<Metering>,
        tokio::sync::mpsc::Receiver<starling_core::usage::Received>,
    ) {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 27, 10, 30, 0).unwrap(),
        ));
        let feed = Arc::new(InProcessUsageFeed::new());
        let rx = feed.subscribe().await.unwrap();
        let m = Metering::new(
            "n1",
            clock.clone(),
            Arc::new(crate::quota::InProcessQuotas::default()),
            Some(feed),
        );
        let m = match queue_bytes {
            Some(b) => m.with_queue_bytes(b),
            None => m,
        };
        (clock, Arc::new(m), rx)
    }

    #[tokio::test]
    async fn reports_are_resent_with_the_same_id_until_confirmed() {
        let (_, m, mut rx) = metered(None).await;
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

    #[tokio::test]
    async fn a_big_hour_is_split_and_a_refused_report_does_not_hold_up_the_others() {
        let (_, m, mut rx) = metered(None).await;
        let (big, small) = (AppId::generate(), AppId::generate());
        let n_users = MAX_USERS_PER_REPORT * 2 + 5;
        for i in 0..n_users {
            m.record_message(big.as_str(), Some(&format!("user-{i:06}")), 1);
        }
        m.record_message(small.as_str(), Some("u"), 1);
        let m2 = m.clone();
        let flush = tokio::spawn(async move { m2.flush().await });
        // The feed refuses the first report it is offered (too big for the broker, say) and
        // takes the rest.
        let mut got = Vec::new();
        let mut refused = None;
        while got.len() < 3 {
            let (r, _, ack) = rx.recv().await.unwrap();
            if refused.is_none() {
                refused = Some(r.id.clone());
                ack.send(false).unwrap();
                continue;
            }
            ack.send(true).unwrap();
            got.push(r);
        }
        assert_eq!(flush.await.unwrap(), 3, "the refused one held up nothing");
        assert_eq!(
            m.queued().await,
            1,
            "the refused one waits for the next flush"
        );
        let m2 = m.clone();
        let flush = tokio::spawn(async move { m2.flush().await });
        let (r, _, ack) = rx.recv().await.unwrap();
        assert_eq!(Some(&r.id), refused.as_ref(), "re-sent with its id");
        ack.send(true).unwrap();
        got.push(r);
        assert_eq!(flush.await.unwrap(), 1);
        let bigs: Vec<&UsageReport> = got.iter().filter(|r| r.app_id == big).collect();
        assert_eq!(
            bigs.len(),
            3,
            "the big hour in reports of at most {MAX_USERS_PER_REPORT} users"
        );
        assert!(
            bigs.iter()
                .all(|r| r.active_users.len() <= MAX_USERS_PER_REPORT)
        );
        let users: HashSet<&String> = bigs.iter().flat_map(|r| &r.active_users).collect();
        assert_eq!(users.len(), n_users, "every user once");
        assert_eq!(
            bigs.iter().map(|r| r.messages).sum::<u64>(),
            n_users as u64,
            "the counts once"
        );
    }

    #[tokio::test]
    async fn a_full_queue_keeps_counting_and_loses_nothing() {
        let (clock, m, mut rx) = metered(Some(1000)).await;
        let app = AppId::generate();
        // The control plane's side: refuses while `up` is false, else confirms and hands the
        // report over.
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let up2 = up.clone();
        tokio::spawn(async move {
            while let Some((r, _, ack)) = rx.recv().await {
                let ok = up2.load(std::sync::atomic::Ordering::SeqCst);
                let _ = ack.send(ok);
                if ok {
                    let _ = got_tx.send(r);
                }
            }
        });
        // The feed is down for ten hours of traffic.
        for _ in 0..10 {
            for _ in 0..3 {
                m.record_message(app.as_str(), Some("u"), 1);
            }
            m.flush().await;
            clock.advance(chrono::Duration::hours(1));
        }
        assert!(
            m.queued().await <= 4,
            "the queue stays bounded: {}",
            m.queued().await
        );
        // Back up: everything counted arrives, once.
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            m.flush().await;
        }
        assert_eq!(m.queued().await, 0);
        let mut messages = 0;
        let mut ids = HashSet::new();
        while let Ok(r) = got.try_recv() {
            assert!(ids.insert(r.id.clone()), "{} sent twice", r.id);
            messages += r.messages;
        }
        assert_eq!(messages, 30, "nothing counted was dropped");
    }
}

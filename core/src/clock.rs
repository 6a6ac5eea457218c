//! Time as the metering and billing code sees it: injectable, so tests can move to the end of a
//! period instead of waiting for it. Periods are calendar months in UTC.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until moved (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The start of the hour `t` falls in.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .expect("valid hour start")
}

/// The start of the calendar month `t` falls in.
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .expect("valid month start")
}

/// The start of the month after the one `t` falls in: when monthly quotas reset.
pub fn next_month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("valid month start")
}

/// The billing period (calendar month) `t` falls in, as `YYYY-MM`.
pub fn period_of(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// Parses a `YYYY-MM` period into its first instant.
pub fn parse_period(p: &str) -> Option<DateTime<Utc>> {
    let (y, m) = p.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    Utc.with_ymd_and_hms(y.parse().ok()?, m.parse().ok()?, 1, 0, 0, 0)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(period_of(t), "2026-12");
        assert_eq!(
            next_month_start(t),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            month_start(t),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            hour_start(t),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap()
        );
        assert_eq!(parse_period("2026-12"), Some(month_start(t)));
        assert_eq!(parse_period("2026-13"), None);
        assert_eq!(parse_period("26-1"), None);
    }

    #[test]
    fn manual_clock_moves() {
        let c = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap());
        c.advance(Duration::hours(2));
        assert_eq!(period_of(c.now()), "2026-12");
    }
}

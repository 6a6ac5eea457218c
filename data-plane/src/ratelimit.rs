//! Request rate limits per API key: GCRA (the generic cell rate algorithm, as in `governor` and
//! Redis-cell). In-process for a standalone node; in Redis for a cell, where one Lua script
//! decides atomically so every node shares the same budget.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter as Gcra, clock::Clock};
use redis::Script;
use redis::aio::ConnectionManager;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; this many more requests fit in the burst right now.
    Allowed {
        /// Requests per second allowed.
        limit: u64,
        /// Left in the burst.
        remaining: u64,
    },
    /// Refused; the next request fits after this many milliseconds.
    Refused {
        /// Requests per second allowed.
        limit: u64,
        /// Wait before retrying.
        retry_after_ms: u64,
    },
}

/// A limiter backend failed.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter: {0}")]
pub struct LimitError(pub String);

/// Takes one request from a key's budget of `per_second` requests per second (burst of the same
/// size).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Checks and counts one request.
    async fn check(&self, key: &str, per_second: u64) -> Result<Verdict, LimitError>;
}

type Direct = Gcra<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

/// In-process limiter (the `governor` crate).
#[derive(Default)]
pub struct InProcessLimiter {
    limiters: Mutex<HashMap<String, (u64, Arc<Direct>)>>,
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn check(&self, key: &str, rps: u64) -> Result<Verdict, LimitError> {
        let limiter = {
            let mut m = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            match m.get(key) {
                Some((r, l)) if *r == rps => l.clone(),
                _ => {
                    let n = NonZeroU32::new(rps.clamp(1, u32::MAX as u64) as u32).expect("nonzero");
                    let l = Arc::new(
                        Gcra::direct(Quota::per_second(n))
                            .with_middleware::<StateInformationMiddleware>(),
                    );
                    m.insert(key.to_owned(), (rps, l.clone()));
                    l
                }
            }
        };
        Ok(match limiter.check() {
            Ok(s) => Verdict::Allowed {
                limit: rps,
                remaining: s.remaining_burst_capacity() as u64,
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                Verdict::Refused {
                    limit: rps,
                    retry_after_ms: (wait.as_millis() as u64).max(1),
                }
            }
        })
    }
}

/// The Redis limiter: GCRA in one Lua script, time from the Redis server so nodes' clocks
/// do not matter.
#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: Script,
}

impl RedisLimiter {
    /// Connects.
    pub async fn connect(url: &str) -> Result<Self, LimitError> {
        let client = redis::Client::open(url).map_err(|e| LimitError(e.to_string()))?;
        let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| LimitError(format!("timed out connecting to {url}")))?
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(Self {
            conn,
            // KEYS[1]: the key's theoretical arrival time (TAT). ARGV[1]: emission interval in
            // microseconds (1 s / rate). ARGV[2]: burst. Returns {allowed, retry_after_us, remaining}.
            script: Script::new(
                r"
                local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
                local interval = tonumber(ARGV[1])
                local burst = tonumber(ARGV[2])
                local tat = tonumber(redis.call('GET', KEYS[1]) or now)
                if tat < now then tat = now end
                local allow_at = tat - (burst - 1) * interval
                if now < allow_at then
                    return {0, allow_at - now, 0}
                end
                local new_tat = tat + interval
                redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
                local remaining = math.floor((now + burst * interval - new_tat) / interval)
                return {1, 0, remaining}
                ",
            ),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, rps: u64) -> Result<Verdict, LimitError> {
        let rps = rps.max(1);
        let interval_us = 1_000_000 / rps.min(1_000_000);
        let mut c = self.conn.clone();
        let (allowed, retry_us, remaining): (i64, i64, i64) = self
            .script
            .key(format!("starling:rl:{key}"))
            .arg(interval_us)
            .arg(rps)
            .invoke_async(&mut c)
            .await
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(if allowed == 1 {
            Verdict::Allowed {
                limit: rps,
                remaining: remaining.max(0) as u64,
            }
        } else {
            Verdict::Refused {
                limit: rps,
                retry_after_ms: (retry_us.max(0) as u64).div_ceil(1000).max(1),
            }
        })
    }
}

/// The one behaviour suite every [`RateLimiter`] must pass.
pub mod conformance {
    use super::*;

    /// Runs every check with keys unique to this run.
    pub async fn run(l: &dyn RateLimiter) {
        let k = format!("conf-{}", ulid::Ulid::new());
        let mut allowed = 0;
        let mut refused = None;
        for _ in 0..8 {
            match l.check(&k, 5).await.unwrap() {
                Verdict::Allowed { limit, .. } => {
                    assert_eq!(limit, 5);
                    allowed += 1;
                }
                Verdict::Refused { retry_after_ms, .. } => {
                    refused.get_or_insert(retry_after_ms);
                }
            }
        }
        assert_eq!(allowed, 5, "a burst of the rate is allowed, no more");
        let wait = refused.expect("the sixth request is refused");
        assert!(
            (1..=250).contains(&wait),
            "retry after about one interval (200 ms), got {wait}"
        );
        tokio::time::sleep(Duration::from_millis(wait + 20)).await;
        assert!(
            matches!(l.check(&k, 5).await.unwrap(), Verdict::Allowed { .. }),
            "allowed again after waiting"
        );
        let other = format!("{k}-other");
        match l.check(&other, 5).await.unwrap() {
            Verdict::Allowed { remaining, .. } => assert_eq!(remaining, 4, "keys are separate"),
            v => panic!("another key was refused: {v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_process_limiter_conforms() {
        super::conformance::run(&super::InProcessLimiter::default()).await;
    }
}

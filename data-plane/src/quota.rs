//! Monthly quota counters of a cell: messages sent and monthly active users per app and period.
//! In Redis for a cell (every node shares them, and they live on when the control plane is
//! down), in-process for a standalone node. A counter refuses to pass a hard limit atomically.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::ratelimit::LimitError;

/// Counters live a little longer than a month, then expire.
pub const COUNTER_TTL_SECS: u64 = 40 * 24 * 3600;

/// The outcome of taking from a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Counted; the counter's value now.
    Counted(u64),
    /// Refused: counting would pass the limit; the counter's value (unchanged).
    Refused(u64),
}

/// Shared monthly counters.
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// Adds one to counter `key` unless that passes `limit` (`None`: never refuse).
    async fn incr(&self, key: &str, limit: Option<u64>) -> Result<Taken, LimitError>;
    /// Takes back one that [`QuotaStore::incr`] counted (its message was not stored after
    /// all); never below zero.
    async fn give_back(&self, key: &str) -> Result<(), LimitError>;
    /// Adds `member` to set `key` unless that passes `limit` members (a member already in the
    /// set is always counted).
    async fn add_member(
        &self,
        key: &str,
        member: &str,
        limit: Option<u64>,
    ) -> Result<Taken, LimitError>;
}

/// In-process counters (standalone).
#[derive(Default)]
pub struct InProcessQuotas {
    counters: Mutex<HashMap<String, u64>>,
    sets: Mutex<HashMap<String, HashSet<String>>>,
}

#[async_trait]
impl QuotaStore for InProcessQuotas {
    async fn incr(&self, key: &str, limit: Option<u64>) -> Result<Taken, LimitError> {
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry(key.to_owned()).or_default();
        if limit.is_some_and(|l| *c + 1 > l) {
            return Ok(Taken::Refused(*c));
        }
        *c += 1;
        Ok(Taken::Counted(*c))
    }

    async fn give_back(&self, key: &str) -> Result<(), LimitError> {
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get_mut(key) {
            *c = c.saturating_sub(1);
        }
        Ok(())
    }

    async fn add_member(
        &self,
        key: &str,
        member: &str,
        limit: Option<u64>,
    ) -> Result<Taken, LimitError> {
        let mut m = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(key.to_owned()).or_default();
        let n = s.len() as u64;
        if s.contains(member) {
            return Ok(Taken::Counted(n));
        }
        if limit.is_some_and(|l| n + 1 > l) {
            return Ok(Taken::Refused(n));
        }
        s.insert(member.to_owned());
        Ok(Taken::Counted(n + 1))
    }
}

/// Counters in the cell's Redis; each decision is one Lua script, atomic across nodes.
#[derive(Clone)]
pub struct RedisQuotas {
    conn: ConnectionManager,
    incr: Script,
    give_back: Script,
    add: Script,
}

impl RedisQuotas {
    /// Connects.
    pub async fn connect(url: &str) -> Result<Self, LimitError> {
        let client = redis::Client::open(url).map_err(|e| LimitError(e.to_string()))?;
        let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| LimitError(format!("timed out connecting to {url}")))?
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(Self {
            conn,
            // ARGV[1]: limit (-1: none), ARGV[2]: ttl. Returns {counted, value}.
            incr: Script::new(
                r"
                local c = tonumber(redis.call('GET', KEYS[1]) or '0')
                local lim = tonumber(ARGV[1])
                if lim >= 0 and c + 1 > lim then return {0, c} end
                c = redis.call('INCR', KEYS[1])
                redis.call('EXPIRE', KEYS[1], ARGV[2])
                return {1, c}
                ",
            ),
            // Never below zero, and never creates the key.
            give_back: Script::new(
                r"
                local c = tonumber(redis.call('GET', KEYS[1]) or '0')
                if c > 0 then return redis.call('DECR', KEYS[1]) end
                return 0
                ",
            ),
            // ARGV[1]: member, ARGV[2]: limit (-1: none), ARGV[3]: ttl.
            add: Script::new(
                r"
                local n = redis.call('SCARD', KEYS[1])
                if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {1, n} end
                local lim = tonumber(ARGV[2])
                if lim >= 0 and n + 1 > lim then return {0, n} end
                redis.call('SADD', KEYS[1], ARGV[1])
                redis.call('EXPIRE', KEYS[1], ARGV[3])
                return {1, n + 1}
                ",
            ),
        })
    }
}

fn lim(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64)
}

fn taken(counted: i64, value: i64) -> Taken {
    let v = value.max(0) as u64;
    if counted == 1 {
        Taken::Counted(v)
    } else {
        Taken::Refused(v)
    }
}

#[async_trait]
impl QuotaStore for RedisQuotas {
    async fn incr(&self, key: &str, limit: Option<u64>) -> Result<Taken, LimitError> {
        let mut c = self.conn.clone();
        let (ok, v): (i64, i64) = self
            .incr
            .key(format!("starling:quota:{key}"))
            .arg(lim(limit))
            .arg(COUNTER_TTL_SECS)
            .invoke_async(&mut c)
            .await
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(taken(ok, v))
    }

    async fn give_back(&self, key: &str) -> Result<(), LimitError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .give_back
            .key(format!("starling:quota:{key}"))
            .invoke_async(&mut c)
            .await
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(())
    }

    async fn add_member(
        &self,
        key: &str,
        member: &str,
        limit: Option<u64>,
    ) -> Result<Taken, LimitError> {
        let mut c = self.conn.clone();
        let (ok, v): (i64, i64) = self
            .add
            .key(format!("starling:quota:{key}"))
            .arg(member)
            .arg(lim(limit))
            .arg(COUNTER_TTL_SECS)
            .invoke_async(&mut c)
            .await
            .map_err(|e| LimitError(e.to_string()))?;
        Ok(taken(ok, v))
    }
}

/// The one behaviour suite every [`QuotaStore`] must pass.
pub mod conformance {
    use super::*;

    /// Runs every check with keys unique to this run.
    pub async fn run(q: &dyn QuotaStore) {
        let k = format!("conf-{}", ulid::Ulid::new());
        assert_eq!(q.incr(&k, Some(2)).await.unwrap(), Taken::Counted(1));
        assert_eq!(q.incr(&k, Some(2)).await.unwrap(), Taken::Counted(2));
        assert_eq!(q.incr(&k, Some(2)).await.unwrap(), Taken::Refused(2));
        assert_eq!(q.incr(&k, None).await.unwrap(), Taken::Counted(3), "soft");
        q.give_back(&k).await.unwrap();
        assert_eq!(
            q.incr(&k, None).await.unwrap(),
            Taken::Counted(3),
            "one given back is counted again"
        );
        let z = format!("{k}-zero");
        q.give_back(&z).await.unwrap();
        assert_eq!(
            q.incr(&z, Some(1)).await.unwrap(),
            Taken::Counted(1),
            "never below zero"
        );
        let s = format!("{k}-set");
        assert_eq!(
            q.add_member(&s, "a", Some(1)).await.unwrap(),
            Taken::Counted(1)
        );
        assert_eq!(
            q.add_member(&s, "a", Some(1)).await.unwrap(),
            Taken::Counted(1)
        );
        assert_eq!(
            q.add_member(&s, "b", Some(1)).await.unwrap(),
            Taken::Refused(1)
        );
        assert_eq!(
            q.add_member(&s, "b", None).await.unwrap(),
            Taken::Counted(2)
        );
        assert_eq!(
            q.add_member(&s, "a", Some(1)).await.unwrap(),
            Taken::Counted(2)
        );
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_process_quotas_conform() {
        super::conformance::run(&super::InProcessQuotas::default()).await;
    }
}

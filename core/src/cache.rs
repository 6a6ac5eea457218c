//! A small key-value cache with expiry: Redis in a deployment, an in-process map in standalone.
//!
//! Used for idempotency keys (and, later, anything else that must be shared by several processes
//! but may be lost without harm). Both implementations pass [`conformance::run`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// A cache operation failed (the backend is unreachable or answered oddly).
#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(pub String);

/// A key-value cache whose entries expire.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, unless missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Stores `value` under `key` for `ttl`, replacing any value.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Stores `value` under `key` for `ttl` only if the key is absent; tells whether it did.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError>;
    /// Removes `key` (absent keys are fine).
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), CacheError>;
}

/// The in-process cache (standalone, single process).
#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, (Vec<u8>, Instant)>, Instant) -> R) -> R {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Sweep now and then so that expired entries do not pile up.
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, (_, exp)| *exp > now);
        }
        f(&mut map, now)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.with(|m, now| match m.get(key) {
            Some((v, exp)) if *exp > now => Some(v.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.with(|m, now| m.insert(key.to_owned(), (value.to_vec(), now + ttl)));
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        Ok(self.with(|m, now| match m.get(key) {
            Some((_, exp)) if *exp > now => false,
            _ => {
                m.insert(key.to_owned(), (value.to_vec(), now + ttl));
                true
            }
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.with(|m, _| m.remove(key));
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// The Redis cache (a shared one for several processes).
#[derive(Clone)]
pub struct RedisCache {
    conn: redis::aio::ConnectionManager,
}

impl RedisCache {
    /// Connects to `url` (`redis://host:port/db`); fails if Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError(e.to_string()))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| CacheError(format!("timed out connecting to {url}")))?
        .map_err(|e| CacheError(e.to_string()))?;
        Ok(Self { conn })
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn rerr(e: redis::RedisError) -> CacheError {
    CacheError(e.to_string())
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(rerr)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async::<()>(&mut c)
            .await
            .map_err(rerr)
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut c = self.conn.clone();
        let r: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .arg("NX")
            .query_async(&mut c)
            .await
            .map_err(rerr)?;
        Ok(r.is_some())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut c)
            .await
            .map_err(rerr)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut c)
            .await
            .map_err(rerr)
    }
}

/// The one behaviour suite every [`Cache`] must pass (run against both implementations).
pub mod conformance {
    use super::*;

    /// Runs every check; keys are prefixed with a random namespace so runs do not collide.
    pub async fn run(cache: &dyn Cache) {
        let ns = crate::secret::random_token("conf:");
        let k = |s: &str| format!("{ns}:{s}");
        let long = Duration::from_secs(60);

        cache.ping().await.expect("ping");
        assert_eq!(cache.get(&k("missing")).await.unwrap(), None, "missing key");

        cache.set(&k("a"), b"1", long).await.unwrap();
        assert_eq!(
            cache.get(&k("a")).await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        cache.set(&k("a"), b"2", long).await.unwrap();
        assert_eq!(
            cache.get(&k("a")).await.unwrap().as_deref(),
            Some(&b"2"[..]),
            "set replaces"
        );

        assert!(
            cache.set_nx(&k("b"), b"x", long).await.unwrap(),
            "first set_nx wins"
        );
        assert!(
            !cache.set_nx(&k("b"), b"y", long).await.unwrap(),
            "second set_nx loses"
        );
        assert_eq!(
            cache.get(&k("b")).await.unwrap().as_deref(),
            Some(&b"x"[..])
        );

        cache.delete(&k("b")).await.unwrap();
        assert_eq!(cache.get(&k("b")).await.unwrap(), None, "deleted");
        cache.delete(&k("b")).await.unwrap();
        assert!(
            cache.set_nx(&k("b"), b"z", long).await.unwrap(),
            "set_nx after delete"
        );

        let bin: Vec<u8> = (0..=255).collect();
        cache.set(&k("bin"), &bin, long).await.unwrap();
        assert_eq!(
            cache.get(&k("bin")).await.unwrap(),
            Some(bin),
            "binary-safe"
        );

        cache
            .set(&k("ttl"), b"1", Duration::from_millis(150))
            .await
            .unwrap();
        assert!(cache.get(&k("ttl")).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cache.get(&k("ttl")).await.unwrap(), None, "expired");
        assert!(
            cache.set_nx(&k("ttl"), b"2", long).await.unwrap(),
            "set_nx succeeds once the old entry expired"
        );

        // Many concurrent set_nx on one key: exactly one wins.
        let key = k("race");
        let wins = futures_count(cache, &key).await;
        assert_eq!(wins, 1, "exactly one concurrent set_nx wins");
    }

    async fn futures_count(cache: &dyn Cache, key: &str) -> usize {
        let values: Vec<[u8; 1]> = (0..16u8).map(|i| [i]).collect();
        let attempts = values
            .iter()
            .map(|v| cache.set_nx(key, v, Duration::from_secs(60)));
        futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.expect("set_nx"))
            .filter(|won| *won)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_conforms() {
        conformance::run(&MemoryCache::new()).await;
    }

    /// Needs the Redis started by `scripts/test` (`TEST_REDIS_URL`); fails loudly without it.
    #[tokio::test]
    async fn redis_cache_conforms() {
        let url = std::env::var("TEST_REDIS_URL").expect(
            "TEST_REDIS_URL is not set: run the tests with scripts/test, which starts Redis",
        );
        let cache = RedisCache::connect(&url).await.expect("connect to Redis");
        conformance::run(&cache).await;
    }
}

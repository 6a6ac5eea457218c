//! The registry in Redis, shared by every node of a cell.
//!
//! Per app and user, a sorted set holds `node|connection` members scored by their expiry time;
//! per app, a sorted set of connections does the same for counting. Nodes refresh the expiry of
//! their live connections on a heartbeat, so the connections of a node that died vanish within
//! one TTL. Every change is one Lua script: atomic, one round trip.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::registry::{Counts, Registry, RegistryError};

/// The Redis registry.
#[derive(Clone)]
pub struct RedisRegistry {
    conn: ConnectionManager,
    ttl: Duration,
    connect: Script,
    disconnect: Script,
}

fn rerr(e: redis::RedisError) -> RegistryError {
    RegistryError(e.to_string())
}

fn user_key(app: &str, user: &str) -> String {
    format!("starling:reg:{{{app}}}:user:{user}")
}

fn app_key(app: &str) -> String {
    format!("starling:reg:{{{app}}}:conns")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Connections refreshed per heartbeat pipeline.
const HEARTBEAT_CHUNK: usize = 500;

impl RedisRegistry {
    /// Connects; connections expire `ttl` after their last heartbeat.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, RegistryError> {
        let client = redis::Client::open(url).map_err(rerr)?;
        let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| RegistryError(format!("timed out connecting to {url}")))?
            .map_err(rerr)?;
        Ok(Self {
            conn,
            ttl,
            connect: Script::new(
                r"
                redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
                redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
                redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
                redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
                redis.call('PEXPIRE', KEYS[1], ARGV[5])
                redis.call('PEXPIRE', KEYS[2], ARGV[5])
                return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
                ",
            ),
            disconnect: Script::new(
                r"
                local suffix = '|' .. ARGV[1]
                for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
                    if string.sub(m, -string.len(suffix)) == suffix then
                        redis.call('ZREM', KEYS[1], m)
                    end
                end
                redis.call('ZREM', KEYS[2], ARGV[1])
                redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
                return redis.call('ZCARD', KEYS[1])
                ",
            ),
        })
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn connect(
        &self,
        app: &str,
        user: &str,
        node: &str,
        conn: &str,
    ) -> Result<Counts, RegistryError> {
        let now = now_ms();
        let mut c = self.conn.clone();
        let (u, a): (u64, u64) = self
            .connect
            .key(user_key(app, user))
            .key(app_key(app))
            .arg(format!("{node}|{conn}"))
            .arg(conn)
            .arg(now)
            .arg(now + self.ttl_ms())
            .arg(self.ttl_ms() * 2)
            .invoke_async(&mut c)
            .await
            .map_err(rerr)?;
        Ok(Counts { user: u, app: a })
    }

    async fn disconnect(&self, app: &str, user: &str, conn: &str) -> Result<u64, RegistryError> {
        let mut c = self.conn.clone();
        self.disconnect
            .key(user_key(app, user))
            .key(app_key(app))
            .arg(conn)
            .arg(now_ms())
            .invoke_async(&mut c)
            .await
            .map_err(rerr)
    }

    async fn locate(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, RegistryError> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        if users.is_empty() {
            return Ok(out);
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(user_key(app, u))
                .arg(now)
                .arg("+inf");
        }
        let mut c = self.conn.clone();
        let all: Vec<Vec<String>> = pipe.query_async(&mut c).await.map_err(rerr)?;
        for (u, members) in users.iter().zip(all) {
            let mut nodes: Vec<&str> = members
                .iter()
                .filter_map(|m| m.split_once('|').map(|x| x.0))
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            for n in nodes {
                out.entry(n.to_owned()).or_default().push(u.clone());
            }
        }
        Ok(out)
    }

    async fn online(&self, app: &str, user: &str) -> Result<bool, RegistryError> {
        let mut c = self.conn.clone();
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(user_key(app, user))
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(rerr)?;
        Ok(n > 0)
    }

    async fn heartbeat(
        &self,
        node: &str,
        conns: &[(String, String, String)],
    ) -> Result<Vec<String>, RegistryError> {
        if conns.is_empty() {
            return Ok(Vec::new());
        }
        // In chunks: one pipeline of a node's every connection (tens of thousands of commands)
        // would hold the shared Redis connection for longer than its response timeout, and the
        // handshakes queued behind it would fail. Per chunk, one ZADD per app for all its
        // connections, and per connection one ZADD on the user.
        let mut restored = Vec::new();
        for chunk in conns.chunks(HEARTBEAT_CHUNK) {
            let exp = now_ms() + self.ttl_ms();
            let mut pipe = redis::pipe();
            let mut by_app: HashMap<&str, Vec<&str>> = HashMap::new();
            for (app, user, conn) in chunk {
                // ZADD answers how many members are new: 1 means Redis had lost this one.
                pipe.cmd("ZADD")
                    .arg(user_key(app, user))
                    .arg(exp)
                    .arg(format!("{node}|{conn}"));
                pipe.cmd("PEXPIRE")
                    .arg(user_key(app, user))
                    .arg(self.ttl_ms() * 2)
                    .ignore();
                by_app.entry(app).or_default().push(conn);
            }
            for (app, app_conns) in by_app {
                let zadd = pipe.cmd("ZADD").arg(app_key(app));
                for conn in app_conns {
                    zadd.arg(exp).arg(conn);
                }
                zadd.ignore();
                pipe.cmd("PEXPIRE")
                    .arg(app_key(app))
                    .arg(self.ttl_ms() * 2)
                    .ignore();
            }
            let mut c = self.conn.clone();
            let added: Vec<u64> = pipe.query_async(&mut c).await.map_err(rerr)?;
            restored.extend(
                chunk
                    .iter()
                    .zip(added)
                    .filter(|(_, n)| *n > 0)
                    .map(|((_, _, conn), _)| conn.clone()),
            );
        }
        Ok(restored)
    }
}

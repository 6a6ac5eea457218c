//! Which node holds which users' connections, and presence. In standalone the registry is an
//! in-process map; in a cell it is Redis (with TTLs refreshed by node heartbeats).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
#[error("registry: {0}")]
pub struct RegistryError(pub String);

/// Connection counts after a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Connections of this user, this one included.
    pub user: u64,
    /// Connections of the whole app, this one included.
    pub app: u64,
}

/// The registry.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Records a connection of `user` on `node`.
    async fn connect(
        &self,
        app: &str,
        user: &str,
        node: &str,
        conn: &str,
    ) -> Result<Counts, RegistryError>;
    /// Forgets a connection; returns how many the user still has.
    async fn disconnect(&self, app: &str, user: &str, conn: &str) -> Result<u64, RegistryError>;
    /// Groups `users` by the nodes they are connected to (users with no connection are left out).
    async fn locate(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, RegistryError>;
    /// Whether the user has any connection.
    async fn online(&self, app: &str, user: &str) -> Result<bool, RegistryError>;
    /// Keeps a node's live connections `(app, user, connection)` registered; a registry whose
    /// entries expire needs this every third of their lifetime.
    ///
    /// Returns the ids of the connections that were missing and are registered again: the
    /// registry lost them (a Redis restart without persistence, a failed `connect`), so pushes
    /// to them may have been missed meanwhile and their clients should catch up.
    async fn heartbeat(
        &self,
        node: &str,
        conns: &[(String, String, String)],
    ) -> Result<Vec<String>, RegistryError>;
}

#[derive(Default)]
struct Maps {
    /// app → user → conn → node (nested, so lookups borrow the ids instead of building keys)
    conns: HashMap<String, HashMap<String, HashMap<String, String>>>,
    /// app → count
    per_app: HashMap<String, u64>,
}

/// The in-process registry of a standalone process.
#[derive(Default)]
pub struct InProcessRegistry {
    maps: Mutex<Maps>,
}

impl InProcessRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Registry for InProcessRegistry {
    async fn connect(
        &self,
        app: &str,
        user: &str,
        node: &str,
        conn: &str,
    ) -> Result<Counts, RegistryError> {
        let mut m = self.lock();
        let entry = m
            .conns
            .entry(app.to_owned())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        let fresh = entry.insert(conn.to_owned(), node.to_owned()).is_none();
        let user_n = entry.len() as u64;
        let app_n = m.per_app.entry(app.to_owned()).or_default();
        if fresh {
            *app_n += 1;
        }
        Ok(Counts {
            user: user_n,
            app: *app_n,
        })
    }

    async fn disconnect(&self, app: &str, user: &str, conn: &str) -> Result<u64, RegistryError> {
        let mut m = self.lock();
        let Some(users) = m.conns.get_mut(app) else {
            return Ok(0);
        };
        let (removed, left) = match users.get_mut(user) {
            Some(e) => (e.remove(conn).is_some(), e.len() as u64),
            None => (false, 0),
        };
        if left == 0 {
            users.remove(user);
            if users.is_empty() {
                m.conns.remove(app);
            }
        }
        if removed && let Some(n) = m.per_app.get_mut(app) {
            *n = n.saturating_sub(1);
        }
        Ok(left)
    }

    async fn locate(
        &self,
        app: &str,
        users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, RegistryError> {
        let m = self.lock();
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        let Some(by_user) = m.conns.get(app) else {
            return Ok(out);
        };
        for u in users {
            if let Some(conns) = by_user.get(u.as_str()) {
                let mut nodes: Vec<&String> = conns.values().collect();
                nodes.sort();
                nodes.dedup();
                for n in nodes {
                    out.entry(n.clone()).or_default().push(u.clone());
                }
            }
        }
        Ok(out)
    }

    async fn online(&self, app: &str, user: &str) -> Result<bool, RegistryError> {
        Ok(self
            .lock()
            .conns
            .get(app)
            .is_some_and(|u| u.contains_key(user)))
    }

    async fn heartbeat(
        &self,
        _node: &str,
        _conns: &[(String, String, String)],
    ) -> Result<Vec<String>, RegistryError> {
        // Entries live until `disconnect` and cannot be lost: nothing to refresh or restore.
        // (Re-adding here would resurrect a connection that closed after the caller listed it.)
        Ok(Vec::new())
    }
}

/// The one behaviour suite every [`Registry`] must pass.
pub mod conformance {
    use super::*;

    /// Runs every check; the app id is unique per run.
    pub async fn run(r: &dyn Registry) {
        let app = format!("app_{}", ulid::Ulid::new());
        assert!(!r.online(&app, "alice").await.unwrap());
        assert_eq!(
            r.connect(&app, "alice", "n1", "c1").await.unwrap(),
            Counts { user: 1, app: 1 }
        );
        assert_eq!(
            r.connect(&app, "alice", "n2", "c2").await.unwrap(),
            Counts { user: 2, app: 2 }
        );
        assert_eq!(
            r.connect(&app, "bob", "n1", "c3").await.unwrap(),
            Counts { user: 1, app: 3 }
        );
        assert_eq!(
            r.connect(&app, "bob", "n1", "c3").await.unwrap().app,
            3,
            "connect is idempotent"
        );
        assert!(r.online(&app, "alice").await.unwrap());

        let users = vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()];
        let mut loc = r.locate(&app, &users).await.unwrap();
        for v in loc.values_mut() {
            v.sort();
        }
        assert_eq!(
            loc.get("n1"),
            Some(&vec!["alice".to_owned(), "bob".to_owned()])
        );
        assert_eq!(loc.get("n2"), Some(&vec!["alice".to_owned()]));
        assert_eq!(loc.len(), 2, "carol is nowhere");
        assert!(
            r.locate("other-app", &users).await.unwrap().is_empty(),
            "apps are separate"
        );

        assert_eq!(r.disconnect(&app, "alice", "c1").await.unwrap(), 1);
        assert_eq!(
            r.disconnect(&app, "alice", "c1").await.unwrap(),
            1,
            "disconnect is idempotent"
        );
        assert_eq!(r.disconnect(&app, "alice", "c2").await.unwrap(), 0);
        assert!(!r.online(&app, "alice").await.unwrap());
        assert_eq!(
            r.connect(&app, "dave", "n1", "c9").await.unwrap().app,
            2,
            "app count follows"
        );

        // A heartbeat keeps registered connections and loses nothing of a registry that lost
        // nothing. (Losing state is Redis's: see its test in `tests/it/conformance.rs`.)
        let live = vec![
            (app.clone(), "bob".to_owned(), "c3".to_owned()),
            (app.clone(), "dave".to_owned(), "c9".to_owned()),
        ];
        assert!(r.heartbeat("n1", &live).await.unwrap().is_empty());
        assert!(r.heartbeat("n1", &[]).await.unwrap().is_empty());
        assert!(r.online(&app, "dave").await.unwrap());
        assert_eq!(
            r.connect(&app, "frank", "n2", "c11").await.unwrap().app,
            3,
            "heartbeats change no count"
        );
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_process_registry_conforms() {
        super::conformance::run(&super::InProcessRegistry::new()).await;
    }
}

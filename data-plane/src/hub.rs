//! The connections open on this node, and the push of frames to them.
//!
//! Each connection has a bounded queue of outgoing frames. A frame that does not fit means the
//! client reads too slowly: the connection is cut off (close code 4008) instead of letting its
//! queue grow without bound.
//!
//! When access ends (a ban, a deactivation, a deletion, a revoked token: [`Ending`]), the
//! node closes the user's matching connections, and remembers the ending for a while
//! ([`TOMBSTONE_TTL`]): a connection whose handshake passed its checks just before the ending
//! but joins the hub just after it is closed as it joins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::directory::{SessionEnd, TokenFacts};

/// How long an ending is remembered for connections still in their handshake: longer than
/// any handshake takes (they time out well before).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(30);

/// Which sessions of a user end, and why. Travels on the bus to every node the user is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// Why (and so the close code).
    pub why: SessionEnd,
    /// Only sessions whose token was issued at or before this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_until: Option<i64>,
    /// Only sessions opened with this token id (`jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl Ending {
    /// Every session of the user.
    pub fn all(why: SessionEnd) -> Self {
        Self {
            why,
            issued_until: None,
            token_id: None,
        }
    }

    fn matches(&self, t: &TokenFacts) -> bool {
        self.issued_until.is_none_or(|u| t.iat <= u)
            && self
                .token_id
                .as_deref()
                .is_none_or(|id| t.jti.as_deref() == Some(id))
    }
}

/// What the writer of a connection sends.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame. Its bytes are shared: a fan-out to many connections copies none of them.
    Frame(Utf8Bytes),
}

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Still open.
    Open,
    /// Its queue overflowed (close code 4008).
    SlowConsumer,
    /// The node is shutting down (close code 1001).
    Shutdown,
    /// Nothing arrived for three heartbeats (close code 4002).
    HeartbeatTimeout,
    /// Access ended (close code 4003) or the token was revoked (4001).
    Ended(SessionEnd),
}

/// A connection as the hub sees it.
#[derive(Clone)]
pub struct ConnHandle {
    /// Connection id.
    pub id: String,
    /// The queue: a `flume` channel, whose buffer is allocated only while frames wait (an
    /// idle connection's queue costs ~200 bytes; tokio's bounded mpsc preallocates ~1.5 KiB).
    pub tx: flume::Sender<Outbound>,
    /// Tells the connection to close.
    pub close: Arc<watch::Sender<CloseReason>>,
    /// The token it was opened with.
    pub token: TokenFacts,
    /// When its handshake checked its access.
    pub checked_at: Instant,
}

impl ConnHandle {
    /// Queues a frame; a full queue means a slow reader, which is told to close. Tells whether
    /// the frame was queued.
    fn offer(&self, frame: &Utf8Bytes) -> bool {
        match self.tx.try_send(Outbound::Frame(frame.clone())) {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                metrics::counter!("starling_ws_slow_consumers_total").increment(1);
                let _ = self.close.send(CloseReason::SlowConsumer);
                false
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }
}

/// `(app, user)` → when its sessions ended, and which.
type Tombstones = HashMap<(String, String), Vec<(Instant, Ending)>>;

/// app → user → that user's connections on this node.
type Conns = HashMap<String, HashMap<String, Vec<ConnHandle>>>;

/// The connections of this node, by app and user. Lookups borrow the ids: a push allocates
/// nothing per recipient.
#[derive(Default)]
pub struct Hub {
    conns: RwLock<Conns>,
    /// Recent endings by `(app, user)`, for connections still in their handshake: a lookup
    /// per connection that joins, pruned by [`Hub::sweep`] once a second.
    tombstones: Mutex<Tombstones>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Conns> {
        self.conns.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; closes it at once if its access ended after its handshake checked
    /// it (an ending that reached this node while it was upgrading).
    pub fn add(&self, app: &str, user: &str, h: ConnHandle) {
        if let Some(why) = self.ended_since(app, user, &h) {
            let _ = h.close.send(CloseReason::Ended(why));
        }
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_owned())
            .or_default()
            .entry(user.to_owned())
            .or_default()
            .push(h);
    }

    /// Removes a connection.
    pub fn remove(&self, app: &str, user: &str, conn: &str) {
        let mut m = self.conns.write().unwrap_or_else(|p| p.into_inner());
        let Some(users) = m.get_mut(app) else { return };
        if let Some(v) = users.get_mut(user) {
            v.retain(|h| h.id != conn);
            if v.is_empty() {
                users.remove(user);
            }
        }
        if users.is_empty() {
            m.remove(app);
        }
    }

    /// Pushes a frame to every connection of `users`; slow connections are told to close.
    /// Returns how many connections got it.
    pub fn push(&self, app: &str, users: &[String], frame: &Utf8Bytes) -> usize {
        let m = self.read();
        let Some(by_user) = m.get(app) else { return 0 };
        users
            .iter()
            .filter_map(|u| by_user.get(u.as_str()))
            .flatten()
            .filter(|h| h.offer(frame))
            .count()
    }

    /// Pushes a frame to the connections whose ids `pick` accepts (every one with `|_| true`);
    /// slow connections are told to close. Returns how many got it.
    pub fn push_where(&self, frame: &Utf8Bytes, pick: impl Fn(&str) -> bool) -> usize {
        self.read()
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .filter(|h| pick(&h.id) && h.offer(frame))
            .count()
    }

    fn ended_since(&self, app: &str, user: &str, h: &ConnHandle) -> Option<SessionEnd> {
        let t = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        t.get(&(app.to_owned(), user.to_owned()))?
            .iter()
            .find(|(at, e)| *at >= h.checked_at && e.matches(&h.token))
            .map(|(_, e)| e.why)
    }

    /// Ends the matching sessions of `users`: each is told to close with the ending's code.
    /// Returns how many were told.
    pub fn end(&self, app: &str, users: &[String], ending: &Ending) -> usize {
        {
            let now = Instant::now();
            let mut t = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
            for u in users {
                t.entry((app.to_owned(), u.clone()))
                    .or_default()
                    .push((now, ending.clone()));
            }
        }
        let m = self.read();
        let Some(by_user) = m.get(app) else { return 0 };
        let mut n = 0;
        for h in users
            .iter()
            .filter_map(|u| by_user.get(u.as_str()))
            .flatten()
        {
            if ending.matches(&h.token) {
                let _ = h.close.send(CloseReason::Ended(ending.why));
                n += 1;
            }
        }
        n
    }

    /// Ends every session that `check` says must end (given its app and token). Returns how
    /// many were told.
    /// Also forgets endings older than [`TOMBSTONE_TTL`].
    pub fn sweep(&self, check: impl Fn(&str, &TokenFacts) -> Option<SessionEnd>) -> usize {
        {
            let now = Instant::now();
            let mut t = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
            t.retain(|_, v| {
                v.retain(|(at, _)| now.duration_since(*at) < TOMBSTONE_TTL);
                !v.is_empty()
            });
        }
        let m = self.read();
        let mut n = 0;
        for (app, users) in m.iter() {
            for h in users.values().flatten() {
                if *h.close.borrow() != CloseReason::Open {
                    continue;
                }
                if let Some(why) = check(app, &h.token) {
                    let _ = h.close.send(CloseReason::Ended(why));
                    n += 1;
                }
            }
        }
        n
    }

    /// Asks every connection to close (node shutdown).
    pub fn close_all(&self) {
        for h in self.read().values().flat_map(HashMap::values).flatten() {
            let _ = h.close.send(CloseReason::Shutdown);
        }
    }

    /// Every connection as `(app, user, connection id)`.
    pub fn connections(&self) -> Vec<(String, String, String)> {
        let m = self.read();
        let mut out = Vec::new();
        for (a, users) in m.iter() {
            for (u, v) in users {
                out.extend(v.iter().map(|h| (a.clone(), u.clone(), h.id.clone())));
            }
        }
        out
    }

    /// Open connections on this node.
    pub fn len(&self) -> usize {
        self.read()
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(
        id: &str,
        cap: usize,
    ) -> (
        ConnHandle,
        flume::Receiver<Outbound>,
        watch::Receiver<CloseReason>,
    ) {
        let (tx, rx) = flume::bounded(cap);
        let (close, close_rx) = watch::channel(CloseReason::Open);
        (
            ConnHandle {
                id: id.into(),
                tx,
                close: Arc::new(close),
                token: TokenFacts {
                    kid: "tks_1".into(),
                    jti: Some(format!("utk_{id}")),
                    iat: 100,
                },
                checked_at: Instant::now(),
            },
            rx,
            close_rx,
        )
    }

    #[test]
    fn a_full_queue_cuts_the_slow_connection_off_and_only_it() {
        let hub = Hub::new();
        let (slow, _slow_rx, slow_close) = conn("slow", 2);
        let (fast, fast_rx, fast_close) = conn("fast", 64);
        hub.add("app", "u1", slow);
        hub.add("app", "u2", fast);
        let users = vec!["u1".to_owned(), "u2".to_owned()];
        let frame = Utf8Bytes::from_static("{}");
        for _ in 0..5 {
            hub.push("app", &users, &frame);
        }
        assert_eq!(
            *slow_close.borrow(),
            CloseReason::SlowConsumer,
            "the slow reader is told to close"
        );
        assert_eq!(
            *fast_close.borrow(),
            CloseReason::Open,
            "the others are not"
        );
        let mut got = 0;
        while fast_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 5, "the fast reader got every frame");
        assert_eq!(
            hub.push("other-app", &users, &frame),
            0,
            "apps are separate"
        );
        hub.remove("app", "u1", "slow");
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn an_ending_closes_only_the_sessions_it_names_and_those_still_joining() {
        let hub = Hub::new();
        let (a1, _r1, a1_close) = conn("a1", 4);
        let (a2, _r2, a2_close) = conn("a2", 4);
        let (b, _r3, b_close) = conn("b", 4);
        hub.add("app", "alice", a1);
        hub.add("app", "alice", a2);
        hub.add("app", "bob", b);
        let one = Ending {
            why: SessionEnd::TokenRevoked,
            issued_until: None,
            token_id: Some("utk_a1".into()),
        };
        assert_eq!(hub.end("app", &["alice".into()], &one), 1);
        assert_eq!(
            *a1_close.borrow(),
            CloseReason::Ended(SessionEnd::TokenRevoked)
        );
        assert_eq!(*a2_close.borrow(), CloseReason::Open, "another token");
        let older = Ending {
            why: SessionEnd::TokenRevoked,
            issued_until: Some(99),
            token_id: None,
        };
        assert_eq!(hub.end("app", &["alice".into()], &older), 0, "issued later");
        let ban = Ending::all(SessionEnd::Banned);
        assert_eq!(hub.end("app", &["alice".into()], &ban), 2);
        assert_eq!(*a2_close.borrow(), CloseReason::Ended(SessionEnd::Banned));
        assert_eq!(*b_close.borrow(), CloseReason::Open, "other users go on");

        // A connection checked before the ban that joins after it is closed as it joins; one
        // checked after it is not.
        let (mut late, _r4, late_close) = conn("late", 4);
        late.checked_at = Instant::now() - Duration::from_secs(1);
        hub.add("app", "alice", late);
        assert_eq!(*late_close.borrow(), CloseReason::Ended(SessionEnd::Banned));
        let (fresh, _r5, fresh_close) = conn("fresh", 4);
        hub.add("app", "alice", fresh);
        assert_eq!(*fresh_close.borrow(), CloseReason::Open);

        // The sweep asks about every open connection.
        assert_eq!(
            hub.sweep(|app, t| (app == "app" && t.jti.as_deref() == Some("utk_b"))
                .then_some(SessionEnd::AppSuspended)),
            1
        );
        assert_eq!(
            *b_close.borrow(),
            CloseReason::Ended(SessionEnd::AppSuspended)
        );
    }
}

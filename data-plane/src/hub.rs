//! The connections open on this node, and the push of frames to them.
//!
//! Each connection has a bounded queue of outgoing frames. A frame that does not fit means the
//! client reads too slowly: the connection is cut off (close code 4008) instead of letting its
//! queue grow without bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;

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

/// app → user → that user's connections on this node.
type Conns = HashMap<String, HashMap<String, Vec<ConnHandle>>>;

/// The connections of this node, by app and user. Lookups borrow the ids: a push allocates
/// nothing per recipient.
#[derive(Default)]
pub struct Hub {
    conns: RwLock<Conns>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Conns> {
        self.conns.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection.
    pub fn add(&self, app: &str, user: &str, h: ConnHandle) {
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
}

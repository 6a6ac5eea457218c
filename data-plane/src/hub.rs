//! The connections open on this node, and the push of frames to them.
//!
//! Each connection has a bounded queue of outgoing frames. A frame that does not fit means the
//! client reads too slowly: the connection is cut off (close code 4008) instead of letting its
//! queue grow without bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch};

/// What the writer of a connection sends.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame.
    Frame(Arc<str>),
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
}

/// A connection as the hub sees it.
#[derive(Clone)]
pub struct ConnHandle {
    /// Connection id.
    pub id: String,
    /// The queue.
    pub tx: mpsc::Sender<Outbound>,
    /// Tells the connection to close.
    pub close: Arc<watch::Sender<CloseReason>>,
}

/// The connections of this node, by app and user.
#[derive(Default)]
pub struct Hub {
    conns: RwLock<HashMap<(String, String), Vec<ConnHandle>>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connection.
    pub fn add(&self, app: &str, user: &str, h: ConnHandle) {
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry((app.to_owned(), user.to_owned()))
            .or_default()
            .push(h);
    }

    /// Removes a connection.
    pub fn remove(&self, app: &str, user: &str, conn: &str) {
        let mut m = self.conns.write().unwrap_or_else(|p| p.into_inner());
        let key = (app.to_owned(), user.to_owned());
        if let Some(v) = m.get_mut(&key) {
            v.retain(|h| h.id != conn);
            if v.is_empty() {
                m.remove(&key);
            }
        }
    }

    /// Pushes a frame to every connection of `users`; slow connections are told to close.
    /// Returns how many connections got it.
    pub fn push(&self, app: &str, users: &[String], frame: &Arc<str>) -> usize {
        let m = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for u in users {
            if let Some(v) = m.get(&(app.to_owned(), u.clone())) {
                for h in v {
                    match h.tx.try_send(Outbound::Frame(frame.clone())) {
                        Ok(()) => n += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics::counter!("starling_ws_slow_consumers_total").increment(1);
                            let _ = h.close.send(CloseReason::SlowConsumer);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        n
    }

    /// Asks every connection to close (node shutdown).
    pub fn close_all(&self) {
        for v in self
            .conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            for h in v {
                let _ = h.close.send(CloseReason::Shutdown);
            }
        }
    }

    /// Open connections on this node.
    pub fn len(&self) -> usize {
        self.conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

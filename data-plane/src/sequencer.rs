//! Puts a conversation's new messages back in seq order on the receiving node.
//!
//! Senders commit in seq order (the conversation's row lock), but each pushes its message on
//! its own after the commit, and in a cell from its own node: under load, seq 7 can reach a
//! node before seq 6. Clients order by seq and sync on a gap, so nothing is lost, but every
//! such gap costs them a sync. The node's inbox therefore passes each delivery of a
//! `message.new` through a [`Sequencer`]: one that comes early waits (at most
//! [`REORDER_WINDOW`]) for the ones before it.
//!
//! What it does not hold back: the first delivery of a conversation this node sees (it does not
//! know what came before), a late or repeated one (seq below the next expected: the outbox
//! relay republishing, say; clients drop duplicates by id), and everything that is not a new
//! message. A gap that does not fill within the window is given up: what waited goes out in
//! order, and clients sync the missing seq as before. (A message whose recipients were not on
//! this node when it was sent leaves such a gap; it only costs the window.)

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::bus::Delivery;

/// How long an early delivery waits for the ones before it.
pub const REORDER_WINDOW: Duration = Duration::from_millis(50);
/// At most this many deliveries wait per conversation; past it they all go out in order.
const MAX_PARKED: usize = 256;
/// A conversation with no delivery for this long is forgotten (its next delivery is then a
/// first one again).
const FORGET_AFTER: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Lane {
    /// The seq expected next.
    next: i64,
    /// Early deliveries by seq, and when the oldest started waiting.
    parked: BTreeMap<i64, Delivery>,
    waiting_since: Option<Instant>,
    last_seen: Option<Instant>,
}

/// The reorder buffer of one node's inbox (one task owns it; no locking).
#[derive(Default)]
pub struct Sequencer {
    /// (app, conversation) → lane.
    lanes: HashMap<(String, String), Lane>,
    /// When each wait began, oldest first, so the next deadline needs no scan of every lane.
    /// An entry whose lane no longer waits since that instant is stale and skipped.
    waits: VecDeque<(Instant, (String, String))>,
    last_sweep: Option<Instant>,
}

impl Sequencer {
    /// Takes a delivery; returns those to push now, in order.
    pub fn offer(&mut self, d: Delivery, now: Instant) -> Vec<Delivery> {
        self.sweep(now);
        let Some(order) = d.order.clone() else {
            return vec![d];
        };
        let key = (d.app_id.clone(), order.conversation_id);
        let Some(lane) = self.lanes.get_mut(&key) else {
            self.lanes.insert(
                key,
                Lane {
                    next: order.seq + 1,
                    last_seen: Some(now),
                    ..Default::default()
                },
            );
            return vec![d];
        };
        lane.last_seen = Some(now);
        if order.seq < lane.next {
            return vec![d];
        }
        if order.seq > lane.next {
            lane.parked.insert(order.seq, d);
            if lane.waiting_since.is_none() {
                lane.waiting_since = Some(now);
                self.waits.push_back((now, key));
            }
            if lane.parked.len() > MAX_PARKED {
                return lane.release_all();
            }
            return vec![];
        }
        lane.next += 1;
        let mut out = vec![d];
        lane.release_ready(&mut out);
        out
    }

    /// When the earliest wait ends, if anything waits.
    pub fn deadline(&mut self) -> Option<Instant> {
        while let Some((t, key)) = self.waits.front() {
            if self
                .lanes
                .get(key)
                .is_some_and(|l| l.waiting_since == Some(*t))
            {
                return Some(*t + REORDER_WINDOW);
            }
            self.waits.pop_front();
        }
        None
    }

    /// Gives up the gaps whose window has passed; returns what waited behind them, in order.
    pub fn expire(&mut self, now: Instant) -> Vec<Delivery> {
        let mut out = vec![];
        while self
            .waits
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= REORDER_WINDOW)
        {
            let Some((t, key)) = self.waits.pop_front() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&key)
                && lane.waiting_since == Some(t)
            {
                out.extend(lane.release_all());
            }
        }
        self.sweep(now);
        out
    }

    /// Forgets the conversations idle for [`FORGET_AFTER`] (looks every quarter of it).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < FORGET_AFTER / 4)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.lanes.retain(|_, l| {
            l.waiting_since.is_some()
                || l.last_seen
                    .is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
        });
    }

    /// Conversations tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether no conversation is tracked.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

impl Lane {
    /// Moves the parked deliveries that are now next into `out`.
    fn release_ready(&mut self, out: &mut Vec<Delivery>) {
        while let Some(d) = self.parked.remove(&self.next) {
            out.push(d);
            self.next += 1;
        }
        // Anything parked below `next` cannot be: parked seqs are above `next` when parked.
        if self.parked.is_empty() {
            self.waiting_since = None;
        }
    }

    /// Gives up the gap: everything parked goes, in order, and the next expected follows it.
    fn release_all(&mut self) -> Vec<Delivery> {
        let parked = std::mem::take(&mut self.parked);
        if let Some((&last, _)) = parked.last_key_value() {
            self.next = last + 1;
        }
        self.waiting_since = None;
        parked.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bus::Order;

    fn d(app: &str, conv: &str, seq: i64) -> Delivery {
        Delivery {
            app_id: app.into(),
            users: vec!["u".into()],
            frame: Arc::from(format!("{conv}#{seq}")),
            trace: None,
            order: Some(Order {
                conversation_id: conv.into(),
                seq,
            }),
            end: None,
        }
    }

    fn seqs(v: &[Delivery]) -> Vec<i64> {
        v.iter().map(|d| d.order.as_ref().unwrap().seq).collect()
    }

    #[test]
    fn early_deliveries_wait_for_the_ones_before_them() {
        let t = Instant::now();
        let mut s = Sequencer::default();
        assert_eq!(
            seqs(&s.offer(d("a", "c", 5), t)),
            [5],
            "the first one goes at once"
        );
        assert_eq!(seqs(&s.offer(d("a", "c", 7), t)), Vec::<i64>::new());
        assert_eq!(seqs(&s.offer(d("a", "c", 8), t)), Vec::<i64>::new());
        assert_eq!(s.deadline(), Some(t + REORDER_WINDOW));
        assert_eq!(seqs(&s.offer(d("a", "c", 6), t)), [6, 7, 8]);
        assert_eq!(s.deadline(), None, "nothing waits");
        assert_eq!(seqs(&s.offer(d("a", "c", 9), t)), [9]);
    }

    #[test]
    fn conversations_and_apps_are_separate_lanes() {
        let t = Instant::now();
        let mut s = Sequencer::default();
        s.offer(d("a", "c", 1), t);
        s.offer(d("b", "c", 10), t);
        assert!(s.offer(d("a", "c", 3), t).is_empty(), "a/c waits for 2");
        assert_eq!(seqs(&s.offer(d("b", "c", 11), t)), [11], "b/c does not");
        assert_eq!(seqs(&s.offer(d("a", "x", 3), t)), [3], "a/x is new");
    }

    #[test]
    fn a_gap_that_does_not_fill_is_given_up_after_the_window() {
        let t = Instant::now();
        let mut s = Sequencer::default();
        s.offer(d("a", "c", 1), t);
        s.offer(d("a", "c", 4), t);
        s.offer(d("a", "c", 3), t + Duration::from_millis(10));
        assert!(s.expire(t + Duration::from_millis(49)).is_empty());
        assert_eq!(seqs(&s.expire(t + REORDER_WINDOW)), [3, 4]);
        // Seq 2 shows up late: it goes at once (clients order it), and 5 follows 4.
        assert_eq!(seqs(&s.offer(d("a", "c", 2), t + REORDER_WINDOW)), [2]);
        assert_eq!(seqs(&s.offer(d("a", "c", 5), t + REORDER_WINDOW)), [5]);
    }

    #[test]
    fn repeats_and_other_events_are_not_held() {
        let t = Instant::now();
        let mut s = Sequencer::default();
        s.offer(d("a", "c", 1), t);
        s.offer(d("a", "c", 2), t);
        assert_eq!(seqs(&s.offer(d("a", "c", 1), t)), [1], "a repeat goes");
        let mut other = d("a", "c", 0);
        other.order = None;
        s.offer(d("a", "c", 9), t);
        assert_eq!(s.offer(other, t).len(), 1, "an unordered event goes");
    }

    #[test]
    fn what_waits_and_what_is_remembered_stay_bounded() {
        let t = Instant::now();
        let mut s = Sequencer::default();
        s.offer(d("a", "c", 0), t);
        for i in 2..=(MAX_PARKED as i64 + 1) {
            assert!(s.offer(d("a", "c", i), t).is_empty());
        }
        let out = s.offer(d("a", "c", MAX_PARKED as i64 + 2), t);
        assert_eq!(out.len(), MAX_PARKED + 1, "past the bound everything goes");
        assert_eq!(
            seqs(&out),
            (2..=(MAX_PARKED as i64 + 2)).collect::<Vec<_>>()
        );

        for i in 0..1000 {
            s.offer(d("a", &format!("conv{i}"), 1), t);
        }
        assert_eq!(s.len(), 1001);
        s.offer(d("a", "fresh", 1), t + FORGET_AFTER);
        assert_eq!(s.len(), 1, "idle conversations are forgotten");
    }
}

//! The live tail: the most recent events in a bounded ring, and a broadcast of new ones. Each
//! event gets an id, so a reader that reconnects resumes after the last one it saw (the SSE
//! `Last-Event-ID`), and a reader that falls behind is told how many it missed.
//!
//! An id is the process's epoch (random, drawn at start) in its high bits and the event's
//! number in this process in the low [`SEQ_BITS`]: an id from before a restart is not
//! mistaken for one of this process (numbers start again at 1), so its reader gets the whole
//! ring and is told what the ring no longer holds, instead of nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::line::LogLine;

/// Bits of an id that number the events of one epoch (10^12: years of logging).
pub const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Epochs are below this, so that an id fits in 63 bits.
const EPOCHS: u64 = 1 << 23;

/// One event as the tail holds it: parsed (for filters) and as its JSON line (for readers).
#[derive(Debug)]
pub struct TailEvent {
    /// The event's id (epoch and number).
    pub seq: u64,
    pub line: LogLine,
    pub json: String,
}

struct Ring {
    events: VecDeque<Arc<TailEvent>>,
    /// The next event's id.
    next_seq: u64,
    /// Events pushed since the start.
    pushed: u64,
}

pub struct Tail {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<TailEvent>>,
    capacity: usize,
}

/// Where a new reader starts.
pub struct Subscription {
    /// Events from the ring to send first, oldest first.
    pub backlog: Vec<Arc<TailEvent>>,
    /// Events the reader asked for (after its last id) that the ring no longer holds.
    pub missed: u64,
    pub live: broadcast::Receiver<Arc<TailEvent>>,
}

/// A random epoch in 1..EPOCHS (0 never: a reader's id 0 or a small id from a client that
/// made it up is never taken for one of ours).
fn new_epoch() -> u64 {
    let mut raw = [0u8; 8];
    // Without randomness the time serves: it differs between restarts as well.
    let r = getrandom::fill(&mut raw)
        .map_or_else(|_| crate::time::now_ms(), |()| u64::from_le_bytes(raw));
    1 + r % (EPOCHS - 1)
}

impl Tail {
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "log.tail_events_max is validated to be at least 1"
        );
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                next_seq: (new_epoch() << SEQ_BITS) | 1,
                pushed: 0,
            }),
            tx: broadcast::channel(capacity).0,
            capacity,
        }
    }

    /// Adds an event; never blocks on readers (a slow one skips).
    pub fn push(&self, line: LogLine, json: String) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let event = Arc::new(TailEvent {
            seq: ring.next_seq,
            line,
            json,
        });
        ring.next_seq = if ring.next_seq & SEQ_MASK == SEQ_MASK {
            // An epoch's numbers are spent: a new epoch (readers resuming then get the ring).
            (((ring.next_seq >> SEQ_BITS) % (EPOCHS - 1) + 1) << SEQ_BITS) | 1
        } else {
            ring.next_seq + 1
        };
        ring.pushed += 1;
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(Arc::clone(&event));
        // Under the ring's lock, so that a subscriber sees each event exactly once.
        let _ = self.tx.send(event);
    }

    /// A new reader: after event `after` if it says (a reconnect), else the last `backlog`.
    /// An `after` this tail did not give out (from before a restart) gets the whole ring, with
    /// `missed` the events of this process that left it.
    pub fn subscribe(&self, after: Option<u64>, backlog: usize) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.tx.subscribe();
        let ours = |id: u64| id >> SEQ_BITS == ring.next_seq >> SEQ_BITS && id < ring.next_seq;
        let (backlog, missed) = match after {
            Some(after) if ours(after) => {
                let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
                let missed = oldest.saturating_sub(after.saturating_add(1));
                let events = ring
                    .events
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect();
                (events, missed)
            }
            Some(_) => (
                ring.events.iter().cloned().collect(),
                ring.pushed - ring.events.len() as u64,
            ),
            None => {
                let skip = ring.events.len().saturating_sub(backlog);
                (ring.events.iter().skip(skip).cloned().collect(), 0)
            }
        };
        Subscription {
            backlog,
            missed,
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::line::Severity;

    fn push(tail: &Tail, msg: &str) {
        let line = LogLine {
            ts: String::new(),
            level: Severity::Info,
            target: "t".into(),
            thread: None,
            msg: msg.into(),
            fields: Default::default(),
        };
        tail.push(line, msg.into());
    }

    #[tokio::test]
    async fn backlog_then_live_and_a_reconnect_resumes() {
        let tail = Tail::new(3);
        for m in ["a", "b", "c", "d"] {
            push(&tail, m);
        }
        let mut sub = tail.subscribe(None, 2);
        let got: Vec<_> = sub.backlog.iter().map(|e| e.json.as_str()).collect();
        assert_eq!(got, ["c", "d"]);
        push(&tail, "e");
        let e = sub.live.recv().await.unwrap();
        assert_eq!((e.seq & SEQ_MASK, e.json.as_str()), (5, "e"));
        let epoch = e.seq - 5;
        // Resuming after "a" (number 1): "b" has left the ring (holds c, d, e): one missed.
        let again = tail.subscribe(Some(epoch + 1), 0);
        assert_eq!(again.missed, 1);
        assert_eq!(again.backlog.len(), 3);
        assert_eq!(tail.subscribe(Some(epoch + 5), 0).backlog.len(), 0);
    }

    #[test]
    fn an_id_from_before_a_restart_gets_the_whole_ring() {
        // The old process had logged far more than this one: its reader's id is past ours.
        let tail = Tail::new(3);
        for m in ["a", "b", "c"] {
            push(&tail, m);
        }
        for old in [1000, 50_000, u64::MAX] {
            let sub = tail.subscribe(Some(old), 0);
            let got: Vec<_> = sub.backlog.iter().map(|e| e.json.as_str()).collect();
            assert_eq!(got, ["a", "b", "c"], "after {old}");
            assert_eq!(sub.missed, 0);
        }
        // Another epoch, a number this one has given out: still not ours.
        let c = tail.subscribe(None, 1).backlog[0].seq;
        let other_epoch = c ^ (1 << SEQ_BITS);
        assert_eq!(tail.subscribe(Some(other_epoch), 0).backlog.len(), 3);
        // Once events have left the ring, the reader is told how many.
        push(&tail, "d");
        assert_eq!(tail.subscribe(Some(1000), 0).missed, 1);
    }

    #[tokio::test]
    async fn a_slow_reader_is_told_how_many_it_missed() {
        let tail = Tail::new(2);
        let mut sub = tail.subscribe(None, 0);
        for m in ["a", "b", "c", "d", "e"] {
            push(&tail, m);
        }
        match sub.live.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(sub.live.recv().await.unwrap().json, "d");
    }
}

//! The live tail: the most recent events in a bounded ring, and a broadcast of new ones. Each
//! event gets a sequence number, so a reader that reconnects resumes after the last one it saw
//! (the SSE `Last-Event-ID`), and a reader that falls behind is told how many it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::line::LogLine;

/// One event as the tail holds it: parsed (for filters) and as its JSON line (for readers).
#[derive(Debug)]
pub struct TailEvent {
    pub seq: u64,
    pub line: LogLine,
    pub json: String,
}

struct Ring {
    events: VecDeque<Arc<TailEvent>>,
    next_seq: u64,
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

impl Tail {
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "log.tail_events_max is validated to be at least 1"
        );
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                next_seq: 1,
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
        ring.next_seq += 1;
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(Arc::clone(&event));
        // Under the ring's lock, so that a subscriber sees each event exactly once.
        let _ = self.tx.send(event);
    }

    /// A new reader: after event `after` if it says (a reconnect), else the last `backlog`.
    pub fn subscribe(&self, after: Option<u64>, backlog: usize) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.tx.subscribe();
        let (backlog, missed) = match after {
            Some(after) => {
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
        assert_eq!((e.seq, e.json.as_str()), (5, "e"));
        // Resuming after "a" (seq 1): "b" has left the ring (holds c, d, e): one missed.
        let again = tail.subscribe(Some(1), 0);
        assert_eq!(again.missed, 1);
        assert_eq!(again.backlog.len(), 3);
        assert_eq!(tail.subscribe(Some(5), 0).backlog.len(), 0);
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

//! The bounded queue between delivery and the sender, in two lanes (messages', system
//! notifications'), folding a waiting direct or system push's later messages into it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::{PushConfig, PushRecord};
use crate::store::{ConvId, ConvKind, UserId};

/// Commit groups' records waiting for the sender in one lane, at most (the records in them are
/// bounded by the lane's `push.queue_max` or `push.system_queue_max`, counted apart).
const QUEUE_BATCHES_MAX: usize = 4_096;

impl PushRecord {
    fn lane(&self) -> Lane {
        if self.conv.kind() == ConvKind::System {
            Lane::System
        } else {
            Lane::Messages
        }
    }
}

/// The queue's two lanes. System notifications wait in their own, with its own bound, and the
/// sender takes them only when no message's push waits: a broadcast to every user (one record
/// per offline user, written as fast as the job commits) must not take the room, nor the
/// sender's turn, that direct and group messages' pushes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Direct and group messages (`push.queue_max`).
    Messages,
    /// System notifications (`push.system_queue_max`).
    System,
}

/// One lane: its channel and how many records wait in it.
struct LaneQueue {
    tx: mpsc::Sender<Vec<PushRecord>>,
    /// Records in the lane (not batches), until the sender is done with them.
    queued: AtomicUsize,
    records_max: usize,
    /// The counter of records dropped for lack of room in this lane.
    dropped_metric: &'static str,
}

impl LaneQueue {
    fn new(
        records_max: usize,
        dropped_metric: &'static str,
    ) -> (Self, mpsc::Receiver<Vec<PushRecord>>) {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES_MAX);
        let lane = Self {
            tx,
            queued: AtomicUsize::new(0),
            records_max,
            dropped_metric,
        };
        (lane, rx)
    }

    /// Queues what fits of `records` (already unfolded); the rest is dropped and counted.
    fn offer(&self, mut records: Vec<PushRecord>, pairs: &mut Pairs) {
        let room = self
            .records_max
            .saturating_sub(self.queued.load(Ordering::Acquire));
        if records.len() > room {
            metrics::counter!(self.dropped_metric).increment((records.len() - room) as u64);
            forget_pairs(pairs, &records[room..]);
            records.truncate(room);
            if records.is_empty() {
                return;
            }
        }
        let n = records.len();
        self.queued.fetch_add(n, Ordering::AcqRel);
        match self.tx.try_send(records) {
            Ok(()) => metrics::counter!("ringchat_push_queued_total").increment(n as u64),
            Err(TrySendError::Full(records) | TrySendError::Closed(records)) => {
                forget_pairs(pairs, &records);
                self.queued.fetch_sub(n, Ordering::AcqRel);
                metrics::counter!(self.dropped_metric).increment(n as u64);
            }
        }
    }
}

/// The newest message folded into a waiting push: `(seq, server_time_ms)`.
type Pairs = HashMap<(UserId, ConvId), (u64, u64)>;

/// The bounded queue between delivery and the sender.
pub(crate) struct PushQueue {
    messages: LaneQueue,
    system: LaneQueue,
    /// (recipient, conversation) of every direct or system record waiting in a lane (not
    /// yet taken by the sender), with the newest message folded into it: a later message for
    /// the same pair is folded into that push (one notification wakes the device), so one
    /// sender flooding an offline user takes one place in the queue, not all of them. The push
    /// names the newest folded message, so it is as fresh as that one (`push.max_age_ms`).
    /// Group records (recipient 0) are not folded: a later one may carry a mention. At most
    /// one entry per waiting record.
    waiting_pairs: Mutex<Pairs>,
    /// Groups of at most this many members push every message (`push.group_members_max`).
    pub(crate) group_members_max: u32,
}

/// The sender's end of the queue's two lanes.
pub(crate) struct PushReceiver {
    messages: mpsc::Receiver<Vec<PushRecord>>,
    system: mpsc::Receiver<Vec<PushRecord>>,
}

impl PushReceiver {
    /// The next batch and its lane: a message's push whenever one waits, a system
    /// notification's only when none does. `None` once the queue is gone.
    pub(crate) async fn recv(&mut self) -> Option<(Lane, Vec<PushRecord>)> {
        tokio::select! {
            biased;
            Some(records) = self.messages.recv() => Some((Lane::Messages, records)),
            Some(records) = self.system.recv() => Some((Lane::System, records)),
            else => None,
        }
    }

    /// A message's batch waiting now, if any: taken between the chunks of a system batch,
    /// so that a broadcast's chunks (each retried while the push gateway fails) never hold a
    /// message's push up for more than one chunk.
    pub(crate) fn try_message(&mut self) -> Option<Vec<PushRecord>> {
        self.messages.try_recv().ok()
    }
}

impl PushQueue {
    pub(crate) fn new(config: &PushConfig) -> (Arc<Self>, PushReceiver) {
        let (messages, messages_rx) =
            LaneQueue::new(config.queue_max, "ringchat_push_dropped_total");
        let (system, system_rx) = LaneQueue::new(
            config.system_queue_max,
            "ringchat_push_system_dropped_total",
        );
        let queue = Arc::new(Self {
            messages,
            system,
            waiting_pairs: Mutex::new(HashMap::new()),
            group_members_max: config.group_members_max,
        });
        let rx = PushReceiver {
            messages: messages_rx,
            system: system_rx,
        };
        (queue, rx)
    }

    fn lane(&self, lane: Lane) -> &LaneQueue {
        match lane {
            Lane::Messages => &self.messages,
            Lane::System => &self.system,
        }
    }

    /// Hands a commit group's records to the sender without waiting; a direct or system
    /// record whose (recipient, conversation) already waits is folded into it, and what does
    /// not fit in its lane is dropped and counted.
    pub(crate) fn offer(&self, mut records: Vec<PushRecord>) {
        if records.is_empty() {
            return;
        }
        let mut pairs = self.pairs();
        let offered = records.len();
        records.retain(|r| {
            if r.user == 0 {
                return true;
            }
            match pairs.entry((r.user, r.conv)) {
                std::collections::hash_map::Entry::Occupied(mut waiting) => {
                    let newest = waiting.get_mut();
                    if r.seq > newest.0 {
                        *newest = (r.seq, r.server_time_ms);
                    }
                    false
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((r.seq, r.server_time_ms));
                    true
                }
            }
        });
        if records.len() < offered {
            metrics::counter!("ringchat_push_folded_total")
                .increment((offered - records.len()) as u64);
        }
        // Commit groups of messages carry no system records and a notification's carry only
        // those, so this split rarely allocates.
        let system: Vec<PushRecord> = if records.iter().any(|r| r.lane() == Lane::System) {
            let (system, messages) = records.into_iter().partition(|r| r.lane() == Lane::System);
            records = messages;
            system
        } else {
            Vec::new()
        };
        if !records.is_empty() {
            self.messages.offer(records, &mut pairs);
        }
        if !system.is_empty() {
            self.system.offer(system, &mut pairs);
        }
    }

    /// The sender took `records` off the queue to resolve and send them: each direct or system
    /// record now names the newest message folded into it, and later messages of their pairs
    /// get pushes of their own (one folded now would ride on a push whose recipients and
    /// devices are being decided already, or that is sent).
    pub(super) fn received(&self, records: &mut [PushRecord]) {
        let mut pairs = self.pairs();
        for r in records.iter_mut().filter(|r| r.user != 0) {
            if let Some((seq, at)) = pairs.remove(&(r.user, r.conv)) {
                (r.seq, r.server_time_ms) = (seq, at);
            }
        }
    }

    /// The sender is done with `n` records of `lane` (sent, expired or given up): they leave
    /// the lane's bound.
    pub(super) fn taken(&self, lane: Lane, n: usize) {
        self.lane(lane).queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, Pairs> {
        self.waiting_pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records waiting now in `lane`.
    pub(crate) fn waiting(&self, lane: Lane) -> usize {
        self.lane(lane).queued.load(Ordering::Acquire)
    }
}

fn forget_pairs(pairs: &mut Pairs, records: &[PushRecord]) {
    for r in records.iter().filter(|r| r.user != 0) {
        pairs.remove(&(r.user, r.conv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Below every user id in these tests (ids start above it).
    const U: UserId = 100_000_000;

    fn record(user: UserId, from: UserId, seq: u64) -> PushRecord {
        PushRecord {
            user,
            conv: ConvId::direct(user, from).expect("conv"),
            seq,
            from,
            server_time_ms: seq,
        }
    }

    fn system(user: UserId, seq: u64) -> PushRecord {
        PushRecord {
            user,
            conv: ConvId::system(user).expect("conv"),
            seq,
            from: 0,
            server_time_ms: seq,
        }
    }

    /// One sender flooding an offline user takes one place in the queue: another user's push
    /// still fits; the sender, taking the waiting push, gets it naming the newest message
    /// folded into it, and (before it is resolved or sent) the next message gets its own.
    #[tokio::test]
    async fn a_flood_for_one_user_and_conversation_folds_into_one_waiting_push() {
        let config = PushConfig {
            queue_max: 4,
            ..PushConfig::default()
        };
        let (queue, mut rx) = PushQueue::new(&config);
        let (victim, flooder, other, friend) = (U + 1, U + 2, U + 3, U + 4);
        for round in 0..10 {
            queue.offer(
                (0..8)
                    .map(|i| record(victim, flooder, round * 8 + i))
                    .collect(),
            );
        }
        queue.offer(vec![record(other, friend, 1)]);
        assert_eq!(queue.waiting(Lane::Messages), 2);
        let (lane, mut first) = rx.recv().await.expect("the flood's batch");
        assert_eq!(
            (lane, first.as_slice()),
            (Lane::Messages, &[record(victim, flooder, 0)][..])
        );
        let (_, second) = rx.recv().await.expect("the other user's push");
        assert_eq!(second, [record(other, friend, 1)]);

        queue.received(&mut first);
        assert_eq!(first, [record(victim, flooder, 79)], "the newest folded");
        queue.taken(lane, first.len());
        queue.offer(vec![record(victim, flooder, 80)]);
        assert_eq!(
            rx.recv().await.expect("its own push again").1,
            [record(victim, flooder, 80)]
        );
        // Group records (recipient 0) are never folded: a later one may carry a mention.
        let group = PushRecord {
            user: 0,
            ..record(victim, flooder, 81)
        };
        queue.offer(vec![group, group]);
        assert_eq!(rx.recv().await.expect("both").1, [group, group]);
    }

    /// A record dropped for lack of room leaves no fold behind: the next one is queued.
    #[tokio::test]
    async fn a_dropped_record_does_not_fold_later_ones() {
        let config = PushConfig {
            queue_max: 1,
            ..PushConfig::default()
        };
        let (queue, mut rx) = PushQueue::new(&config);
        queue.offer(vec![record(U + 1, U + 2, 1)]);
        queue.offer(vec![record(U + 3, U + 4, 1)]);
        assert_eq!(queue.waiting(Lane::Messages), 1, "no room for the second");
        let (lane, mut first) = rx.recv().await.expect("first");
        assert_eq!(first, [record(U + 1, U + 2, 1)]);
        queue.received(&mut first);
        queue.taken(lane, first.len());
        queue.offer(vec![record(U + 3, U + 4, 2)]);
        assert_eq!(
            rx.recv().await.expect("queued").1,
            [record(U + 3, U + 4, 2)]
        );
    }

    /// A broadcast's system records bigger than the whole queue fill only their own lane: a
    /// direct message's push offered after them is queued and taken first.
    #[tokio::test]
    async fn a_broadcast_does_not_crowd_out_direct_pushes() {
        let config = PushConfig {
            queue_max: 2,
            system_queue_max: 3,
            ..PushConfig::default()
        };
        let (queue, mut rx) = PushQueue::new(&config);
        queue.offer((1..=10).map(|i| system(U + i, 1)).collect());
        queue.offer(vec![record(U + 1, U + 20, 1)]);
        assert_eq!(queue.waiting(Lane::System), 3, "the system lane's bound");
        assert_eq!(queue.waiting(Lane::Messages), 1);
        assert_eq!(
            rx.recv().await.expect("the direct push"),
            (Lane::Messages, vec![record(U + 1, U + 20, 1)])
        );
        assert_eq!(
            rx.recv().await.expect("then the broadcast's"),
            (Lane::System, (1..=3).map(|i| system(U + i, 1)).collect())
        );
    }
}

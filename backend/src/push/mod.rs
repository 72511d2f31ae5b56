//! Offline push: when a message is stored for a user none of whose devices is online, the push
//! gateway (`[push] url`, which relays to APNs, FCM, …) is asked to notify the user's devices.
//!
//! The message path's share is small and never waits: delivery, which already looks up each
//! direct or system recipient's sessions to push the message to them, notes a [`PushRecord`]
//! (a few integers, no allocation of its own) for a recipient it found with no session, and
//! hands the commit group's records over in one non-blocking [`PushQueue::offer`]. Group
//! messages are noted only when they may concern someone offline (mentions, small groups);
//! whom they concern is worked out by the sender. Past `push.queue_max` waiting records,
//! records are dropped and counted (`ringchat_push_dropped_total`).
//!
//! The sender (`sender.rs`, one tokio task) resolves records into pushes (`resolve.rs`: the
//! devices' tokens, a group's offline members, an optional preview), posts them to the webhook
//! in batches signed with HMAC-SHA256 (`webhook.rs`), and retries with exponential backoff.
//! Devices register their tokens with `RegisterPushToken` (`tokens.rs`); a device's token is
//! forgotten when its login ends (`forget.rs`).
//!
//! Cluster mode: the conversation's owner node decides "offline" from its own sessions, then
//! the sender drops the pushes of users whose routes (Redis) place a device on another live
//! node; when Redis cannot say, it pushes (`sender.rs` says why).

mod config;
mod forget;
mod resolve;
mod sender;
mod tokens;
mod webhook;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{self, error::TrySendError};

pub use config::PushConfig;
pub(crate) use forget::SignedOut;
pub(crate) use sender::start;

use crate::store::{ConvId, UserId};

/// Commit groups' records waiting for the sender, at most (the records in them are bounded by
/// `push.queue_max`, counted apart).
const QUEUE_BATCHES_MAX: usize = 4_096;

/// A stored message that may need a push: who it is for (`user`, or 0 for a group message
/// whose recipients the sender works out) and which message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushRecord {
    pub user: UserId,
    pub conv: ConvId,
    pub seq: u64,
    pub from: UserId,
    pub server_time_ms: u64,
}

impl PushRecord {
    pub(crate) fn of(user: UserId, m: &crate::store::MessageRecord) -> Self {
        Self {
            user,
            conv: m.conv_id,
            seq: m.seq,
            from: m.from,
            server_time_ms: m.server_time_ms,
        }
    }
}

/// The bounded queue between delivery and the sender.
pub(crate) struct PushQueue {
    tx: mpsc::Sender<Vec<PushRecord>>,
    /// Records in the queue (not batches).
    queued: AtomicUsize,
    /// (recipient, conversation) of every direct or system record waiting in the channel (not
    /// yet taken by the sender): a later message for the same pair is folded into that push (one notification wakes the device),
    /// so one sender flooding an offline user takes one place in the queue, not all of them.
    /// Group records (recipient 0) are not folded: a later one may carry a mention. At most
    /// `records_max` entries (one per waiting record).
    waiting_pairs: Mutex<HashSet<(UserId, ConvId)>>,
    records_max: usize,
    /// Groups of at most this many members push every message (`push.group_members_max`).
    pub(crate) group_members_max: u32,
}

impl PushQueue {
    pub(crate) fn new(config: &PushConfig) -> (Arc<Self>, mpsc::Receiver<Vec<PushRecord>>) {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES_MAX);
        let queue = Arc::new(Self {
            tx,
            queued: AtomicUsize::new(0),
            waiting_pairs: Mutex::new(HashSet::new()),
            records_max: config.queue_max,
            group_members_max: config.group_members_max,
        });
        (queue, rx)
    }

    /// Hands a commit group's records to the sender without waiting; a direct record whose
    /// (recipient, conversation) already waits is folded into it, and what does not fit is
    /// dropped and counted.
    pub(crate) fn offer(&self, mut records: Vec<PushRecord>) {
        if records.is_empty() {
            return;
        }
        let mut pairs = self.pairs();
        let offered = records.len();
        records.retain(|r| r.user == 0 || pairs.insert((r.user, r.conv)));
        if records.len() < offered {
            metrics::counter!("ringchat_push_folded_total")
                .increment((offered - records.len()) as u64);
            if records.is_empty() {
                return;
            }
        }
        let room = self
            .records_max
            .saturating_sub(self.queued.load(Ordering::Acquire));
        if records.len() > room {
            metrics::counter!("ringchat_push_dropped_total")
                .increment((records.len() - room) as u64);
            forget_pairs(&mut pairs, &records[room..]);
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
                forget_pairs(&mut pairs, &records);
                self.queued.fetch_sub(n, Ordering::AcqRel);
                metrics::counter!("ringchat_push_dropped_total").increment(n as u64);
            }
        }
    }

    /// The sender took `records` off the queue to resolve and send them: later messages of
    /// their pairs get pushes of their own (one folded now would ride on a push whose
    /// recipients and devices are being decided already, or that is sent).
    fn received(&self, records: &[PushRecord]) {
        forget_pairs(&mut self.pairs(), records);
    }

    /// The sender is done with `n` records (sent or given up): they leave `push.queue_max`.
    fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, HashSet<(UserId, ConvId)>> {
        self.waiting_pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

fn forget_pairs(pairs: &mut HashSet<(UserId, ConvId)>, records: &[PushRecord]) {
    for r in records.iter().filter(|r| r.user != 0) {
        pairs.remove(&(r.user, r.conv));
    }
}

/// Offline push of a server with `[push] url` set: the queue delivery offers to, and its
/// receiving end until the sender takes it.
pub(crate) struct Push {
    pub(crate) queue: Arc<PushQueue>,
    config: PushConfig,
    rx: Mutex<Option<mpsc::Receiver<Vec<PushRecord>>>>,
}

impl Push {
    /// `None` when push is off.
    pub(crate) fn new(config: &PushConfig) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        let (queue, rx) = PushQueue::new(config);
        Some(Self {
            queue,
            config: config.clone(),
            rx: Mutex::new(Some(rx)),
        })
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Vec<PushRecord>>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The push metrics' help texts, registered once at start.
fn describe() {
    metrics::describe_counter!(
        "ringchat_push_queued_total",
        "Offline pushes queued for the push gateway (one per message and offline recipient, or per group message that may concern one)"
    );
    metrics::describe_counter!(
        "ringchat_push_folded_total",
        "Offline pushes folded into one already waiting for the same user and conversation"
    );
    metrics::describe_counter!(
        "ringchat_push_dropped_total",
        "Offline pushes dropped because push.queue_max were waiting"
    );
    metrics::describe_counter!(
        "ringchat_push_sent_total",
        "Pushes the push gateway accepted (one per user and message)"
    );
    metrics::describe_counter!(
        "ringchat_push_failed_total",
        "Pushes given up after push.retries_max retries or refused by the push gateway"
    );
    metrics::describe_counter!(
        "ringchat_push_retries_total",
        "Webhook requests retried after a failure"
    );
    metrics::describe_counter!(
        "ringchat_push_online_elsewhere_total",
        "Cluster mode: pushes not sent because the user has a device on another node"
    );
    metrics::describe_counter!(
        "ringchat_push_routes_unknown_total",
        "Cluster mode: pushes sent without knowing the user's other nodes (Redis did not answer)"
    );
    metrics::describe_gauge!(
        "ringchat_push_queue_records",
        "Offline pushes waiting for the sender"
    );
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
            server_time_ms: 1,
        }
    }

    /// One sender flooding an offline user takes one place in the queue: another user's push
    /// still fits, and once the sender has taken the waiting push (before it is resolved or
    /// sent) the next message gets its own.
    #[test]
    fn a_flood_for_one_user_and_conversation_folds_into_one_waiting_push() {
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
        assert_eq!(queue.waiting(), 2);
        let first = rx.try_recv().expect("the flood's batch");
        assert_eq!(first, [record(victim, flooder, 0)]);
        let second = rx.try_recv().expect("the other user's push");
        assert_eq!(second, [record(other, friend, 1)]);

        queue.received(&first);
        queue.taken(first.len());
        queue.offer(vec![record(victim, flooder, 80)]);
        assert_eq!(
            rx.try_recv().expect("its own push again"),
            [record(victim, flooder, 80)]
        );
        // Group records (recipient 0) are never folded: a later one may carry a mention.
        let group = PushRecord {
            user: 0,
            ..record(victim, flooder, 81)
        };
        queue.offer(vec![group, group]);
        assert_eq!(rx.try_recv().expect("both"), [group, group]);
    }

    /// A record dropped for lack of room leaves no fold behind: the next one is queued.
    #[test]
    fn a_dropped_record_does_not_fold_later_ones() {
        let config = PushConfig {
            queue_max: 1,
            ..PushConfig::default()
        };
        let (queue, mut rx) = PushQueue::new(&config);
        queue.offer(vec![record(U + 1, U + 2, 1)]);
        queue.offer(vec![record(U + 3, U + 4, 1)]);
        let first = rx.try_recv().expect("first");
        assert!(rx.try_recv().is_err(), "no room for the second");
        queue.received(&first);
        queue.taken(first.len());
        queue.offer(vec![record(U + 3, U + 4, 2)]);
        assert_eq!(rx.try_recv().expect("queued"), [record(U + 3, U + 4, 2)]);
    }
}

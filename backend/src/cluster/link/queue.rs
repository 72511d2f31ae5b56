//! One peer's outgoing queue: bounded in items, drained into batches bounded in bytes. Plain
//! data under the peer's lock; the sender task (`peer.rs`) does the waiting.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prost::Message;
use ringchat_proto::v1::{NodeBatch, NodeItem, node_item::Item};

use crate::cluster::Cluster;

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `cluster.peer_queue_items_max` items are waiting already.
    Full,
    /// The link is down (between reconnects): nothing waits for it.
    Down,
}

impl Refused {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Full => "full",
            Refused::Down => "down",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    /// Each item with the time it was queued (this process's monotonic clock): `drop_stale`.
    items: VecDeque<(Instant, NodeItem)>,
    items_max: usize,
    /// Accepting items: the link is up or being dialed (not in a backoff pause).
    pub(crate) open: bool,
    /// Frames for this peer were dropped since the last batch: its sessions must catch up.
    pub(crate) missed: bool,
    /// Items dropped by `drain` for being over the item limit, not counted yet.
    pub(crate) oversized: u64,
}

/// How long after it was queued a push may still be put on the wire, in milliseconds: within
/// it no other node can have taken its conversation over. This node's record lives
/// `node_ttl_ms` past its last heartbeat, and the others keep it in their views at least that
/// long, so a conversation moves at the earliest `node_ttl_ms` after a heartbeat, which came
/// at most `heartbeat_interval_ms` before the push was queued; half a heartbeat more of margin
/// (the wire after the check, clocks that tick apart). Past it (this process was paused, or
/// its queue backed up for seconds) the new owner may have pushed later seqs already, and
/// this one would arrive after them: the client sees seqs out of order. At least half a
/// heartbeat, as `node_ttl_ms` is at least two (`ClusterConfig::check`). A node whose last
/// heartbeat that reached Redis is older than one interval (cut off from Redis, still
/// committing the conversations it holds) ages its pushes from one interval after that
/// heartbeat instead (`Heartbeats::aged_from`), so the bound holds there too.
pub(crate) fn push_fresh_ms(node_ttl_ms: u64, heartbeat_interval_ms: u64) -> u64 {
    node_ttl_ms
        .saturating_sub(heartbeat_interval_ms + heartbeat_interval_ms / 2)
        .max(1)
}

/// When this node's heartbeat last reached Redis, as its peers' queues stamp what they take
/// (`Queue::push_all`). Unattached (before the link has its cluster, and in tests): pushes
/// are aged from when they are queued.
pub(crate) struct Heartbeats {
    /// `cluster.heartbeat_interval_ms`.
    interval: Duration,
    cluster: OnceLock<Arc<Cluster>>,
}

impl Heartbeats {
    pub(crate) fn new(interval_ms: u64) -> Self {
        Self {
            interval: Duration::from_millis(interval_ms),
            cluster: OnceLock::new(),
        }
    }

    pub(crate) fn attach(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// What an item queued at `now` is aged from (`aged_from`), by this node's view: when the
    /// view was last read from Redis is when its last heartbeat started (the same call).
    pub(crate) fn aged_from(&self, now: Instant) -> Instant {
        match self.cluster.get().map(|c| c.view().read_at_ms) {
            // Never read: this node owns no conversation, it has no pushes of its own.
            None | Some(0) => now,
            Some(read_at_ms) => aged_from(now, crate::time::now_ms(), read_at_ms, self.interval),
        }
    }
}

/// What an item queued at `now` (`now_ms` on the wall clock) is aged from: `now`, or one
/// heartbeat `interval` after this node's last heartbeat that reached Redis (started at
/// `heartbeat_ms`), if that is earlier. `push_fresh_ms` assumes a heartbeat at most one
/// interval before the push; a node cut off from Redis still commits the conversations it
/// holds (the fence stops it only once another node claims one), and its record expires
/// `node_ttl_ms` after its last heartbeat, however recent the push.
pub(crate) fn aged_from(
    now: Instant,
    now_ms: u64,
    heartbeat_ms: u64,
    interval: Duration,
) -> Instant {
    let since = Duration::from_millis(now_ms.saturating_sub(heartbeat_ms));
    now.checked_sub(since)
        .map_or(now, |heartbeat| now.min(heartbeat + interval))
}

/// Whether `item` is in seq order with a conversation's other pushes (a message's push to
/// users or to a group, a membership change): sent late, past `push_fresh_ms`, it may
/// overtake what a new owner sent. Every such item is one whose loss `lost_needs_sync`.
fn ordered(item: &NodeItem) -> bool {
    matches!(
        item.item,
        Some(Item::ToUsers(_) | Item::ToGroup(_) | Item::MemberChange(_))
    )
}

/// Takes out of `batch` (taken from a queue whose first ordered item was queued at
/// `queued_at`) its ordered items if that is past `fresh_for` at `now`, and marks it
/// `missed` (the receiving node tells its sessions to Sync, which serves them by seq).
/// Returns how many were taken out. For batches already drained but not handed to the
/// stream yet (`peer.rs`): a pause may fall between the two.
pub(crate) fn strip_stale(
    batch: &mut NodeBatch,
    queued_at: Instant,
    now: Instant,
    fresh_for: Duration,
) -> u64 {
    if now.saturating_duration_since(queued_at) <= fresh_for {
        return 0;
    }
    strip_ordered(batch)
}

/// Takes the ordered items (`ordered`) out of `batch`, marking it `missed` if there were
/// any (the receiving node tells its sessions to Sync); returns how many.
pub(crate) fn strip_ordered(batch: &mut NodeBatch) -> u64 {
    let before = batch.items.len();
    batch.items.retain(|i| !ordered(i));
    let stripped = (before - batch.items.len()) as u64;
    batch.missed |= stripped > 0;
    stripped
}

/// Whether losing `item` on the way leaves the peer's sessions something to catch up by seq
/// (the batch after it carries `missed`: the peer repairs its groups' online index and tells
/// every session to Sync). Not for a forwarded write or a notification batch (their origin
/// answers or sends again), typing (never stored), nor room items: rooms store nothing, a
/// lost room message is a gap in `room_seq` members accept, a lost part is sent again.
fn lost_needs_sync(item: &NodeItem) -> bool {
    !matches!(
        item.item,
        Some(
            Item::Forward(_)
                | Item::SystemBatch(_)
                | Item::Typing(_)
                | Item::RoomPart(_)
                | Item::RoomSend(_)
                | Item::RoomAnswer(_)
                | Item::RoomMessage(_)
        )
    )
}

impl Queue {
    pub(crate) fn new(items_max: usize) -> Self {
        Self {
            items: VecDeque::new(),
            items_max,
            open: true,
            missed: false,
            oversized: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Queues `items` whole or not at all (a commit group's frames for one node go together).
    #[cfg(test)]
    pub(crate) fn push_all(&mut self, items: Vec<NodeItem>) -> Result<(), Refused> {
        self.push_all_at(items, Instant::now())
    }

    /// `push_all`, the items aged from `at` (`Heartbeats::aged_from`).
    pub(crate) fn push_all_at(&mut self, items: Vec<NodeItem>, at: Instant) -> Result<(), Refused> {
        let refused = if !self.open {
            Some(Refused::Down)
        } else if self.items.len() + items.len() > self.items_max {
            Some(Refused::Full)
        } else {
            None
        };
        if let Some(why) = refused {
            // Deliveries lost here are caught up by seq; the peer is told to make them do so.
            self.missed |= items.iter().any(lost_needs_sync);
            return Err(why);
        }
        let at = self.in_order(at);
        self.items.extend(items.into_iter().map(|i| (at, i)));
        Ok(())
    }

    /// `at`, or the last item's stamp if later: the stamps stay in queue order (`drop_stale`
    /// takes a prefix), which the wall clock `Heartbeats::aged_from` reads need not keep.
    fn in_order(&self, at: Instant) -> Instant {
        self.items.back().map_or(at, |(last, _)| at.max(*last))
    }

    /// Drops the ordered items (`ordered`) queued more than `fresh_for` before `now`, and
    /// marks the next batch `missed`; returns how many. Items are queued in time order, so
    /// the stale ones are a prefix: when the oldest item is fresh this costs one comparison.
    pub(crate) fn drop_stale(&mut self, now: Instant, fresh_for: Duration) -> u64 {
        let stale = self
            .items
            .partition_point(|(at, _)| now.saturating_duration_since(*at) > fresh_for);
        if stale == 0 {
            return 0;
        }
        let before = self.items.len();
        let mut seen = 0;
        self.items.retain(|(_, item)| {
            seen += 1;
            seen > stale || !ordered(item)
        });
        let dropped = (before - self.items.len()) as u64;
        self.missed |= dropped > 0;
        dropped
    }

    /// When the first ordered item (`ordered`) `drain` would take was queued: what
    /// `strip_stale` measures a drained batch by. An older item that is not ordered (an
    /// answer, a kick: kept by `drop_stale`) must not make the fresh pushes behind it look
    /// stale.
    pub(crate) fn oldest_ordered(&self) -> Option<Instant> {
        self.items
            .iter()
            .find(|(_, item)| ordered(item))
            .map(|(at, _)| *at)
    }

    /// Queues best-effort items (typing) only while the queue is at most half full: what must
    /// not be lost keeps the other half, and under pressure these go first. A refusal is not
    /// `missed` (nothing to catch up). Stamped `at` as the rest (`push_all_at`).
    pub(crate) fn push_best_effort(
        &mut self,
        items: Vec<NodeItem>,
        at: Instant,
    ) -> Result<(), Refused> {
        if !self.open {
            return Err(Refused::Down);
        }
        if self.items.len() + items.len() > self.items_max / 2 {
            return Err(Refused::Full);
        }
        let at = self.in_order(at);
        self.items.extend(items.into_iter().map(|i| (at, i)));
        Ok(())
    }

    /// Takes what is queued into one batch of at most `bytes_max` encoded bytes (or one item
    /// alone when it is bigger). An item over `item_bytes_max` (the links' message limit is
    /// derived from it) is dropped here, never sent: sent, it would end the link each time
    /// (a lost frame is `missed`; a forwarded write is answered on its origin's deadline).
    pub(crate) fn drain(
        &mut self,
        from_node: &str,
        bytes_max: usize,
        item_bytes_max: usize,
    ) -> Option<NodeBatch> {
        while let Some((_, item)) = self.items.front()
            && item.encoded_len() > item_bytes_max
        {
            self.missed |= lost_needs_sync(item);
            self.oversized += 1;
            self.items.pop_front();
        }
        if self.items.is_empty() && !self.missed {
            return None;
        }
        let mut batch = NodeBatch {
            from_node: from_node.to_owned(),
            items: Vec::new(),
            missed: std::mem::take(&mut self.missed),
            sent_at_ms: 0,
        };
        let mut bytes = 0;
        while let Some((_, item)) = self.items.front() {
            let len = item.encoded_len() + 4;
            if !batch.items.is_empty() && bytes + len > bytes_max {
                break;
            }
            if item.encoded_len() > item_bytes_max {
                // Left for the next drain, which drops it.
                break;
            }
            bytes += len;
            batch.items.extend(self.items.pop_front().map(|(_, i)| i));
        }
        Some(batch)
    }

    /// The link went down: everything queued is dropped (forwarded writes are answered
    /// UNAVAILABLE by their origin's pending table) and new items are refused until `reopen`.
    pub(crate) fn close(&mut self) -> Vec<NodeItem> {
        self.open = false;
        self.missed |= self.items.iter().any(|(_, i)| lost_needs_sync(i));
        self.items.drain(..).map(|(_, i)| i).collect()
    }

    pub(crate) fn reopen(&mut self) {
        self.open = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_proto::v1::{Answer, ToUsers};

    fn frame(bytes: usize) -> NodeItem {
        NodeItem {
            item: Some(Item::ToUsers(ToUsers {
                user_ids: vec![1],
                except: None,
                frame: vec![0u8; bytes].into(),
                ..ToUsers::default()
            })),
        }
    }

    #[test]
    fn a_full_queue_refuses_whole_groups_and_remembers_missed_frames() {
        let mut q = Queue::new(4);
        assert_eq!(q.push_all(vec![frame(1), frame(1), frame(1)]), Ok(()));
        assert_eq!(q.push_all(vec![frame(1), frame(1)]), Err(Refused::Full));
        assert_eq!(q.len(), 3, "nothing of a refused group is queued");
        assert_eq!(q.push_all(vec![frame(1)]), Ok(()));
        let batch = q.drain("n1", 1 << 20, 1 << 20).expect("a batch");
        assert_eq!(batch.items.len(), 4);
        assert!(batch.missed, "the dropped frames are announced");
        assert!(
            q.drain("n1", 1 << 20, 1 << 20).is_none(),
            "drained, and told once"
        );
    }

    #[test]
    fn batches_are_bounded_in_bytes_but_never_empty() {
        let mut q = Queue::new(100);
        q.push_all((0..10).map(|_| frame(1000)).collect()).unwrap();
        let first = q.drain("n1", 2_500, 1 << 20).expect("a batch");
        assert_eq!(first.items.len(), 2);
        assert!(first.encoded_len() <= 2_500 + 64);
        // An item bigger than the bound still goes, alone.
        let mut big = Queue::new(100);
        big.push_all(vec![frame(10_000), frame(1)]).unwrap();
        assert_eq!(
            big.drain("n1", 2_500, 1 << 20)
                .expect("a batch")
                .items
                .len(),
            1
        );
        assert_eq!(
            big.drain("n1", 2_500, 1 << 20)
                .expect("a batch")
                .items
                .len(),
            1
        );
        let mut rest = 0;
        while let Some(b) = q.drain("n1", 2_500, 1 << 20) {
            rest += b.items.len();
        }
        assert_eq!(rest, 8);
    }

    #[test]
    fn an_item_over_the_item_limit_is_dropped_not_sent() {
        let mut q = Queue::new(100);
        q.push_all(vec![frame(10), frame(5_000), frame(10), frame(6_000)])
            .unwrap();
        let first = q.drain("n1", 1 << 20, 4_096).expect("a batch");
        assert_eq!(first.items.len(), 1, "stops before the oversized item");
        let second = q.drain("n1", 1 << 20, 4_096).expect("a batch");
        assert_eq!(second.items.len(), 1);
        assert!(second.missed, "a dropped frame is announced");
        assert_eq!(q.oversized, 1);
        let third = q.drain("n1", 1 << 20, 4_096).expect("missed is announced");
        assert!(third.items.is_empty() && third.missed);
        assert_eq!(q.oversized, 2);
        assert!(q.drain("n1", 1 << 20, 4_096).is_none());
    }

    #[test]
    fn typing_takes_at_most_half_the_queue_and_is_never_missed() {
        let typing = || NodeItem {
            item: Some(Item::Typing(ringchat_proto::v1::NodeTyping::default())),
        };
        let mut q = Queue::new(8);
        for _ in 0..4 {
            assert_eq!(q.push_best_effort(vec![typing()], Instant::now()), Ok(()));
        }
        assert_eq!(
            q.push_best_effort(vec![typing()], Instant::now()),
            Err(Refused::Full)
        );
        assert_eq!(
            q.push_all(vec![frame(1), frame(1), frame(1)]),
            Ok(()),
            "durable frames have the rest"
        );
        assert!(
            !q.drain("n1", 1 << 20, 1 << 20).expect("a batch").missed,
            "a dropped typing is not missed"
        );
        q.push_best_effort(vec![typing()], Instant::now()).unwrap();
        q.close();
        q.reopen();
        assert!(
            q.drain("n1", 1 << 20, 1 << 20).is_none(),
            "typing lost with the link is not missed"
        );
    }

    #[test]
    fn a_closed_link_refuses_until_reopened() {
        let mut q = Queue::new(8);
        let answer = NodeItem {
            item: Some(Item::Answer(Answer::default())),
        };
        q.push_all(vec![answer.clone()]).unwrap();
        assert_eq!(q.close().len(), 1);
        assert_eq!(q.push_all(vec![answer]), Err(Refused::Down));
        q.reopen();
        assert_eq!(q.push_all(vec![frame(1)]), Ok(()));
    }

    #[test]
    fn a_push_older_than_the_takeover_bound_is_not_sent_and_the_batch_is_missed() {
        let fresh_for = Duration::from_millis(push_fresh_ms(5_000, 1_000));
        assert_eq!(fresh_for, Duration::from_millis(3_500));
        let answer = NodeItem {
            item: Some(Item::Answer(Answer::default())),
        };
        let mut q = Queue::new(8);
        q.push_all(vec![frame(1), answer.clone(), frame(2)])
            .unwrap();
        // The clock is the argument: "now" is just within the bound, then just past it.
        let queued = q.oldest_ordered().expect("queued");
        assert_eq!(q.drop_stale(queued + fresh_for, fresh_for), 0);
        let later = queued + fresh_for + Duration::from_millis(1);
        assert_eq!(q.drop_stale(later, fresh_for), 2, "both stale pushes");
        let batch = q.drain("n3", 1 << 20, 1 << 20).expect("a batch");
        assert!(
            batch.missed,
            "the receiving node tells its sessions to Sync"
        );
        assert_eq!(
            batch.items,
            vec![answer],
            "an answer is in no seq order: it still goes"
        );
        // A push queued now is fresh and goes, not marked missed.
        q.push_all(vec![frame(3)]).unwrap();
        assert_eq!(q.drop_stale(Instant::now(), fresh_for), 0);
        let batch = q.drain("n3", 1 << 20, 1 << 20).expect("a batch");
        assert_eq!(batch.items, vec![frame(3)]);
        assert!(!batch.missed);
    }

    #[test]
    fn a_drained_batch_past_the_bound_loses_its_pushes_before_the_stream_takes_it() {
        let fresh_for = Duration::from_millis(3_500);
        let mut q = Queue::new(8);
        q.push_all(vec![frame(1)]).unwrap();
        let queued = q.oldest_ordered().expect("queued");
        let mut batch = q.drain("n3", 1 << 20, 1 << 20).expect("a batch");
        let mut fresh = batch.clone();
        assert_eq!(
            strip_stale(&mut fresh, queued, queued + fresh_for, fresh_for),
            0
        );
        assert_eq!(fresh.items.len(), 1);
        assert!(!fresh.missed);
        let paused = queued + fresh_for + Duration::from_millis(1);
        assert_eq!(strip_stale(&mut batch, queued, paused, fresh_for), 1);
        assert!(batch.items.is_empty() && batch.missed);
    }

    #[test]
    fn a_node_cut_off_from_redis_ages_its_pushes_from_its_last_heartbeat() {
        let interval = Duration::from_millis(1_000);
        let fresh_for = Duration::from_millis(push_fresh_ms(5_000, 1_000));
        let (now, now_ms) = (Instant::now(), 1_000_000);
        assert_eq!(
            aged_from(now, now_ms, now_ms - 900, interval),
            now,
            "heartbeats on time: aged from when queued"
        );
        // Redis away: its record expires 5 s after its last heartbeat, whenever the push was
        // committed; half a heartbeat of margin as for the rest (4.5 s).
        let mut q = Queue::new(8);
        let within = aged_from(now, now_ms, now_ms - 4_400, interval);
        q.push_all_at(vec![frame(1)], within).unwrap();
        assert_eq!(q.drop_stale(now, fresh_for), 0, "4.4 s after the heartbeat");
        let past = aged_from(now, now_ms, now_ms - 4_600, interval);
        assert_eq!(past, now - Duration::from_millis(3_600));
        let mut q = Queue::new(8);
        q.push_all_at(vec![frame(1)], past).unwrap();
        assert_eq!(
            q.drop_stale(now, fresh_for),
            1,
            "4.6 s after the heartbeat: stale as soon as queued"
        );
        assert!(q.drain("n3", 1 << 20, 1 << 20).expect("a batch").missed);
    }
}

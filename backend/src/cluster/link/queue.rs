//! One peer's outgoing queue: bounded in items, drained into batches bounded in bytes. Plain
//! data under the peer's lock; the sender task (`peer.rs`) does the waiting.

use std::collections::VecDeque;

use prost::Message;
use ringchat_proto::v1::{NodeBatch, NodeItem, node_item::Item};

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
    items: VecDeque<NodeItem>,
    items_max: usize,
    /// Accepting items: the link is up or being dialed (not in a backoff pause).
    pub(crate) open: bool,
    /// Frames for this peer were dropped since the last batch: its sessions must catch up.
    pub(crate) missed: bool,
    /// Items dropped by `drain` for being over the item limit, not counted yet.
    pub(crate) oversized: u64,
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
    pub(crate) fn push_all(&mut self, items: Vec<NodeItem>) -> Result<(), Refused> {
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
        self.items.extend(items);
        Ok(())
    }

    /// Queues best-effort items (typing) only while the queue is at most half full: what must
    /// not be lost keeps the other half, and under pressure these go first. A refusal is not
    /// `missed` (nothing to catch up).
    pub(crate) fn push_best_effort(&mut self, items: Vec<NodeItem>) -> Result<(), Refused> {
        if !self.open {
            return Err(Refused::Down);
        }
        if self.items.len() + items.len() > self.items_max / 2 {
            return Err(Refused::Full);
        }
        self.items.extend(items);
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
        while let Some(item) = self.items.front()
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
        while let Some(item) = self.items.front() {
            let len = item.encoded_len() + 4;
            if !batch.items.is_empty() && bytes + len > bytes_max {
                break;
            }
            if item.encoded_len() > item_bytes_max {
                // Left for the next drain, which drops it.
                break;
            }
            bytes += len;
            batch.items.extend(self.items.pop_front());
        }
        Some(batch)
    }

    /// The link went down: everything queued is dropped (forwarded writes are answered
    /// UNAVAILABLE by their origin's pending table) and new items are refused until `reopen`.
    pub(crate) fn close(&mut self) -> Vec<NodeItem> {
        self.open = false;
        self.missed |= self.items.iter().any(lost_needs_sync);
        self.items.drain(..).collect()
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
            assert_eq!(q.push_best_effort(vec![typing()]), Ok(()));
        }
        assert_eq!(q.push_best_effort(vec![typing()]), Err(Refused::Full));
        assert_eq!(
            q.push_all(vec![frame(1), frame(1), frame(1)]),
            Ok(()),
            "durable frames have the rest"
        );
        assert!(
            !q.drain("n1", 1 << 20, 1 << 20).expect("a batch").missed,
            "a dropped typing is not missed"
        );
        q.push_best_effort(vec![typing()]).unwrap();
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
}

//! A connection's queue of encoded frames, bounded per connection and charged to its shard's
//! budget of queued bytes (`gateway.outbound_bytes_per_shard_max`).

use std::cell::Cell;
use std::collections::VecDeque;

use bytes::Bytes;

/// A connection's queue of encoded frames, and their bytes. `Cell`s (the queue taken out and put
/// back around each use, which never spans an `.await`) rather than a `RefCell`: no borrow flag
/// in every connection. Each frame is also charged to the shard's total (`total`,
/// `Shard::outbound_bytes`): its bytes, or only its queue entry when the connection shares the
/// frame's buffer with others that were charged for it (a group's fan-out).
#[derive(Default)]
pub(crate) struct Outbound {
    frames: Cell<VecDeque<Queued>>,
    /// Bytes of the queued frames; bounded by `OutboundLimits::bytes_max` (at most 1 GiB).
    bytes: Cell<u32>,
    /// The shard tick (wrapping) the queue last went from empty to not: how long its backlog
    /// has waited (`gateway.outbound_drain_timeout_ms`).
    backlog_since_tick: Cell<u32>,
}

/// A queued frame and what it was charged to the shard's total.
pub(super) struct Queued {
    frame: Bytes,
    charge: u32,
}

/// What a queued frame costs the shard's budget when its buffer was charged to another
/// connection already: its queue entry.
const SHARED_FRAME_CHARGE_BYTES: u32 = std::mem::size_of::<Queued>() as u32;

/// How a frame is charged to the shard's budget of queued bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Its bytes: the connection's own frame, or the first of a shared one.
    Whole,
    /// Its queue entry only: the buffer is shared with a connection charged [`Charge::Whole`].
    Shared,
}

impl Charge {
    fn bytes(self, len: u32) -> u32 {
        match self {
            Self::Whole => len,
            Self::Shared => len.min(SHARED_FRAME_CHARGE_BYTES),
        }
    }
}

/// How far a connection may fall behind before it is kicked as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundLimits {
    pub frames_max: usize,
    pub bytes_max: u32,
}

impl Outbound {
    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<Queued>) -> R) -> R {
        let mut queue = self.frames.take();
        let r = f(&mut queue);
        self.frames.set(queue);
        r
    }

    /// Gives back an empty queue's storage (the next frame allocates it again).
    pub(super) fn release_storage_if_empty(&self) {
        self.with(|queue| {
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
        });
    }

    pub fn len(&self) -> usize {
        self.with(|q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the frames waiting.
    pub fn bytes(&self) -> u32 {
        self.bytes.get()
    }

    /// Queues `frame` at shard tick `now` unless the queue is past a limit. A frame is always
    /// taken into an empty queue, whatever its size: one reply never makes a slow consumer.
    /// The connection's own limits count the frame whole; the shard's total by `charge`.
    pub(super) fn push(
        &self,
        frame: Bytes,
        charge: Charge,
        limits: OutboundLimits,
        now: u64,
        total: &Cell<u64>,
    ) -> bool {
        let len = frame_bytes(&frame);
        let charge = charge.bytes(len);
        let bytes = self.bytes.get();
        let taken = self.with(|queue| {
            let full = queue.len() >= limits.frames_max
                || (!queue.is_empty() && bytes.saturating_add(len) > limits.bytes_max);
            if !full {
                if queue.is_empty() {
                    self.backlog_since_tick.set(now as u32);
                }
                queue.push_back(Queued { frame, charge });
            }
            !full
        });
        if taken {
            self.bytes.set(bytes.saturating_add(len));
            total.set(total.get() + u64::from(charge));
        }
        taken
    }

    /// Queues `frame` past every limit: the connection's last frame (`Kicked`).
    pub fn push_last(&self, frame: Bytes, now: u64, total: &Cell<u64>) {
        let len = frame_bytes(&frame);
        self.bytes.set(self.bytes.get().saturating_add(len));
        total.set(total.get() + u64::from(len));
        self.with(|queue| {
            if queue.is_empty() {
                self.backlog_since_tick.set(now as u32);
            }
            queue.push_back(Queued { frame, charge: len });
        });
    }

    /// Ticks since the queue last was empty, at shard tick `now`; `None` while it is.
    pub(super) fn backlog_ticks(&self, now: u64) -> Option<u64> {
        (!self.is_empty())
            .then(|| u64::from((now as u32).wrapping_sub(self.backlog_since_tick.get())))
    }

    /// Takes frames from the front while `take` accepts them.
    pub fn pop_while(&self, mut take: impl FnMut(&Bytes) -> bool, total: &Cell<u64>) {
        let (mut popped, mut charged) = (0u32, 0u64);
        self.with(|queue| {
            while let Some(queued) = queue.front() {
                if !take(&queued.frame) {
                    break;
                }
                popped = popped.saturating_add(frame_bytes(&queued.frame));
                charged += u64::from(queued.charge);
                queue.pop_front();
            }
            if queue.is_empty() && queue.capacity() > 1024 {
                queue.shrink_to(64);
            }
        });
        self.bytes.set(self.bytes.get().saturating_sub(popped));
        total.set(total.get().saturating_sub(charged));
    }

    /// Drops every waiting frame.
    pub fn clear(&self, total: &Cell<u64>) {
        let charged: u64 = self.with(|queue| {
            let charged = queue.iter().map(|q| u64::from(q.charge)).sum();
            queue.clear();
            charged
        });
        self.bytes.set(0);
        total.set(total.get().saturating_sub(charged));
    }
}

/// A frame's size as the queue counts it (frames are far below 4 GiB; one that was not would
/// count as 4 GiB, never wrap).
fn frame_bytes(frame: &Bytes) -> u32 {
    u32::try_from(frame.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutboundLimits = OutboundLimits {
        frames_max: 4,
        bytes_max: 100,
    };

    fn frame(bytes: usize) -> Bytes {
        Bytes::from(vec![0; bytes])
    }

    impl Outbound {
        fn push_whole(&self, f: Bytes, limits: OutboundLimits, now: u64, t: &Cell<u64>) -> bool {
            self.push(f, Charge::Whole, limits, now, t)
        }
    }

    /// A frame shared by many queues is charged to the shard's total once whole, then by its
    /// queue entry; each queue's own bytes (its limit) count it whole; whatever way the entries
    /// leave, the total comes back to where it was.
    #[test]
    fn a_shared_frame_is_charged_to_the_shard_once() {
        let limits = OutboundLimits {
            frames_max: 16,
            bytes_max: 1 << 20,
        };
        let shared = frame(32 * 1024);
        let queues: Vec<Outbound> = (0..1000).map(|_| Outbound::default()).collect();
        let total = Cell::new(0);
        for (i, q) in queues.iter().enumerate() {
            let charge = if i == 0 {
                Charge::Whole
            } else {
                Charge::Shared
            };
            assert!(q.push(shared.clone(), charge, limits, 1, &total));
            assert_eq!(q.bytes(), 32 * 1024, "its own limit counts it whole");
        }
        let entries = 999 * u64::from(SHARED_FRAME_CHARGE_BYTES);
        assert_eq!(total.get(), 32 * 1024 + entries);
        queues[0].pop_while(|_| true, &total);
        assert_eq!(total.get(), entries);
        for q in &queues[1..500] {
            q.pop_while(|_| true, &total);
        }
        for q in &queues[500..] {
            q.clear(&total);
        }
        assert_eq!(total.get(), 0);
        // A frame smaller than an entry is charged its bytes, not more.
        assert!(queues[1].push(frame(3), Charge::Shared, limits, 1, &total));
        assert_eq!(total.get(), 3);
    }

    /// The queue's bounds, its bytes counted in the shard's total too, and the age of its
    /// backlog.
    #[test]
    fn the_outbound_queue_is_bounded_in_frames_and_in_bytes() {
        let q = Outbound::default();
        let total = Cell::new(1000);
        // One frame is always taken, whatever its size.
        assert!(q.push_whole(frame(500), LIMITS, 5, &total));
        assert!(!q.push_whole(frame(1), LIMITS, 6, &total), "past the bytes");
        assert_eq!((q.len(), q.bytes(), total.get()), (1, 500, 1500));
        assert_eq!(q.backlog_ticks(9), Some(4));
        q.pop_while(|_| true, &total);
        assert_eq!((q.len(), q.bytes(), total.get()), (0, 0, 1000));
        assert_eq!(q.backlog_ticks(9), None);

        assert!(q.push_whole(frame(60), LIMITS, 10, &total));
        assert!(
            q.push_whole(frame(40), LIMITS, 11, &total),
            "exactly at the bound"
        );
        assert!(!q.push_whole(frame(1), LIMITS, 11, &total));
        q.pop_while(|f| f.len() == 60, &total);
        assert_eq!((q.len(), q.bytes(), total.get()), (1, 40, 1040));
        // Not empty since tick 10: a backlog that drains only in part keeps its age.
        assert_eq!(q.backlog_ticks(12), Some(2));
        for _ in 0..3 {
            assert!(q.push_whole(frame(1), LIMITS, 12, &total));
        }
        assert!(
            !q.push_whole(frame(1), LIMITS, 12, &total),
            "past the frames"
        );
        q.push_last(frame(7), 12, &total);
        assert_eq!((q.len(), q.bytes(), total.get()), (5, 50, 1050));
        q.clear(&total);
        assert_eq!((q.len(), q.bytes(), total.get()), (0, 0, 1000));
        // The clock wraps.
        q.push_last(frame(1), u64::from(u32::MAX), &total);
        assert_eq!(q.backlog_ticks(1 << 32), Some(1));
    }
}

//! The heaviest senders of a minute: space-saving over a fixed array of `capacity` slots.
//! A sender with more than 1/`capacity` of the minute's messages is always among them, and a
//! listed count overstates the truth by at most the slot's `error`. A send costs one scan of
//! the array (no hashing, no allocation): 64 slots are eight cache lines.

use crate::store::UserId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub user: UserId,
    pub count: u64,
    /// How much of `count` may belong to senders this slot held before.
    pub error: u64,
}

#[derive(Debug, Clone)]
pub struct TopSenders {
    /// The minute (since the epoch) counted.
    pub minute: u64,
    slots: Vec<Slot>,
    capacity: usize,
}

impl TopSenders {
    pub fn new(capacity: usize, minute: u64) -> Self {
        assert!(capacity > 0, "at least one slot");
        Self {
            minute,
            slots: Vec::with_capacity(capacity),
            capacity,
        }
    }

    #[inline]
    pub fn add(&mut self, user: UserId) {
        // One pass: the sender's slot, or else the smallest one.
        let (mut min_i, mut min_count) = (0, u64::MAX);
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.user == user {
                s.count += 1;
                return;
            }
            if s.count < min_count {
                (min_i, min_count) = (i, s.count);
            }
        }
        if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                user,
                count: 1,
                error: 0,
            });
            return;
        }
        // Full: the smallest slot goes to the newcomer, who may have sent that many unseen.
        self.slots[min_i] = Slot {
            user,
            count: min_count + 1,
            error: min_count,
        };
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Starts another minute, keeping the allocation.
    pub fn restart(&mut self, minute: u64) {
        self.minute = minute;
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_sender_is_kept_among_many_light_ones() {
        let mut t = TopSenders::new(8, 0);
        for i in 0..1000u64 {
            t.add(1000 + i % 100);
            if i % 4 == 0 {
                t.add(7);
            }
        }
        let top = t.slots().iter().max_by_key(|s| s.count).unwrap();
        assert_eq!(top.user, 7);
        assert!(top.count - top.error <= 250 && top.count >= 250);
        assert_eq!(t.slots().len(), 8);
        let mut exact = TopSenders::new(8, 0);
        for u in [1, 2, 2, 3, 3, 3] {
            exact.add(u);
        }
        let mut counts: Vec<_> = exact.slots().iter().map(|s| (s.user, s.count)).collect();
        counts.sort();
        assert_eq!(counts, [(1, 1), (2, 2), (3, 3)]);
        exact.restart(5);
        assert!(exact.slots().is_empty());
    }
}

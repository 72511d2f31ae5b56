//! "How many members have read up to seq S", without reading every member's cursor: the
//! sequencer keeps each group's [`ReadHistogram`] (members counted by read seq over the newest
//! `groups.read_count_window` seqs, older ones folded into `below`) in its overlay, changed by
//! read-cursor moves, joins and leaves, and written once per commit group that touched it,
//! never per message. GroupReadCount reads it with one get: exact for any seq inside the
//! window, a lower bound (`exact` false) for an older one.

use ringchat_proto::v1;

use super::reads::{group_id, not_found, require_member};
use crate::accounts::Refusal;
use crate::messaging::writer::Writer;
use crate::store::{ConvId, Ports, ReadHistogram, StoreError, UserId};

impl ReadHistogram {
    /// A member counted at `read_seq`; the window slides up to hold it.
    pub(crate) fn add(&mut self, read_seq: u64, window: u64) {
        debug_assert!(window > 0);
        if read_seq < self.base_seq {
            self.below += 1;
            return;
        }
        if read_seq - self.base_seq >= window {
            self.slide_to(read_seq + 1 - window);
        }
        *self.counts.entry(read_seq).or_default() += 1;
    }

    /// A member no longer counted at `read_seq` (where [`Self::add`] or a move put it).
    pub(crate) fn remove(&mut self, read_seq: u64) {
        if read_seq < self.base_seq {
            debug_assert!(self.below > 0, "a member below the window was counted");
            self.below = self.below.saturating_sub(1);
            return;
        }
        let Some(n) = self.counts.get_mut(&read_seq) else {
            debug_assert!(false, "no member counted at {read_seq}");
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&read_seq);
        }
    }

    /// A member's read cursor moved from `from` to `to`.
    pub(crate) fn moved(&mut self, from: u64, to: u64, window: u64) {
        if from != to {
            self.remove(from);
            self.add(to, window);
        }
    }

    /// Members at or past `seq`, and whether that is exact (else a lower bound: `seq` is older
    /// than the window and some members are below it).
    pub(crate) fn at_or_past(&self, seq: u64) -> (u32, bool) {
        let in_window: u32 = self
            .counts
            .range(seq.max(self.base_seq)..)
            .map(|(_, n)| n)
            .sum();
        if seq >= self.base_seq || self.below == 0 {
            (in_window, true)
        } else if seq == 0 {
            (in_window + self.below, true)
        } else {
            (in_window, false)
        }
    }

    /// Members counted.
    pub(crate) fn total(&self) -> u32 {
        self.below + self.counts.values().sum::<u32>()
    }

    fn slide_to(&mut self, base: u64) {
        let kept = self.counts.split_off(&base);
        self.below += self.counts.values().sum::<u32>();
        self.counts = kept;
        self.base_seq = base;
    }
}

/// Every group gets its histogram in the commit that creates it, so an existing group without
/// one is a damaged store, not something to rebuild by a scan of its members.
pub(crate) fn missing_histogram(g: ConvId) -> StoreError {
    StoreError::Corrupt(format!("group {g} has no read histogram").into())
}

/// GroupReadCount, on the read pool: one get of the group's histogram.
pub(crate) fn read_count(
    ports: &Ports,
    user: UserId,
    req: &v1::GroupReadCount,
) -> Result<v1::GroupReadCountOk, Refusal> {
    let g = group_id(req.conversation_id)?;
    require_member(ports, g, user)?;
    let record = ports.groups.group(g)?.ok_or_else(not_found)?;
    let histogram = ports
        .groups
        .read_histogram(g)?
        .ok_or_else(|| missing_histogram(g))?;
    let (read_count, exact) = histogram.at_or_past(req.seq);
    Ok(v1::GroupReadCountOk {
        conversation_id: g.to_wire(),
        seq: req.seq,
        read_count,
        member_count: record.member_count,
        exact,
    })
}

impl Writer {
    /// A group member's own message (or recall) marks the group read up to it, in its cursor
    /// and in the histogram; `load_row` and `load_reads` came first.
    pub(crate) fn mark_own_group_message_read(&mut self, g: ConvId, user: UserId, seq: u64) {
        let before = self.row(g, user).cursor.read_seq;
        self.mark_own_message_read(g, user, seq);
        self.groups.read_moved(g, before, before.max(seq));
    }

    /// A member joins the count at its read cursor (`load_row`, `load_reads` first).
    pub(crate) fn count_member_in(&mut self, g: ConvId, user: UserId) {
        let read = self.row(g, user).cursor.read_seq;
        let window = self.groups.read_window();
        self.groups.reads_mut(g).add(read, window);
    }

    /// A member leaves the count (`load_row`, `load_reads` first).
    pub(crate) fn count_member_out(&mut self, g: ConvId, user: UserId) {
        let read = self.row(g, user).cursor.read_seq;
        self.groups.reads_mut(g).remove(read);
    }

    /// What counting a member in or out needs, read before any change.
    pub(crate) fn load_for_count(&mut self, g: ConvId, user: UserId) -> Result<(), StoreError> {
        self.load_row(g, user)?;
        self.groups.load_reads(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(h: &ReadHistogram) -> Vec<(u64, u32)> {
        h.counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn counts_are_exact_inside_the_window_and_a_lower_bound_below_it() {
        let mut h = ReadHistogram::default();
        for read in [0, 0, 3, 5, 5] {
            h.add(read, 4);
        }
        // 5 is past the first window [0, 4): it slid to [2, 6), folding the two at 0.
        assert_eq!((h.base_seq, h.below), (2, 2));
        assert_eq!(counts(&h), [(3, 1), (5, 2)]);
        assert_eq!(h.at_or_past(0), (5, true), "everyone has read nothing");
        assert_eq!(h.at_or_past(3), (3, true));
        assert_eq!(h.at_or_past(4), (2, true));
        assert_eq!(h.at_or_past(6), (0, true));
        assert_eq!(
            h.at_or_past(1),
            (3, false),
            "below the window: a lower bound"
        );
        // Moves: from below into the window, and within it.
        h.moved(0, 4, 4);
        h.moved(5, 5, 4);
        h.moved(3, 5, 4);
        assert_eq!((h.base_seq, h.below), (2, 1));
        assert_eq!(counts(&h), [(4, 1), (5, 3)]);
        assert_eq!(h.at_or_past(2), (4, true));
        // A leave from below, then nobody is below: exact again for old seqs.
        h.remove(0);
        assert_eq!(h.at_or_past(1), (4, true));
        // A jump far ahead folds everything else.
        h.moved(4, 100, 4);
        assert_eq!((h.base_seq, h.below), (97, 3));
        assert_eq!(counts(&h), [(100, 1)]);
        assert_eq!(h.at_or_past(97), (1, true));
        assert_eq!(h.at_or_past(50), (1, false));
        h.remove(5);
        h.remove(5);
        h.remove(5);
        h.remove(100);
        assert_eq!(
            h,
            ReadHistogram {
                base_seq: 97,
                ..ReadHistogram::default()
            }
        );
    }

    #[test]
    fn a_window_of_one_keeps_only_the_newest_seq() {
        let mut h = ReadHistogram::default();
        h.add(7, 1);
        h.add(9, 1);
        h.add(8, 1);
        assert_eq!((h.base_seq, h.below), (9, 2));
        assert_eq!(h.at_or_past(9), (1, true));
        assert_eq!(h.at_or_past(8), (1, false));
    }
}

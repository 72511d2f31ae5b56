//! What each sender's messages came to: which indexes it sent, which the server answered
//! (acked or refused), and which each receiver got. Counted by sets of indexes, not by totals,
//! so that one problem shows once and under its own name: a swapped pair is one message out of
//! order (not also a duplicate and a loss), a message pushed but never acked cannot stand in for
//! an acked one that never came, and a send the server never answered is counted even though it
//! is in no other count.

/// A set of message indexes, kept as sorted disjoint runs `[start, end)`: a sender's indexes
/// arrive mostly in order, so a run of a million messages with no gap is one run, and memory
/// grows with the gaps, never with the count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSet {
    runs: Vec<(u64, u64)>,
    len: u64,
}

impl IndexSet {
    /// Adds `index`; false if it was already there.
    pub fn insert(&mut self, index: u64) -> bool {
        // The common case: the next index after the last run.
        if let Some(last) = self.runs.last_mut()
            && last.1 == index
        {
            last.1 += 1;
            self.len += 1;
            return true;
        }
        // The first run starting after `index`; the one before it may hold or touch it.
        let after = self.runs.partition_point(|&(start, _)| start <= index);
        if after > 0 && index < self.runs[after - 1].1 {
            return false;
        }
        let joins_before = after > 0 && self.runs[after - 1].1 == index;
        let joins_after = after < self.runs.len() && self.runs[after].0 == index + 1;
        match (joins_before, joins_after) {
            (true, true) => {
                self.runs[after - 1].1 = self.runs[after].1;
                self.runs.remove(after);
            }
            (true, false) => self.runs[after - 1].1 = index + 1,
            (false, true) => self.runs[after].0 = index,
            (false, false) => self.runs.insert(after, (index, index + 1)),
        }
        self.len += 1;
        true
    }

    pub fn contains(&self, index: u64) -> bool {
        let after = self.runs.partition_point(|&(start, _)| start <= index);
        after > 0 && index < self.runs[after - 1].1
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest index in the set.
    pub fn max(&self) -> Option<u64> {
        self.runs.last().map(|&(_, end)| end - 1)
    }

    /// How many of this set's indexes `other` lacks.
    pub fn missing_from(&self, other: &IndexSet) -> u64 {
        let mut missing = 0;
        let mut theirs = other.runs.iter().peekable();
        for &(start, end) in &self.runs {
            let mut at = start;
            while at < end {
                // Skip their runs that end before `at`.
                while theirs.peek().is_some_and(|&&(_, e)| e <= at) {
                    theirs.next();
                }
                match theirs.peek() {
                    Some(&&(s, e)) if s <= at => at = e.min(end),
                    Some(&&(s, _)) => {
                        let upto = s.min(end);
                        missing += upto - at;
                        at = upto;
                    }
                    None => {
                        missing += end - at;
                        at = end;
                    }
                }
            }
        }
        missing
    }
}

/// One sender's sends: how many, and the server's answer to each by index (the request id is
/// the index + 1).
#[derive(Debug, Clone, Default)]
pub struct Sends {
    pub sent: u64,
    pub acked: IndexSet,
    /// Sends answered with an error (refused: not stored, expected nowhere).
    pub refused: IndexSet,
    /// Answers to an index never sent, or a second answer to one: counted as errors.
    pub bad_answers: u64,
}

impl Sends {
    /// The server acked (`ok`) or refused the send with this index.
    pub fn answer(&mut self, index: u64, ok: bool) {
        if index >= self.sent || self.acked.contains(index) || self.refused.contains(index) {
            self.bad_answers += 1;
            return;
        }
        if ok {
            self.acked.insert(index);
        } else {
            self.refused.insert(index);
        }
    }

    /// The same, by the request id the answer carries: a send's request id is its index + 1
    /// (0 means "no reply wanted", so an answer to it is a bad one).
    pub fn answer_request(&mut self, request_id: u64, ok: bool) {
        match request_id.checked_sub(1) {
            Some(index) => self.answer(index, ok),
            None => self.bad_answers += 1,
        }
    }

    /// Sends the server neither acked nor refused.
    pub fn unanswered(&self) -> u64 {
        self.sent - self.acked.len() - self.refused.len()
    }

    /// Acked messages that `got` lacks: lost on the way to that receiver.
    pub fn lost_by(&self, got: &Stream) -> u64 {
        self.acked.missing_from(&got.got)
    }
}

/// One receiver's view of one sender's messages.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub got: IndexSet,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// What a received message was to its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Its first copy (in order or not: counted in `out_of_order`).
    First,
    /// A copy of one already received.
    Again,
}

impl Stream {
    /// Message `index` arrived; `behind` says the server's own order (its seq) went back or
    /// stood still. A first copy is out of order if it comes after a higher index, or behind
    /// in the server's order; a second copy is a duplicate, and only that.
    pub fn arrive(&mut self, index: u64, behind: bool) -> Arrival {
        let overtaken = self.got.max().is_some_and(|max| index < max);
        if !self.got.insert(index) {
            self.duplicates += 1;
            return Arrival::Again;
        }
        if overtaken || behind {
            self.out_of_order += 1;
        }
        Arrival::First
    }
}

/// What a run got wrong, counted. Every scenario that checks messages carries one (flattened
/// into its JSON report), so what makes a run clean is said once: all of these are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Faults {
    /// Acked messages a receiver never got.
    pub lost: u64,
    /// Sends the server neither acked nor refused before the drain ended.
    pub unanswered: u64,
    /// Paced slots due before the stop that were never sent (the window stayed full).
    pub unsent: u64,
    /// Second copies of a message a receiver already had.
    pub duplicates: u64,
    /// First copies that came after a later message, or behind in the server's order.
    pub out_of_order: u64,
    /// Messages whose content was not what their sender sent.
    pub corrupt: u64,
    /// Refusals, server errors, failed or dropped connections.
    pub errors: u64,
}

impl Faults {
    /// Nothing went wrong.
    pub fn none(&self) -> bool {
        *self == Self::default()
    }

    pub fn add(&mut self, other: &Faults) {
        self.lost += other.lost;
        self.unanswered += other.unanswered;
        self.unsent += other.unsent;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.corrupt += other.corrupt;
        self.errors += other.errors;
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost {}  unanswered {}  unsent {}  duplicates {}  out of order {}  corrupt {}  errors {}",
            self.lost,
            self.unanswered,
            self.unsent,
            self.duplicates,
            self.out_of_order,
            self.corrupt,
            self.errors
        )
    }
}

/// What senders' sends and members' receipts come to where every member should get every
/// sender's acked messages but its own (`group`, `room`). One place for the rule: a member
/// that has no stream for a sender lacks all of that sender's acked messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Acked messages a member other than their sender never got, once per such member.
    pub lost: u64,
    pub unanswered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub bad_answers: u64,
}

/// `sends`: (sender number, its sends); `got`: (online member number, what it got from each
/// sender). Sender number `s` is online member `s`.
pub fn fan_out(sends: &[(usize, Sends)], got: &[(usize, Vec<Stream>)]) -> FanOut {
    let mut o = FanOut::default();
    for (_, s) in sends {
        o.unanswered += s.unanswered();
        o.bad_answers += s.bad_answers;
    }
    for (member, streams) in got {
        for (sender, s) in sends {
            if sender != member {
                o.lost += streams.get(*sender).map_or(s.acked.len(), |g| s.lost_by(g));
            }
        }
        for g in streams {
            o.duplicates += g.duplicates;
            o.out_of_order += g.out_of_order;
        }
    }
    o
}

/// The content byte a sender fills message `index` with, for the receiver to check.
pub fn filler(index: u64) -> u8 {
    (index % 251) as u8
}

/// Paced slots `first, first + every, ...` that fall before `stop`.
pub fn slots_before(
    first: std::time::Instant,
    every: std::time::Duration,
    stop: std::time::Instant,
) -> u64 {
    if stop <= first {
        return 0;
    }
    if every.is_zero() {
        return u64::MAX;
    }
    let span = (stop - first).as_nanos();
    let every = every.as_nanos();
    u64::try_from(span.div_ceil(every)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn set(indexes: &[u64]) -> IndexSet {
        let mut s = IndexSet::default();
        for &i in indexes {
            s.insert(i);
        }
        s
    }

    #[test]
    fn index_sets_merge_runs_and_refuse_repeats() {
        let mut s = IndexSet::default();
        for i in [0, 1, 2, 5, 4, 9, 3, 7] {
            assert!(s.insert(i), "{i}");
        }
        assert_eq!(s.runs, vec![(0, 6), (7, 8), (9, 10)]);
        assert_eq!(s.len(), 8);
        assert!(!s.insert(4) && !s.insert(9) && !s.insert(0));
        assert!(s.insert(8));
        assert_eq!(s.runs, vec![(0, 6), (7, 10)]);
        assert!(s.insert(6));
        assert_eq!(s.runs, vec![(0, 10)]);
        assert!(s.contains(9) && !s.contains(10));
        assert_eq!(s.max(), Some(9));
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn index_sets_agree_with_a_plain_set() {
        use std::collections::BTreeSet;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..50 {
            let (mut a, mut b) = (IndexSet::default(), IndexSet::default());
            let (mut plain_a, mut plain_b) = (BTreeSet::new(), BTreeSet::new());
            for _ in 0..200 {
                let i = next(120);
                assert_eq!(a.insert(i), plain_a.insert(i));
                let j = next(120);
                assert_eq!(b.insert(j), plain_b.insert(j));
            }
            assert_eq!(a.len(), plain_a.len() as u64);
            assert_eq!(a.max(), plain_a.last().copied());
            assert!((0..130).all(|i| a.contains(i) == plain_a.contains(&i)));
            let missing = plain_a.difference(&plain_b).count() as u64;
            assert_eq!(a.missing_from(&b), missing);
            assert!(a.runs.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", a.runs);
        }
    }

    #[test]
    fn missing_counts_what_the_other_set_lacks() {
        let acked = set(&[0, 1, 2, 3, 4, 5, 8, 9]);
        assert_eq!(acked.missing_from(&set(&[0, 1, 2, 3, 4, 5, 8, 9])), 0);
        assert_eq!(acked.missing_from(&IndexSet::default()), 8);
        assert_eq!(acked.missing_from(&set(&[1, 2, 4, 9, 20])), 4);
        // Extra indexes in the other set (pushed, never acked) hide nothing.
        assert_eq!(acked.missing_from(&set(&[0, 1, 2, 3, 4, 6, 7, 8, 9])), 1);
        assert_eq!(IndexSet::default().missing_from(&acked), 0);
    }

    #[test]
    fn answers_are_matched_by_request_id_and_id_0_is_a_bad_answer() {
        let mut sends = Sends {
            sent: 2,
            ..Default::default()
        };
        sends.answer_request(1, true);
        sends.answer_request(2, false);
        sends.answer_request(0, true);
        sends.answer_request(3, true);
        assert!(sends.acked.contains(0) && sends.refused.contains(1));
        assert_eq!((sends.bad_answers, sends.unanswered()), (2, 0));
    }

    #[test]
    fn any_fault_makes_a_run_unclean_and_faults_add_up() {
        assert!(Faults::default().none());
        let one_each = Faults {
            lost: 1,
            unanswered: 1,
            unsent: 1,
            duplicates: 1,
            out_of_order: 1,
            corrupt: 1,
            errors: 1,
        };
        let mut total = Faults::default();
        total.add(&one_each);
        total.add(&one_each);
        assert_eq!(total.lost + total.errors, 4);
        // Each count alone is enough.
        for field in 0..7 {
            let mut f = Faults::default();
            *[
                &mut f.lost,
                &mut f.unanswered,
                &mut f.unsent,
                &mut f.duplicates,
                &mut f.out_of_order,
                &mut f.corrupt,
                &mut f.errors,
            ][field] = 1;
            assert!(!f.none(), "{f:?}");
        }
        assert_eq!(
            total.to_string(),
            "lost 2  unanswered 2  unsent 2  duplicates 2  out of order 2  corrupt 2  errors 2"
        );
    }

    #[test]
    fn a_swapped_pair_is_one_out_of_order_and_nothing_else() {
        let mut sends = Sends {
            sent: 3,
            ..Default::default()
        };
        for i in 0..3 {
            sends.answer(i, true);
        }
        let mut got = Stream::default();
        for i in [0, 2, 1] {
            assert_eq!(got.arrive(i, false), Arrival::First);
        }
        assert_eq!((got.out_of_order, got.duplicates), (1, 0));
        assert_eq!(sends.lost_by(&got), 0);
        assert_eq!(sends.unanswered(), 0);
    }

    #[test]
    fn a_repeat_is_one_duplicate_and_nothing_else() {
        let mut got = Stream::default();
        for i in [0, 1, 1, 2] {
            got.arrive(i, false);
        }
        assert_eq!((got.out_of_order, got.duplicates, got.got.len()), (0, 1, 3));
        // Behind in the server's order (seq went back) counts as out of order, once.
        let mut got = Stream::default();
        got.arrive(0, false);
        got.arrive(1, true);
        assert_eq!((got.out_of_order, got.duplicates), (1, 0));
    }

    #[test]
    fn sends_never_answered_are_counted() {
        let mut sends = Sends {
            sent: 10,
            ..Default::default()
        };
        for i in 0..7 {
            sends.answer(i, true);
        }
        sends.answer(7, false);
        assert_eq!(sends.unanswered(), 2);
        // A second answer, or one to a send never made, is counted apart.
        sends.answer(3, true);
        sends.answer(10, true);
        assert_eq!((sends.bad_answers, sends.unanswered()), (2, 2));
    }

    #[test]
    fn an_unacked_push_cannot_hide_a_lost_acked_message() {
        let mut sends = Sends {
            sent: 4,
            ..Default::default()
        };
        // 0, 1 and 2 acked; 3 never answered.
        for i in 0..3 {
            sends.answer(i, true);
        }
        let mut got = Stream::default();
        // 1 never arrives; 3 does, unacked: as many received as acked, one still lost.
        for i in [0, 2, 3] {
            got.arrive(i, false);
        }
        assert_eq!(got.got.len(), sends.acked.len());
        assert_eq!(sends.lost_by(&got), 1);
        assert_eq!(sends.unanswered(), 1);
    }

    #[test]
    fn slots_before_the_stop() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(slots_before(t, ms(5), t + ms(2000)), 400);
        assert_eq!(slots_before(t + ms(2), ms(5), t + ms(2000)), 400);
        assert_eq!(slots_before(t, ms(5), t + ms(2001)), 401);
        assert_eq!(slots_before(t + ms(10), ms(5), t + ms(10)), 0);
        assert_eq!(slots_before(t + ms(10), ms(5), t), 0);
    }

    fn acked(sent: u64, answered: &[u64]) -> Sends {
        let mut s = Sends {
            sent,
            ..Default::default()
        };
        for &i in answered {
            s.answer(i, true);
        }
        s
    }

    fn got(indexes: &[u64]) -> Stream {
        let mut g = Stream::default();
        for &i in indexes {
            g.arrive(i, false);
        }
        g
    }

    #[test]
    fn every_member_but_the_sender_must_get_every_acked_message() {
        // Two senders (members 0 and 1), three online members.
        let sends = [(0, acked(3, &[0, 1, 2])), (1, acked(2, &[0, 1]))];
        let clean = [
            (0, vec![Stream::default(), got(&[0, 1])]),
            (1, vec![got(&[0, 1, 2]), Stream::default()]),
            (2, vec![got(&[0, 2, 1]), got(&[0, 1])]),
        ];
        let o = fan_out(&sends, &clean);
        assert_eq!(
            o,
            FanOut {
                out_of_order: 1,
                ..Default::default()
            }
        );
        // Member 2 misses sender 0's index 1 and gets sender 1's index 0 twice.
        let short = [
            (0, vec![Stream::default(), got(&[0, 1])]),
            (1, vec![got(&[0, 1, 2]), Stream::default()]),
            (2, vec![got(&[0, 2]), got(&[0, 0, 1])]),
        ];
        let o = fan_out(&sends, &short);
        assert_eq!((o.lost, o.duplicates, o.out_of_order), (1, 1, 0));
    }

    #[test]
    fn sends_never_answered_by_the_server_are_counted_in_a_fan_out() {
        let sends = [(0, acked(5, &[0, 1, 2]))];
        let members = [(0, vec![Stream::default()]), (1, vec![got(&[0, 1, 2])])];
        let o = fan_out(&sends, &members);
        assert_eq!((o.unanswered, o.lost), (2, 0));
    }
}

//! The rooms whose part could not be handed to their owner (its link down or its queue full,
//! the part dropped with a link that went down, or the owner refusing a room it does not own
//! yet): each is sent again, as it is then, empty parts included (a room that emptied here is
//! gone from the registry, and its owner would keep counting its last part for ever). Only
//! these rooms are sent again, and less often while sending keeps failing. Pure data: no
//! I/O; times come in as `Instant`s.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

/// Rooms remembered, at most: past it the set is dropped for "every room with a session
/// here" (what a view change sends), which misses only rooms emptied meanwhile. Room names
/// are at most 64 bytes: about 1.5 MB.
pub(super) const RESEND_ROOMS_MAX: usize = 16_384;
/// The first pause before a failed part is sent again; doubled after each pass that failed,
/// up to `PAUSE_MAX`, back to this once a pass went through.
pub(super) const PAUSE_FIRST: Duration = Duration::from_millis(100);
pub(super) const PAUSE_MAX: Duration = Duration::from_millis(3_200);

pub(super) struct Resend {
    rooms: HashSet<Arc<str>, RandomState>,
    /// More than `RESEND_ROOMS_MAX` failed: every room with a session here is sent again.
    overflow: bool,
    /// An owner refused a part since the last pass (its view differs from this node's): the
    /// next pass waits longer, as if it had failed, until the views agree.
    refused: bool,
    pause: Duration,
    /// No pass before this.
    next_at: Instant,
}

/// What a pass sends again.
pub(super) struct Due {
    pub rooms: Vec<Arc<str>>,
    /// Add every room with a session here.
    pub all_here: bool,
}

impl Resend {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            rooms: HashSet::default(),
            overflow: false,
            refused: false,
            pause: PAUSE_FIRST,
            next_at: now,
        }
    }

    /// The part of `room` did not reach its owner. `false` when the set was full (the room is
    /// then covered by sending every room here, unless it emptied).
    pub(super) fn failed(&mut self, room: &str) -> bool {
        if self.rooms.contains(room) {
            return true;
        }
        if self.rooms.len() >= RESEND_ROOMS_MAX {
            self.overflow = true;
            return false;
        }
        self.rooms.insert(Arc::from(room));
        true
    }

    /// The owner refused the part of `room` (not its room by its view): sent again, after a
    /// longer pause each time.
    pub(super) fn refused(&mut self, room: &str) -> bool {
        self.refused = true;
        self.failed(room)
    }

    /// The current part of `room` was queued for its owner: nothing older to make up for.
    pub(super) fn sent(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// What to send again now, taken out of the set (what fails again comes back through
    /// `failed`); `None` before the pause is over or with nothing to send.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Due> {
        if (self.rooms.is_empty() && !self.overflow) || now < self.next_at {
            return None;
        }
        Some(Due {
            rooms: self.rooms.drain().collect(),
            all_here: std::mem::take(&mut self.overflow),
        })
    }

    /// A pass is over: `failed` if any part of it failed again (then the next waits longer,
    /// as after a refusal since the last pass).
    pub(super) fn passed(&mut self, failed: bool, now: Instant) {
        let failed = failed || std::mem::take(&mut self.refused);
        self.pause = if failed {
            (self.pause * 2).min(PAUSE_MAX)
        } else {
            PAUSE_FIRST
        };
        self.next_at = now + if failed { self.pause } else { Duration::ZERO };
    }

    pub(super) fn len(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(due: &Due) -> Vec<&str> {
        let mut v: Vec<&str> = due.rooms.iter().map(|r| &**r).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn only_failed_rooms_are_due_and_less_often_while_they_keep_failing() {
        let t0 = Instant::now();
        let mut r = Resend::new(t0);
        assert!(r.take_due(t0).is_none(), "nothing failed");
        r.failed("tea");
        r.failed("coffee");
        r.failed("tea");
        r.sent("coffee");
        let due = r.take_due(t0).expect("due at once");
        assert_eq!((names(&due), due.all_here), (vec!["tea"], false));
        assert!(r.take_due(t0).is_none(), "taken out");
        // It fails again: the pauses double up to PAUSE_MAX.
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            r.failed("tea");
            r.passed(true, now);
            let mut waited = Duration::ZERO;
            while r.take_due(now + waited).is_none() {
                waited += Duration::from_millis(100);
            }
            pauses.push(waited.as_millis());
            now += waited;
        }
        assert_eq!(pauses, [200, 400, 800, 1600, 3200, 3200, 3200, 3200]);
        // A pass that went through: the next failure is sent again at once.
        r.passed(false, now);
        r.failed("tea");
        assert!(r.take_due(now).is_some());
        r.passed(false, now);
        // A refusal (the owner's view differs) counts as a failed pass: the one after waits.
        r.refused("tea");
        assert!(r.take_due(now).is_some());
        r.passed(false, now);
        r.failed("tea");
        assert!(r.take_due(now).is_none());
        assert!(r.take_due(now + Duration::from_millis(200)).is_some());
    }

    #[test]
    fn bounded_past_which_every_room_here_is_sent_again() {
        let t0 = Instant::now();
        let mut r = Resend::new(t0);
        for i in 0..RESEND_ROOMS_MAX {
            assert!(r.failed(&format!("r{i}")));
        }
        assert!(!r.failed("one-more"));
        assert_eq!(r.len(), RESEND_ROOMS_MAX);
        let due = r.take_due(t0).expect("due");
        assert!(due.all_here);
        assert_eq!(due.rooms.len(), RESEND_ROOMS_MAX);
        assert_eq!(r.len(), 0);
        r.passed(false, t0);
        assert!(
            r.take_due(t0).is_none(),
            "the overflow is taken with the rooms"
        );
    }
}

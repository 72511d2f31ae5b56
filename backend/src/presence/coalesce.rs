//! When a presence change reaches friends. Pure (time is passed in), so that the rules are
//! tested without clocks:
//!
//! - a user becoming more present (coming online) is shown at once, unless they were published
//!   less than `quiet_ms` ago: then at the end of that period;
//! - a user becoming less present (a device dropped, away) is shown only after `quiet_ms` without
//!   coming back, and no sooner than `quiet_ms` after their last push;
//! - when the time comes, what is shown is the user's state *then*: a flap that came back in time
//!   costs friends nothing.
//!
//! So a user costs their friends at most one push per quiet period, whatever their devices do.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::State;
use crate::store::UserId;

/// What to do about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Show the new state now (and call [`Coalescer::published`]).
    PublishNow,
    /// Nothing now: [`Coalescer::due`] names the user when the time comes.
    Later,
    /// The user is back to what friends were told: nothing to do.
    Nothing,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    last_publish_ms: u64,
    due_ms: Option<u64>,
    /// The time of this user's pending-push entry in `wakeups`, if one is there: a user
    /// toggling between two states re-arms that entry (moved on when it comes up) rather
    /// than adding one per toggle.
    queued_ms: Option<u64>,
}

/// Users with a recent push or a pending one. An entry lives at most `quiet_ms` past its last
/// push unless a change is pending, so the map holds only the users active in the last period.
#[derive(Debug)]
pub(crate) struct Coalescer {
    quiet_ms: u64,
    users: HashMap<UserId, Timing>,
    /// (time, user): a pending push, or the end of a user's quiet period (to drop the entry).
    /// Entries that no longer match the user's timing are skipped when they come up.
    wakeups: BinaryHeap<Reverse<(u64, UserId)>>,
}

impl Coalescer {
    pub(crate) fn new(quiet_ms: u64) -> Self {
        Self {
            quiet_ms,
            users: HashMap::new(),
            wakeups: BinaryHeap::new(),
        }
    }

    /// The user's shown state is now `current`; friends were last told `published`.
    pub(crate) fn changed(
        &mut self,
        user: UserId,
        current: State,
        published: State,
        now_ms: u64,
    ) -> Decision {
        if current == published {
            if let Some(timing) = self.users.get_mut(&user) {
                timing.due_ms = None;
            }
            return Decision::Nothing;
        }
        let quiet_ends = self
            .users
            .get(&user)
            .map_or(0, |t| t.last_publish_ms.saturating_add(self.quiet_ms));
        if current > published && now_ms >= quiet_ends {
            return Decision::PublishNow;
        }
        let wanted = if current > published {
            quiet_ends
        } else {
            quiet_ends.max(now_ms.saturating_add(self.quiet_ms))
        };
        let timing = self.users.entry(user).or_insert(Timing {
            last_publish_ms: 0,
            due_ms: None,
            queued_ms: None,
        });
        // A push already pending keeps its time: a run of changes waits no longer than the first.
        if timing.due_ms.is_none() {
            timing.due_ms = Some(wanted);
            if timing.queued_ms.is_none_or(|queued| queued > wanted) {
                timing.queued_ms = Some(wanted);
                self.wakeups.push(Reverse((wanted, user)));
            }
        }
        Decision::Later
    }

    /// Friends were told the user's state at `now_ms`.
    pub(crate) fn published(&mut self, user: UserId, now_ms: u64) {
        let queued_ms = self.users.get(&user).and_then(|t| t.queued_ms);
        self.users.insert(
            user,
            Timing {
                last_publish_ms: now_ms,
                due_ms: None,
                queued_ms,
            },
        );
        self.wakeups
            .push(Reverse((now_ms.saturating_add(self.quiet_ms), user)));
    }

    /// The users whose pending push is due at `now_ms`, appended to `out` (each once). The caller
    /// compares each one's state with what was published and pushes (then calls `published`)
    /// only if they differ.
    pub(crate) fn due(&mut self, now_ms: u64, out: &mut Vec<UserId>) {
        while let Some(&Reverse((at, user))) = self.wakeups.peek() {
            if at > now_ms {
                break;
            }
            self.wakeups.pop();
            let Some(timing) = self.users.get_mut(&user) else {
                continue;
            };
            if timing.queued_ms == Some(at) {
                timing.queued_ms = None;
                match timing.due_ms {
                    Some(due) if due <= at => {
                        timing.due_ms = None;
                        out.push(user);
                        continue;
                    }
                    // Re-armed for later since this entry was queued: it moves on.
                    Some(due) => {
                        timing.queued_ms = Some(due);
                        self.wakeups.push(Reverse((due, user)));
                        continue;
                    }
                    None => {}
                }
            }
            if timing.due_ms.is_none()
                && timing.queued_ms.is_none()
                && timing.last_publish_ms.saturating_add(self.quiet_ms) <= now_ms
            {
                self.users.remove(&user);
            }
        }
    }

    /// When [`Self::due`] next has something to do.
    pub(crate) fn next_wakeup_ms(&self) -> Option<u64> {
        self.wakeups.peek().map(|Reverse((at, _))| *at)
    }

    /// Users tracked (recently pushed or pending): bounded by the users active in a period.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.users.len()
    }

    #[cfg(test)]
    pub(crate) fn wakeups(&self) -> usize {
        self.wakeups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u64 = 1000;

    fn due(c: &mut Coalescer, now: u64) -> Vec<UserId> {
        let mut out = Vec::new();
        c.due(now, &mut out);
        out
    }

    #[test]
    fn coming_online_is_shown_at_once() {
        let mut c = Coalescer::new(Q);
        assert_eq!(
            c.changed(7, State::Online, State::Offline, 10),
            Decision::PublishNow
        );
        c.published(7, 10);
        assert_eq!(
            c.changed(7, State::Online, State::Online, 20),
            Decision::Nothing
        );
    }

    #[test]
    fn a_flap_shorter_than_the_quiet_period_costs_friends_nothing() {
        let mut c = Coalescer::new(Q);
        c.published(7, 0);
        // Online was published at 0. The connection drops at 5000 and is back at 5400.
        assert_eq!(
            c.changed(7, State::Offline, State::Online, 5000),
            Decision::Later
        );
        assert_eq!(
            c.changed(7, State::Online, State::Online, 5400),
            Decision::Nothing
        );
        assert_eq!(due(&mut c, 6000), Vec::<UserId>::new());
        assert_eq!(due(&mut c, 100_000), Vec::<UserId>::new());
        assert_eq!(c.tracked(), 0, "nothing is kept for a user at rest");
    }

    #[test]
    fn going_offline_is_shown_after_the_quiet_period() {
        let mut c = Coalescer::new(Q);
        c.published(7, 0);
        assert_eq!(
            c.changed(7, State::Offline, State::Online, 5000),
            Decision::Later
        );
        assert_eq!(due(&mut c, 5999), Vec::<UserId>::new());
        assert_eq!(due(&mut c, 6000), vec![7]);
        c.published(7, 6000);
        assert_eq!(due(&mut c, 6000), Vec::<UserId>::new());
    }

    /// The caller's side: publishes what is current when a push is due or decided.
    struct Sim {
        c: Coalescer,
        current: State,
        published: State,
        pushes: Vec<(u64, State)>,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                c: Coalescer::new(Q),
                current: State::Offline,
                published: State::Offline,
                pushes: Vec::new(),
            }
        }

        fn publish(&mut self, now: u64) {
            self.published = self.current;
            self.pushes.push((now, self.current));
            self.c.published(7, now);
        }

        fn tick(&mut self, now: u64) {
            for user in due(&mut self.c, now) {
                assert_eq!(user, 7);
                if self.current != self.published {
                    self.publish(now);
                }
            }
        }

        fn set(&mut self, now: u64, state: State) {
            self.tick(now);
            self.current = state;
            if self.c.changed(7, self.current, self.published, now) == Decision::PublishNow {
                self.publish(now);
            }
        }
    }

    #[test]
    fn a_user_gets_at_most_one_push_per_quiet_period() {
        for period in [100, 700, 1500, 2600] {
            let mut sim = Sim::new();
            for step in 0..41u64 {
                let state = if step % 2 == 0 {
                    State::Online
                } else {
                    State::Offline
                };
                sim.set(step * period, state);
            }
            let end = 41 * period + 10 * Q;
            sim.tick(end);
            assert_eq!(sim.published, sim.current, "the last state is shown");
            for pair in sim.pushes.windows(2) {
                assert!(
                    pair[1].0 - pair[0].0 >= Q,
                    "period {period}: {:?}",
                    sim.pushes
                );
                assert_ne!(pair[1].1, pair[0].1, "period {period}: {:?}", sim.pushes);
            }
            if period < Q {
                assert_eq!(sim.pushes.len(), 1, "a fast flap shows online once");
            }
            sim.tick(end + Q);
            assert_eq!(sim.c.tracked(), 0, "nothing is kept for a user at rest");
        }
    }

    #[test]
    fn coming_back_within_the_period_after_a_push_waits_for_its_end() {
        let mut c = Coalescer::new(Q);
        c.published(7, 0);
        assert_eq!(
            c.changed(7, State::Online, State::Offline, 300),
            Decision::Later
        );
        assert_eq!(c.next_wakeup_ms(), Some(Q));
        assert_eq!(due(&mut c, Q), vec![7]);
    }

    #[test]
    fn a_pending_push_keeps_its_time_through_further_changes() {
        let mut c = Coalescer::new(Q);
        c.published(7, 0);
        assert_eq!(
            c.changed(7, State::Away, State::Online, 2000),
            Decision::Later
        );
        assert_eq!(
            c.changed(7, State::Offline, State::Online, 2500),
            Decision::Later
        );
        assert_eq!(due(&mut c, 3000), vec![7]);
    }

    #[test]
    fn toggling_back_and_forth_keeps_one_wakeup_and_the_latest_wait() {
        let mut c = Coalescer::new(Q);
        c.published(7, 0);
        for i in 0..1_000u64 {
            let now = 10 + i;
            c.changed(7, State::Away, State::Online, now);
            assert_eq!(
                c.changed(7, State::Online, State::Online, now),
                Decision::Nothing
            );
        }
        assert!(c.wakeups() <= 2, "{} wakeups", c.wakeups());
        // Away for good at 2,000: shown a quiet period later, not at the first toggle's time.
        c.changed(7, State::Away, State::Online, 2_000);
        assert_eq!(due(&mut c, 2_000 + Q - 1), Vec::<UserId>::new());
        assert_eq!(due(&mut c, 2_000 + Q), vec![7]);
    }

    /// Random changes at random times (xorshift, fixed seeds): whatever the order, the last
    /// state is shown once the quiet period has passed, and pushes stay a quiet period apart
    /// (less the 20 ms by which a change's time may lag).
    #[test]
    fn random_changes_always_end_shown() {
        for seed in 1..=2_000u64 {
            let mut x = seed;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut sim = Sim::new();
            let mut now = 0;
            for _ in 0..30 {
                let at = now + next() % (2 * Q);
                // The timer wakes when the coalescer asks it to.
                while let Some(wake) = sim.c.next_wakeup_ms().filter(|&w| w <= at) {
                    sim.tick(wake);
                }
                now = at;
                let state = [State::Offline, State::Away, State::Busy, State::Online]
                    [(next() % 4) as usize];
                // A cluster node's friends list sets what was shown of a user it had not
                // heard of, outside the coalescer.
                if next() % 5 == 0 {
                    sim.published = sim.current;
                }
                // A change's time may be read a moment before the timer's last tick.
                let stale = now.saturating_sub(next() % 20);
                sim.current = state;
                if sim.c.changed(7, sim.current, sim.published, stale) == Decision::PublishNow {
                    sim.publish(stale);
                }
            }
            while let Some(wake) = sim.c.next_wakeup_ms().filter(|&w| w <= now + 3 * Q) {
                sim.tick(wake);
            }
            assert_eq!(sim.published, sim.current, "seed {seed}: {:?}", sim.pushes);
            for pair in sim.pushes.windows(2) {
                assert!(
                    pair[1].0 + 20 >= pair[0].0 + Q,
                    "seed {seed}: {:?}",
                    sim.pushes
                );
            }
        }
    }
}

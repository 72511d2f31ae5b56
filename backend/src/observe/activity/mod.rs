//! What users do, counted as it happens (never by scanning the message store): per UTC day
//! the messages stored, registrations, logins and the distinct active users (a HyperLogLog
//! sketch: a user is active on a day they logged in or sent); per minute the heaviest senders
//! (space-saving). Days are kept for `observe.activity_days_kept` and written to
//! `<data_dir>/activity/` now and then and at shutdown, so they survive a restart; the
//! per-minute senders cover only the last hour and are not kept.
//!
//! A stored message costs its commit group's lock (one per group) plus a sketch update and a
//! scan of `observe.top_senders_tracked` slots.

mod file;
pub mod hll;
pub mod top;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use self::hll::Hll;
use self::top::TopSenders;
use crate::store::UserId;

pub const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;
/// The window of "heaviest senders": the last hour, a minute at a time.
pub const TOP_MINUTES: u64 = 60;
/// Days in "monthly" active users.
pub const MONTH_DAYS: usize = 30;

/// One UTC day's counts.
#[derive(Debug, Clone, Default)]
pub struct Day {
    /// Days since the epoch.
    pub day: u32,
    pub messages: u64,
    pub registrations: u64,
    pub logins: u64,
    /// Shared with copies handed out by [`Activity::days`]: a copy costs a reference count,
    /// and only today's sketch is ever copied again (once, at its next change).
    pub users: Arc<Hll>,
}

impl Day {
    fn new(day: u32) -> Self {
        Self {
            day,
            ..Self::default()
        }
    }
}

/// A sender of the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeavySender {
    pub user: UserId,
    /// Messages counted for them (may overstate by up to `error`).
    pub messages: u64,
    pub error: u64,
}

struct State {
    /// Oldest first, at most `days_kept`.
    days: VecDeque<Day>,
    /// Oldest first, at most [`TOP_MINUTES`].
    minutes: VecDeque<TopSenders>,
    /// Days changed since they were last written.
    dirty: BTreeSet<u32>,
}

pub struct Activity {
    state: Mutex<State>,
    days_kept: usize,
    top_tracked: usize,
    /// Where days are written; `None` keeps them in memory only.
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity").field("dir", &self.dir).finish()
    }
}

fn day_of(now_ms: u64) -> u32 {
    u32::try_from(now_ms / DAY_MS).unwrap_or(u32::MAX)
}

impl Activity {
    /// Loads the kept days from `dir` (created if missing); files past `days_kept` are removed.
    pub fn open(
        dir: Option<PathBuf>,
        days_kept: usize,
        top_tracked: usize,
    ) -> std::io::Result<Self> {
        let mut days = match &dir {
            Some(dir) => file::load(dir, days_kept)?,
            None => Vec::new(),
        };
        days.sort_by_key(|d| d.day);
        Ok(Self {
            state: Mutex::new(State {
                days: days.into(),
                minutes: VecDeque::new(),
                dirty: BTreeSet::new(),
            }),
            days_kept: days_kept.max(1),
            top_tracked: top_tracked.max(1),
            dir,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counts only: a panic elsewhere leaves nothing half-changed that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The senders of one commit group's stored messages, under one lock. Call it only for
    /// a group that stored some.
    pub fn sent(&self, senders: impl Iterator<Item = UserId>, now_ms: u64) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let day = day_of(now_ms);
        let top = minute_of(&mut st.minutes, now_ms / MINUTE_MS, self.top_tracked);
        let d = day_in(&mut st.days, day, self.days_kept);
        let users = Arc::make_mut(&mut d.users);
        for user in senders {
            top.add(user);
            users.insert(user);
            d.messages += 1;
        }
        st.dirty.insert(day);
    }

    pub fn logged_in(&self, user: UserId, now_ms: u64) {
        let mut st = self.lock();
        let day = day_of(now_ms);
        let d = day_in(&mut st.days, day, self.days_kept);
        d.logins += 1;
        Arc::make_mut(&mut d.users).insert(user);
        st.dirty.insert(day);
    }

    pub fn registered(&self, now_ms: u64) {
        let mut st = self.lock();
        let day = day_of(now_ms);
        day_in(&mut st.days, day, self.days_kept).registrations += 1;
        st.dirty.insert(day);
    }

    /// Copies of the newest `n` days that have counts (oldest first): the caller computes
    /// estimates outside the lock.
    pub fn days(&self, n: usize) -> Vec<Day> {
        let st = self.lock();
        let skip = st.days.len().saturating_sub(n);
        st.days.iter().skip(skip).cloned().collect()
    }

    /// The heaviest senders of the last hour, at most `n`, heaviest first.
    pub fn heaviest_senders(&self, now_ms: u64, n: usize) -> Vec<HeavySender> {
        let since = (now_ms / MINUTE_MS).saturating_sub(TOP_MINUTES - 1);
        let mut sum: HashMap<UserId, HeavySender> = HashMap::new();
        {
            let st = self.lock();
            for m in st.minutes.iter().filter(|m| m.minute >= since) {
                for s in m.slots() {
                    let e = sum.entry(s.user).or_insert(HeavySender {
                        user: s.user,
                        messages: 0,
                        error: 0,
                    });
                    e.messages += s.count;
                    e.error += s.error;
                }
            }
        }
        let mut out: Vec<HeavySender> = sum.into_values().collect();
        out.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.user.cmp(&b.user)));
        out.truncate(n);
        out
    }

    /// Writes the days changed since the last call. Blocking (files, fsync).
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let changed: Vec<Day> = {
            let mut st = self.lock();
            let dirty = std::mem::take(&mut st.dirty);
            st.days
                .iter()
                .filter(|d| dirty.contains(&d.day))
                .cloned()
                .collect()
        };
        let oldest_kept = changed.iter().map(|d| d.day).max().map(|newest| {
            newest.saturating_sub(u32::try_from(self.days_kept).unwrap_or(u32::MAX) - 1)
        });
        for day in &changed {
            if let Err(err) = file::write(dir, day) {
                // Try again next time.
                self.lock().dirty.insert(day.day);
                return Err(err);
            }
        }
        if let Some(oldest) = oldest_kept {
            file::remove_before(dir, oldest)?;
        }
        Ok(())
    }
}

/// Today's counts, starting a new day (and dropping the oldest past `kept`) when it begins.
fn day_in(days: &mut VecDeque<Day>, day: u32, kept: usize) -> &mut Day {
    // A clock stepping back counts into the newest day rather than reopening an old one.
    if days.back().is_none_or(|d| d.day < day) {
        days.push_back(Day::new(day));
        while days.len() > kept {
            days.pop_front();
        }
    }
    days.back_mut().expect("a day was just ensured")
}

/// This minute's senders; the oldest minute's table is reused once the hour is full.
fn minute_of(minutes: &mut VecDeque<TopSenders>, minute: u64, capacity: usize) -> &mut TopSenders {
    if minutes.back().is_none_or(|m| m.minute < minute) {
        let table = if minutes.len() >= TOP_MINUTES as usize {
            let mut t = minutes.pop_front().expect("the hour is full");
            t.restart(minute);
            t
        } else {
            TopSenders::new(capacity, minute)
        };
        minutes.push_back(table);
    }
    minutes.back_mut().expect("a minute was just ensured")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 20_000 * DAY_MS + 5 * MINUTE_MS;

    #[test]
    fn days_and_senders_are_counted_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = Some(dir.path().join("activity"));
        let a = Activity::open(path.clone(), 3, 4).unwrap();
        a.registered(T0);
        a.logged_in(1, T0);
        a.logged_in(2, T0);
        a.sent([1, 1, 1, 2, 3].into_iter(), T0);
        a.sent([3].into_iter(), T0 + DAY_MS);
        let days = a.days(10);
        assert_eq!(days.len(), 2);
        assert_eq!(
            (days[0].messages, days[0].registrations, days[0].logins),
            (5, 1, 2)
        );
        assert_eq!(days[0].users.estimate(), 3);
        assert_eq!(days[1].users.estimate(), 1);
        // The hour before T0 + 1 day holds only that day's send.
        let top = a.heaviest_senders(T0, 2);
        assert_eq!(top[0].user, 1);
        assert_eq!(top[0].messages, 3);
        a.persist().unwrap();
        drop(a);
        let b = Activity::open(path.clone(), 3, 4).unwrap();
        let again = b.days(10);
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].messages, 5);
        assert_eq!(again[0].users, days[0].users);
        // Past `days_kept`, the oldest day goes, from memory and from disk.
        for i in 2..5 {
            b.sent([9].into_iter(), T0 + i * DAY_MS);
        }
        b.persist().unwrap();
        assert_eq!(b.days(10).len(), 3);
        assert_eq!(Activity::open(path, 3, 4).unwrap().days(10).len(), 3);
    }
}

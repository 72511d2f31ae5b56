//! The in-process presence store: one map behind one lock, held for a handful of map operations
//! and never across I/O. Presence changes come from logins, closes and `set_presence`, never from
//! messages, so one lock is not on the message path.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use smallvec::SmallVec;

use super::{DeviceState, PresenceStore, Shown, State, most_present};
use crate::api::ConnRef;
use crate::store::UserId;

#[derive(Debug, Default)]
struct Entry {
    /// Most users are on one or two devices: kept inline.
    devices: SmallVec<[(ConnRef, DeviceState); 2]>,
    /// When the devices last stopped showing the user as present.
    absent_since_ms: u64,
    published: Shown,
}

impl Entry {
    fn state(&self) -> State {
        most_present(self.devices.iter().map(|(_, state)| state.shown()))
    }

    fn shown(&self) -> Shown {
        let state = self.state();
        Shown {
            state,
            last_seen_ms: if state == State::Offline {
                self.absent_since_ms
            } else {
                0
            },
        }
    }
}

/// Users who are offline keep an entry for their last seen time (one per user seen since the
/// server started: restarting forgets last seen, which then reads as unknown).
#[derive(Debug, Default)]
pub(crate) struct LocalPresence {
    users: Mutex<HashMap<UserId, Entry>>,
}

impl LocalPresence {
    fn users(&self) -> MutexGuard<'_, HashMap<UserId, Entry>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The users shown present by their devices here (a cluster node's refresh of its parts).
    pub(crate) fn present_users(&self) -> Vec<UserId> {
        self.users()
            .iter()
            .filter(|(_, e)| e.state() != State::Offline)
            .map(|(u, _)| *u)
            .collect()
    }
}

impl PresenceStore for LocalPresence {
    fn set_device(
        &self,
        user: UserId,
        device: ConnRef,
        state: Option<DeviceState>,
        now_ms: u64,
    ) -> Shown {
        let mut users = self.users();
        if state.is_none() && !users.contains_key(&user) {
            return Shown::default();
        }
        let entry = users.entry(user).or_default();
        let before = entry.state();
        let found = entry.devices.iter().position(|(conn, _)| *conn == device);
        match (found, state) {
            (Some(i), Some(state)) => entry.devices[i].1 = state,
            (None, Some(state)) => entry.devices.push((device, state)),
            (Some(i), None) => {
                entry.devices.swap_remove(i);
            }
            (None, None) => {}
        }
        if before != State::Offline && entry.state() == State::Offline {
            entry.absent_since_ms = now_ms;
        }
        entry.shown()
    }

    fn current(&self, user: UserId) -> Shown {
        self.users()
            .get(&user)
            .map_or_else(Shown::default, Entry::shown)
    }

    fn published(&self, users: &[UserId]) -> Vec<Shown> {
        let map = self.users();
        users
            .iter()
            .map(|u| map.get(u).map_or_else(Shown::default, |e| e.published))
            .collect()
    }

    fn publish(&self, user: UserId, shown: Shown) {
        self.users().entry(user).or_default().published = shown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u64) -> ConnRef {
        ConnRef { shard: 0, conn: n }
    }

    fn state(p: &LocalPresence, device: u64, state: Option<DeviceState>, now: u64) -> State {
        p.set_device(7, conn(device), state, now).state
    }

    #[test]
    fn the_most_present_device_wins_and_invisible_counts_as_offline() {
        let p = LocalPresence::default();
        assert_eq!(state(&p, 1, Some(DeviceState::Away), 1), State::Away);
        assert_eq!(state(&p, 2, Some(DeviceState::Busy), 2), State::Busy);
        assert_eq!(state(&p, 3, Some(DeviceState::Invisible), 3), State::Busy);
        assert_eq!(state(&p, 1, Some(DeviceState::Online), 4), State::Online);
        assert_eq!(state(&p, 1, None, 5), State::Busy);
        assert_eq!(
            p.set_device(7, conn(2), None, 6),
            Shown {
                state: State::Offline,
                last_seen_ms: 6
            },
            "invisible only: last seen when the last visible device left"
        );
        assert_eq!(state(&p, 3, None, 7), State::Offline);
        assert_eq!(p.current(7).last_seen_ms, 6);
        assert_eq!(state(&p, 2, Some(DeviceState::Online), 8), State::Online);
        assert_eq!(p.current(7).last_seen_ms, 0, "present: no last seen");
        assert_eq!(
            p.set_device(8, conn(9), None, 9),
            Shown::default(),
            "unknown user"
        );
    }

    #[test]
    fn what_was_published_is_kept_apart_from_the_devices() {
        let p = LocalPresence::default();
        p.set_device(7, conn(1), Some(DeviceState::Online), 1);
        assert_eq!(p.published(&[7, 8]), vec![Shown::default(); 2]);
        let shown = Shown {
            state: State::Offline,
            last_seen_ms: 1234,
        };
        p.publish(7, shown);
        assert_eq!(p.published(&[8, 7]), vec![Shown::default(), shown]);
        assert_eq!(p.current(7).state, State::Online);
    }
}

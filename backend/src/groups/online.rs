//! Who of a group is online: the one interface delivery resolves a group's audience through.
//!
//! Kept per group as the set of its online members (users; their connections come from the
//! session registry), so finding a message's audience costs the online members, never the
//! members. Maintained on login (the user's groups, read once), on the last close, and on every
//! membership change, which delivery applies in commit order: a removed member gets its REMOVED
//! event and nothing after, a joined member everything after its JOINED event.
//!
//! **The login race.** A login reads the user's groups from the store while membership changes
//! keep being delivered. A change delivered before the login registered itself here is in the
//! store snapshot the login reads after (delivery follows durability, and readers see what is
//! durable). A change delivered after that bumps the user's epoch (a process-wide counter, so an
//! entry closed and opened again never repeats one); the login installs what it read only if
//! the epoch is still the one it started from, else it reads again. Until installed, the user
//! gets no group pushes, which is fine: the login's reply has not left yet, and the client's
//! Sync after it sees everything durable.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use crate::api::ConnRef;
use crate::store::{ConvId, UserId};

type Map<K, V> = HashMap<K, V, RandomState>;
type Set<K> = HashSet<K, RandomState>;

#[derive(Default)]
struct OnlineUser {
    conns: SmallVec<[ConnRef; 2]>,
    /// The user's groups (as a member), once a login installed them.
    groups: Option<Vec<ConvId>>,
    epoch: u64,
}

#[derive(Default)]
struct Inner {
    groups: Map<ConvId, Set<UserId>>,
    users: Map<UserId, OnlineUser>,
    next_epoch: u64,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

/// What a login must do after [`GroupOnline::login`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginStep {
    /// Another session of the user is online: its groups are known already.
    Done,
    /// Read the user's groups and hand them to [`GroupOnline::install`] with this epoch.
    ReadGroups(u64),
}

#[derive(Default)]
pub(crate) struct GroupOnline {
    inner: Mutex<Inner>,
}

impl GroupOnline {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `user` opened (registered in the sessions first).
    pub(crate) fn login(&self, user: UserId, conn: ConnRef) -> LoginStep {
        let mut inner = self.lock();
        let epoch = inner.bump();
        let entry = inner.users.entry(user).or_insert_with(|| OnlineUser {
            epoch,
            ..OnlineUser::default()
        });
        if !entry.conns.contains(&conn) {
            entry.conns.push(conn);
        }
        if entry.groups.is_some() {
            LoginStep::Done
        } else {
            LoginStep::ReadGroups(entry.epoch)
        }
    }

    /// Installs the groups a login read at `epoch`. `false`: a change came in meanwhile, read
    /// again. `true` also when there is nothing left to do (the session closed, or another
    /// login installed them first).
    pub(crate) fn install(&self, user: UserId, epoch: u64, groups: Vec<ConvId>) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.users.get_mut(&user) else {
            return true;
        };
        if entry.groups.is_some() {
            return true;
        }
        if entry.epoch != epoch {
            return false;
        }
        entry.groups = Some(groups.clone());
        for g in groups {
            inner.groups.entry(g).or_default().insert(user);
        }
        true
    }

    /// A session closed; with its last one the user leaves every group's online set.
    pub(crate) fn close(&self, user: UserId, conn: ConnRef) {
        let mut inner = self.lock();
        let Some(entry) = inner.users.get_mut(&user) else {
            return;
        };
        entry.conns.retain(|c| *c != conn);
        if !entry.conns.is_empty() {
            return;
        }
        let groups = inner
            .users
            .remove(&user)
            .and_then(|e| e.groups)
            .unwrap_or_default();
        for g in groups {
            remove_from(&mut inner.groups, g, user);
        }
    }

    /// A membership change, applied by delivery in commit order.
    pub(crate) fn changed(&self, g: ConvId, user: UserId, member: bool) {
        let mut inner = self.lock();
        let epoch = inner.bump();
        let Some(entry) = inner.users.get_mut(&user) else {
            return;
        };
        entry.epoch = epoch;
        let Some(groups) = entry.groups.as_mut() else {
            // A login is reading this user's groups: it will see the change as stale and
            // read again.
            return;
        };
        groups.retain(|x| *x != g);
        if member {
            groups.push(g);
            inner.groups.entry(g).or_default().insert(user);
        } else {
            remove_from(&mut inner.groups, g, user);
        }
    }

    /// Calls `f` with each online member of the group: O(online members).
    pub(crate) fn for_each_user(&self, g: ConvId, mut f: impl FnMut(UserId)) {
        let inner = self.lock();
        if let Some(users) = inner.groups.get(&g) {
            users.iter().copied().for_each(&mut f);
        }
    }

    /// Whether the user is among the group's online members (tests and assertions).
    #[cfg(test)]
    fn is_online_in(&self, g: ConvId, user: UserId) -> bool {
        self.lock()
            .groups
            .get(&g)
            .is_some_and(|s| s.contains(&user))
    }
}

fn remove_from(groups: &mut Map<ConvId, Set<UserId>>, g: ConvId, user: UserId) {
    if let Some(set) = groups.get_mut(&g) {
        set.remove(&user);
        if set.is_empty() {
            groups.remove(&g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: UserId = 100_000_001;
    fn g(n: u64) -> ConvId {
        ConvId::group(n).unwrap()
    }
    fn c(n: u64) -> ConnRef {
        ConnRef { shard: 0, conn: n }
    }

    #[test]
    fn login_install_close() {
        let online = GroupOnline::default();
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!("first login reads")
        };
        assert!(online.install(U, epoch, vec![g(1), g(2)]));
        assert!(online.is_online_in(g(1), U));
        assert_eq!(online.login(U, c(2)), LoginStep::Done);
        online.close(U, c(1));
        assert!(online.is_online_in(g(2), U), "one session left");
        online.close(U, c(2));
        assert!(!online.is_online_in(g(2), U));
        let mut seen = 0;
        online.for_each_user(g(1), |_| seen += 1);
        assert_eq!(seen, 0);
    }

    #[test]
    fn a_change_during_a_login_read_makes_it_read_again() {
        let online = GroupOnline::default();
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        // Removed from g(1) while the login was reading (its read still showed g(1)).
        online.changed(g(1), U, false);
        assert!(!online.install(U, epoch, vec![g(1)]));
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        assert!(online.install(U, epoch, vec![]));
        assert!(!online.is_online_in(g(1), U));
    }

    #[test]
    fn changes_after_install_apply_at_once_and_offline_users_are_ignored() {
        let online = GroupOnline::default();
        online.changed(g(1), U, true);
        assert!(!online.is_online_in(g(1), U), "offline: nothing kept");
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        assert!(online.install(U, epoch, vec![]));
        online.changed(g(3), U, true);
        assert!(online.is_online_in(g(3), U));
        online.changed(g(3), U, false);
        assert!(!online.is_online_in(g(3), U));
        // A closed entry's epoch is never reused by the next login.
        online.close(U, c(1));
        let LoginStep::ReadGroups(e2) = online.login(U, c(2)) else {
            panic!()
        };
        assert!(e2 > epoch);
    }
}

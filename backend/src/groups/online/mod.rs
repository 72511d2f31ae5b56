//! Who of a group is online: the one interface delivery resolves a group's audience through.
//!
//! Two levels. Per online user (under one lock, touched by logins, closes and membership
//! changes, never per message): its connections, its groups once a login read them, and an
//! epoch. Per group ([`index::OnlineIndex`], touched per message under a striped read lock): the
//! online connections, as one shared list per shard, so that resolving a message's audience
//! costs the shards, never the members nor even the online ones. Maintained on login (the
//! user's groups, read once), on close, and on every membership change, which delivery applies
//! in commit order: a removed member gets its REMOVED event and nothing after, a joined member
//! everything after its JOINED event.
//!
//! **The login race.** A login reads the user's groups from the store while membership changes
//! keep being delivered. A change delivered before the login registered itself here is in the
//! store snapshot the login reads after (delivery follows durability, and readers see what is
//! durable). A change delivered after that bumps the user's epoch (a process-wide counter, so an
//! entry closed and opened again never repeats one); the login installs what it read only if
//! the epoch is still the one it started from, else it reads again. Until installed, the user
//! gets no group pushes, which is fine: the login's reply has not left yet, and the client's
//! Sync after it sees everything durable.
//!
//! **Other nodes' groups** (cluster mode). For a group another node owns, this node learns of
//! membership changes from the owner's `MemberChange` items, in order with the group's frames.
//! Two things can still go wrong there, and both are closed here, not trusted to the link:
//! - a login reads the store ahead of the owner's frames still on their way: each installed
//!   group carries the member's `visible_from_seq` as a floor, and a message frame below it is
//!   not pushed to that member's connections ([`index::OnlineIndex::audience_at`]);
//! - a change lost on the way (a full or broken link, a node not yet in the owner's view): the
//!   link asks for a repair (`repair.rs`), which re-reads the groups of every user online here;
//!   until it is done, other nodes' group frames are not pushed here (the sessions are told to
//!   Sync after it, so nothing is lost; a removed member gets nothing past its REMOVED event).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use foldhash::fast::RandomState;
use smallvec::SmallVec;

use crate::api::ConnRef;
use crate::store::{ConvId, UserId};

pub(crate) mod index;
mod repair;

pub(crate) use repair::read_groups;

use index::{OnlineIndex, ShardConns};

type Map<K, V> = HashMap<K, V, RandomState>;

#[derive(Default)]
struct OnlineUser {
    conns: SmallVec<[ConnRef; 2]>,
    /// The user's groups (as a member) with the first seq pushed to the user in each (0: all),
    /// once a login installed them.
    groups: Option<Vec<(ConvId, u64)>>,
    epoch: u64,
}

#[derive(Default)]
struct Users {
    users: Map<UserId, OnlineUser>,
    next_epoch: u64,
}

impl Users {
    fn bump(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

/// What a login must do after [`GroupOnline::login`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginStep {
    /// Another session of the user is online: its groups are known already (and this
    /// connection has joined their audiences).
    Done,
    /// Read the user's groups and hand them to [`GroupOnline::install`] with this epoch.
    ReadGroups(u64),
}

pub(crate) struct GroupOnline {
    /// The user level. The index is changed only while this is held, so the two agree.
    users: Mutex<Users>,
    index: OnlineIndex,
    /// Re-reading the online users' groups after a change from another node was lost.
    repair: repair::Repair,
}

impl GroupOnline {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            users: Mutex::default(),
            index: OnlineIndex::new(shards),
            repair: repair::Repair::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `user` opened (registered in the sessions first).
    pub(crate) fn login(&self, user: UserId, conn: ConnRef) -> LoginStep {
        let mut users = self.lock();
        let epoch = users.bump();
        let entry = users.users.entry(user).or_insert_with(|| OnlineUser {
            epoch,
            ..OnlineUser::default()
        });
        if !entry.conns.contains(&conn) {
            entry.conns.push(conn);
        }
        match &entry.groups {
            Some(groups) => {
                for (g, floor) in groups {
                    self.index.add(*g, conn, *floor);
                }
                LoginStep::Done
            }
            None => LoginStep::ReadGroups(entry.epoch),
        }
    }

    /// Installs the groups a login read at `epoch`. `false`: a change came in meanwhile, read
    /// again. `true` also when there is nothing left to do (the session closed, or another
    /// login installed them first).
    pub(crate) fn install(&self, user: UserId, epoch: u64, groups: Vec<(ConvId, u64)>) -> bool {
        let mut users = self.lock();
        let Some(entry) = users.users.get_mut(&user) else {
            return true;
        };
        if entry.groups.is_some() {
            return true;
        }
        if entry.epoch != epoch {
            return false;
        }
        for (g, floor) in &groups {
            for conn in &entry.conns {
                self.index.add(*g, *conn, *floor);
            }
        }
        entry.groups = Some(groups);
        true
    }

    /// Replaces the installed groups of `user` with what a repair read at `epoch`. `false`: a
    /// change came in meanwhile, read again. `true` also when there is nothing to replace.
    fn replace(&self, user: UserId, epoch: u64, groups: Vec<(ConvId, u64)>) -> bool {
        // Looked up once per old group, before the lock: a user may be in up to
        // `groups.per_user_max` (10,000) groups, and a repair replaces every online user's.
        let kept: HashSet<ConvId, RandomState> = groups.iter().map(|(g, _)| *g).collect();
        let mut users = self.lock();
        let Some(entry) = users.users.get_mut(&user) else {
            return true;
        };
        if entry.epoch != epoch {
            return false;
        }
        let Some(old) = entry.groups.as_ref() else {
            return true;
        };
        for (g, _) in old {
            if !kept.contains(g) {
                for conn in &entry.conns {
                    self.index.remove(*g, *conn);
                }
            }
        }
        for (g, floor) in &groups {
            for conn in &entry.conns {
                self.index.add(*g, *conn, *floor);
            }
        }
        entry.groups = Some(groups);
        true
    }

    /// A session closed: it leaves its groups' audiences; with the user's last session the
    /// user is forgotten.
    pub(crate) fn close(&self, user: UserId, conn: ConnRef) {
        let mut users = self.lock();
        let Some(entry) = users.users.get_mut(&user) else {
            return;
        };
        let Some(at) = entry.conns.iter().position(|c| *c == conn) else {
            return;
        };
        entry.conns.swap_remove(at);
        for (g, _) in entry.groups.iter().flatten() {
            self.index.remove(*g, conn);
        }
        if entry.conns.is_empty() {
            users.users.remove(&user);
        }
    }

    /// A membership change, applied by delivery in commit order.
    pub(crate) fn changed(&self, g: ConvId, user: UserId, member: bool) {
        let mut users = self.lock();
        let epoch = users.bump();
        let Some(entry) = users.users.get_mut(&user) else {
            return;
        };
        entry.epoch = epoch;
        let Some(groups) = entry.groups.as_mut() else {
            // A login is reading this user's groups: it will see the change as stale and
            // read again.
            return;
        };
        groups.retain(|(x, _)| *x != g);
        // In order with the group's frames: every frame after it is for the member.
        if member {
            groups.push((g, 0));
        }
        for conn in &entry.conns {
            if member {
                self.index.add(g, *conn, 0);
            } else {
                self.index.remove(g, *conn);
            }
        }
    }

    /// Calls `f(shard, connections)` for each shard with online connections of the group:
    /// O(shards) per message, whatever the group's size.
    pub(crate) fn audience(&self, g: ConvId, f: impl FnMut(usize, &ShardConns)) {
        self.index.audience(g, f);
    }

    /// The audience of another node's frame of message `seq` (0: not a message): nobody while
    /// a repair is due, and no member whose floor is above `seq`.
    pub(crate) fn remote_audience(&self, g: ConvId, seq: u64, f: impl FnMut(usize, &ShardConns)) {
        if self.repair.due() {
            metrics::counter!("ringchat_group_remote_frames_held_total").increment(1);
            return;
        }
        self.index.audience_at(g, seq, f);
    }

    /// Online connections of the group.
    pub(crate) fn online_conns(&self, g: ConvId) -> usize {
        self.index.online(g)
    }

    /// Whether the user is online and a member of the group (as its logins and the changes
    /// since tell).
    pub(crate) fn is_online_member(&self, g: ConvId, user: UserId) -> bool {
        self.lock()
            .users
            .get(&user)
            .and_then(|e| e.groups.as_ref())
            .is_some_and(|groups| groups.iter().any(|(x, _)| *x == g))
    }

    /// Groups with someone online, and (connection, group) entries.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        self.index.size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const U: UserId = 100_000_001;
    fn g(n: u64) -> ConvId {
        ConvId::group(n).unwrap()
    }
    fn c(n: u64) -> ConnRef {
        ConnRef { shard: 0, conn: n }
    }

    impl GroupOnline {
        fn is_online_in(&self, g: ConvId, user: UserId) -> bool {
            let member = self.is_online_member(g, user);
            assert_eq!(member, self.online_conns(g) > 0, "both levels agree");
            member
        }

        fn conns(&self, g: ConvId) -> Vec<(usize, Vec<u64>)> {
            let mut out = Vec::new();
            self.audience(g, |shard, conns| {
                let mut conns = conns.to_vec();
                conns.sort_unstable();
                out.push((shard, conns));
            });
            out
        }
    }

    #[test]
    fn every_session_is_in_the_audience_until_it_closes() {
        let online = GroupOnline::new(2);
        let phone = ConnRef { shard: 1, conn: 5 };
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!("first login reads")
        };
        assert!(online.install(U, epoch, vec![(g(1), 0)]));
        // A second session of the user joins the groups it is in at once.
        assert_eq!(online.login(U, phone), LoginStep::Done);
        assert_eq!(online.conns(g(1)), [(0, vec![1]), (1, vec![5])]);
        online.changed(g(2), U, true);
        assert_eq!(online.conns(g(2)), [(0, vec![1]), (1, vec![5])]);
        online.close(U, c(1));
        assert_eq!(online.conns(g(1)), [(1, vec![5])]);
        online.changed(g(1), U, false);
        assert!(online.conns(g(1)).is_empty());
        online.close(U, phone);
        assert_eq!(online.size(), (0, 0));
    }

    #[test]
    fn login_install_close() {
        let online = GroupOnline::new(1);
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!("first login reads")
        };
        assert!(online.install(U, epoch, vec![(g(1), 0), (g(2), 0)]));
        assert!(online.is_online_in(g(1), U));
        assert_eq!(online.login(U, c(2)), LoginStep::Done);
        online.close(U, c(1));
        assert!(online.is_online_in(g(2), U), "one session left");
        online.close(U, c(2));
        assert!(!online.is_online_in(g(2), U));
        assert_eq!(online.online_conns(g(1)), 0);
        assert_eq!(online.size(), (0, 0));
    }

    #[test]
    fn a_change_during_a_login_read_makes_it_read_again() {
        let online = GroupOnline::new(1);
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        // Removed from g(1) while the login was reading (its read still showed g(1)).
        online.changed(g(1), U, false);
        assert!(!online.install(U, epoch, vec![(g(1), 0)]));
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        assert!(online.install(U, epoch, vec![]));
        assert!(!online.is_online_in(g(1), U));
    }

    #[test]
    fn a_repair_replaces_the_groups_unless_a_change_came_in_meanwhile() {
        let online = GroupOnline::new(1);
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        assert!(online.install(U, epoch, vec![(g(1), 0), (g(2), 0)]));
        let epoch = online.lock().users[&U].epoch;
        assert!(online.replace(U, epoch, vec![(g(2), 0), (g(3), 7)]));
        assert!(
            !online.is_online_in(g(1), U),
            "the lost removal is repaired"
        );
        assert!(online.is_online_in(g(3), U));
        online.changed(g(4), U, true);
        assert!(!online.replace(U, epoch, vec![]), "read again");
        assert!(online.is_online_in(g(4), U));
    }

    #[tokio::test]
    async fn other_nodes_frames_are_held_until_a_repair_is_done() {
        let online = Arc::new(GroupOnline::new(1));
        let LoginStep::ReadGroups(epoch) = online.login(U, c(1)) else {
            panic!()
        };
        assert!(online.install(U, epoch, vec![(g(1), 0)]));
        let heard = |online: &GroupOnline| {
            let mut n = 0;
            online.remote_audience(g(1), 5, |_, conns| n += conns.len());
            n
        };
        assert_eq!(heard(&online), 1);
        assert!(
            online.repair_wanted(),
            "no pass runs: the caller starts one"
        );
        assert!(!online.repair_wanted(), "one pass at a time");
        assert_eq!(heard(&online), 0, "held");
        online.repair().await;
        assert_eq!(heard(&online), 1);
    }

    #[test]
    fn changes_after_install_apply_at_once_and_offline_users_are_ignored() {
        let online = GroupOnline::new(1);
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

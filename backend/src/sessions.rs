//! Who is online where: the registry of logged-in connections, by user.
//!
//! Shared by the backend, the sequencer and the shards behind one read-write lock that is never
//! held across an `.await`: delivery and delivery acks only read it, logins and closes write.
//! Beside the sessions by user, an index by token expiry: the sweep that ends sessions whose
//! token expired (`accounts/expiry.rs`) finds them without walking every session.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ringchat_proto::v1::Platform;
use smallvec::SmallVec;

use crate::api::ConnRef;
use crate::store::{TokenHash, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub conn: ConnRef,
    pub device_id: Box<str>,
    pub platform: Platform,
    /// The token this session logged in with (or was given since): Logout revokes it.
    pub token_hash: TokenHash,
    /// The client's address at login: what it does is bounded per client network too (rooms).
    pub peer: std::net::IpAddr,
    /// When it registered (wall clock, unix ms; stamped under the table's lock, so in the order
    /// sessions register): an operator's kick from another node ends only sessions opened
    /// before it was issued, a `REPLACED` one only those of its device opened before the
    /// replacing session (`cluster/link/kicks.rs`).
    pub opened_at_ms: u64,
    /// When `token_hash` expires (unix ms): the session ends then (`accounts/expiry.rs`).
    pub token_expires_at_ms: u64,
}

/// The platform a login's `platform` field names (unknown values: unspecified).
pub fn session_platform(wire: i32) -> Platform {
    Platform::try_from(wire).unwrap_or(Platform::Unspecified)
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    TooManyDevices { devices_max: usize },
}

/// The registry, shared. Readers do not wait for each other. A shard's writes never take it (a
/// delivery ack's device comes with the connection's login: `SessionInfo::device_id`).
#[derive(Debug, Clone)]
pub struct SharedSessions(Arc<RwLock<Sessions>>);

impl SharedSessions {
    pub fn new(sessions: Sessions) -> Self {
        Self(Arc::new(RwLock::new(sessions)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Sessions> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Sessions> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
pub struct Sessions {
    /// Most users are on one device at a time: its session is kept inline, with no allocation.
    /// foldhash (seeded per process), not SipHash: delivery looks up every recipient here.
    by_user: HashMap<UserId, SmallVec<[Session; 1]>, foldhash::fast::RandomState>,
    /// (token expiry, user, connection) of every session not yet handed to the expiry sweep.
    expiring: BTreeSet<(u64, UserId, ConnRef)>,
    devices_max: usize,
    replace_on: Vec<Platform>,
}

impl Sessions {
    pub fn new(devices_max: usize, replace_on: Vec<Platform>) -> Self {
        Self {
            by_user: HashMap::default(),
            expiring: BTreeSet::new(),
            devices_max,
            replace_on,
        }
    }

    /// Whether a session of `device_id` on `platform` replaces `old` (same non-empty device id,
    /// or same platform where the policy says so).
    fn replaces(&self, device_id: &str, platform: Platform, old: &Session) -> bool {
        (!device_id.is_empty() && *old.device_id == *device_id)
            || (old.platform == platform && self.replace_on.contains(&platform))
    }

    /// Whether a session of `device_id` on `platform` would be let in now: the rule
    /// [`Self::open`] applies, asked before a login writes a token, so that a login refused
    /// for too many devices revokes nothing.
    #[cfg(test)]
    pub fn room_for(
        &self,
        user_id: UserId,
        device_id: &str,
        platform: Platform,
    ) -> Result<(), OpenError> {
        self.room_beside(user_id, device_id, platform, &[])
    }

    /// [`Self::room_for`], counting also `elsewhere`: the device ids of the user's sessions on
    /// the other nodes (cluster mode, `Routes::sessions_elsewhere`). Those of this (named)
    /// device do not count: the login replaces them there too (`Kicked{REPLACED}` through the
    /// link). The per-platform policy replaces only sessions on this node.
    pub fn room_beside(
        &self,
        user_id: UserId,
        device_id: &str,
        platform: Platform,
        elsewhere: &[Box<str>],
    ) -> Result<(), OpenError> {
        // Devices, not sessions: a device that moved here from another node is still routed
        // there until its kick lands, and counts once. Nameless sessions count one each.
        let mut named: SmallVec<[&str; 8]> = SmallVec::new();
        let mut nameless = 0usize;
        let staying = (self.of_user(user_id).iter())
            .filter(|old| !self.replaces(device_id, platform, old))
            .map(|old| &*old.device_id);
        let there =
            (elsewhere.iter().map(|d| &**d)).filter(|d| device_id.is_empty() || *d != device_id);
        for device in staying.chain(there) {
            if device.is_empty() {
                nameless += 1;
            } else if !named.contains(&device) {
                named.push(device);
            }
        }
        if named.len() + nameless >= self.devices_max {
            return Err(OpenError::TooManyDevices {
                devices_max: self.devices_max,
            });
        }
        Ok(())
    }

    /// Registers a session. Returns the connections it replaces (same device id, or same platform
    /// where the policy says so); the caller kicks them.
    #[cfg(test)]
    pub fn open(&mut self, user_id: UserId, session: Session) -> Result<Vec<ConnRef>, OpenError> {
        self.open_beside(user_id, session, &[])
    }

    /// [`Self::open`] under [`Self::room_beside`]'s count (`elsewhere`: the user's sessions on
    /// the other nodes).
    pub fn open_beside(
        &mut self,
        user_id: UserId,
        session: Session,
        elsewhere: &[Box<str>],
    ) -> Result<Vec<ConnRef>, OpenError> {
        self.room_beside(user_id, &session.device_id, session.platform, elsewhere)?;
        let existing = std::mem::take(self.by_user.entry(user_id).or_default());
        let mut replaced = Vec::new();
        let mut staying = SmallVec::with_capacity(existing.len() + 1);
        for old in existing {
            if self.replaces(&session.device_id, session.platform, &old) {
                self.expiring
                    .remove(&(old.token_expires_at_ms, user_id, old.conn));
                replaced.push(old.conn);
            } else {
                staying.push(old);
            }
        }
        self.expiring
            .insert((session.token_expires_at_ms, user_id, session.conn));
        staying.push(session);
        self.by_user.insert(user_id, staying);
        Ok(replaced)
    }

    /// Forgets a session; returns it if it was there.
    pub fn close(&mut self, user_id: UserId, conn: ConnRef) -> Option<Session> {
        let list = self.by_user.get_mut(&user_id)?;
        let at = list.iter().position(|s| s.conn == conn)?;
        let session = list.remove(at);
        if list.is_empty() {
            self.by_user.remove(&user_id);
        }
        self.expiring
            .remove(&(session.token_expires_at_ms, user_id, conn));
        Some(session)
    }

    /// Takes out of the expiry index up to `max` sessions whose token expired by `now_ms`; the
    /// caller kicks them (they stay registered until their connection closes).
    pub fn take_expired(&mut self, now_ms: u64, max: usize) -> Vec<(UserId, ConnRef)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.expiring.first() {
                Some(&(at, user, conn)) if at <= now_ms => {
                    self.expiring.pop_first();
                    out.push((user, conn));
                }
                _ => break,
            }
        }
        out
    }

    /// Whether some session's token expired by `now_ms` (a read lock is enough to ask).
    pub fn any_expired(&self, now_ms: u64) -> bool {
        self.expiring
            .first()
            .is_some_and(|(at, _, _)| *at <= now_ms)
    }

    pub fn session(&self, user_id: UserId, conn: ConnRef) -> Option<&Session> {
        self.of_user(user_id).iter().find(|s| s.conn == conn)
    }

    /// The session's token changed (ChangePassword gave it a fresh one).
    pub fn set_token(
        &mut self,
        user_id: UserId,
        conn: ConnRef,
        token_hash: TokenHash,
        token_expires_at_ms: u64,
    ) {
        if let Some(s) = self
            .by_user
            .get_mut(&user_id)
            .and_then(|list| list.iter_mut().find(|s| s.conn == conn))
        {
            self.expiring
                .remove(&(s.token_expires_at_ms, user_id, conn));
            self.expiring.insert((token_expires_at_ms, user_id, conn));
            s.token_hash = token_hash;
            s.token_expires_at_ms = token_expires_at_ms;
        }
    }

    pub fn of_user(&self, user_id: UserId) -> &[Session] {
        self.by_user
            .get(&user_id)
            .map_or(&[], |list| list.as_slice())
    }

    /// The connections of the user's sessions, of one device's when given: those a kick ends.
    pub fn to_kick(&self, user_id: UserId, device: Option<&str>) -> Vec<ConnRef> {
        self.of_user(user_id)
            .iter()
            .filter(|s| device.is_none_or(|d| *s.device_id == *d))
            .map(|s| s.conn)
            .collect()
    }

    pub fn device_of(&self, user_id: UserId, conn: ConnRef) -> Option<&str> {
        self.of_user(user_id)
            .iter()
            .find(|s| s.conn == conn)
            .map(|s| &*s.device_id)
    }

    pub fn online_users(&self) -> usize {
        self.by_user.len()
    }

    /// Every session with its user, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = (UserId, &Session)> + '_ {
        self.by_user
            .iter()
            .flat_map(|(user, list)| list.iter().map(move |s| (*user, s)))
    }

    /// Every logged-in connection, in no particular order.
    pub fn conns(&self) -> impl Iterator<Item = ConnRef> + '_ {
        self.by_user.values().flatten().map(|s| s.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(conn: u64, device: &str, platform: Platform) -> Session {
        Session {
            conn: ConnRef { shard: 0, conn },
            device_id: device.into(),
            platform,
            token_hash: [0; 32],
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            opened_at_ms: 0,
            token_expires_at_ms: u64::MAX,
        }
    }

    #[test]
    fn devices_stay_up_to_the_limit() {
        let mut reg = Sessions::new(2, vec![]);
        assert_eq!(reg.open(7, s(1, "a", Platform::Ios)), Ok(vec![]));
        assert_eq!(reg.open(7, s(2, "b", Platform::Ios)), Ok(vec![]));
        assert_eq!(
            reg.open(7, s(3, "c", Platform::Web)),
            Err(OpenError::TooManyDevices { devices_max: 2 })
        );
        assert_eq!(reg.of_user(7).len(), 2);
    }

    #[test]
    fn same_device_or_policy_platform_replaces() {
        let mut reg = Sessions::new(10, vec![Platform::Android]);
        reg.open(7, s(1, "phone", Platform::Ios)).unwrap();
        assert_eq!(
            reg.open(7, s(2, "phone", Platform::Ios)),
            Ok(vec![ConnRef { shard: 0, conn: 1 }])
        );
        reg.open(7, s(3, "a1", Platform::Android)).unwrap();
        assert_eq!(
            reg.open(7, s(4, "a2", Platform::Android)),
            Ok(vec![ConnRef { shard: 0, conn: 3 }])
        );
        assert_eq!(reg.of_user(7).len(), 2);
        reg.close(7, ConnRef { shard: 0, conn: 2 });
        reg.close(7, ConnRef { shard: 0, conn: 4 });
        assert_eq!(reg.online_users(), 0);
    }

    #[test]
    fn room_is_the_rule_open_applies() {
        let mut reg = Sessions::new(2, vec![Platform::Android]);
        reg.open(7, s(1, "a", Platform::Ios)).unwrap();
        reg.open(7, s(2, "b", Platform::Android)).unwrap();
        let full = Err(OpenError::TooManyDevices { devices_max: 2 });
        assert_eq!(reg.room_for(7, "c", Platform::Web), full);
        assert_eq!(
            reg.room_for(7, "", Platform::Web),
            full,
            "a nameless login is one more"
        );
        assert_eq!(reg.room_for(7, "a", Platform::Web), Ok(()), "replaces a");
        assert_eq!(
            reg.room_for(7, "c", Platform::Android),
            Ok(()),
            "replaces b"
        );
        assert_eq!(reg.room_for(8, "a", Platform::Ios), Ok(()), "another user");
    }

    /// Cluster mode: the user's sessions on other nodes count too, except the device's own
    /// (replaced there).
    #[test]
    fn sessions_elsewhere_count_but_not_the_devices_own() {
        let mut reg = Sessions::new(3, vec![]);
        reg.open(7, s(1, "a", Platform::Ios)).unwrap();
        let elsewhere: Vec<Box<str>> = vec!["b".into(), "phone".into()];
        let full = Err(OpenError::TooManyDevices { devices_max: 3 });
        assert_eq!(reg.room_beside(7, "c", Platform::Web, &elsewhere), full);
        assert_eq!(reg.room_beside(7, "", Platform::Web, &elsewhere), full);
        assert_eq!(
            reg.room_beside(7, "phone", Platform::Web, &elsewhere),
            Ok(()),
            "replaces the phone where it is"
        );
        assert_eq!(
            reg.open_beside(7, s(2, "c", Platform::Web), &elsewhere),
            Err(OpenError::TooManyDevices { devices_max: 3 })
        );
        let nameless: Vec<Box<str>> = vec!["".into(), "".into()];
        assert_eq!(
            reg.room_beside(7, "", Platform::Web, &nameless),
            full,
            "nameless logins elsewhere are sessions each"
        );
        assert_eq!(
            reg.open_beside(7, s(2, "c", Platform::Web), &[]),
            Ok(vec![])
        );
    }

    /// A device that moved here from another node is still routed there until its kick lands:
    /// it counts once, and so does a device routed on two other nodes.
    #[test]
    fn a_moved_device_counts_once() {
        let mut reg = Sessions::new(2, vec![]);
        reg.open(7, s(1, "a", Platform::Ios)).unwrap();
        let elsewhere: Vec<Box<str>> = vec!["a".into(), "b".into()];
        assert_eq!(reg.room_beside(7, "b", Platform::Web, &elsewhere), Ok(()));
        let twice: Vec<Box<str>> = vec!["c".into(), "c".into()];
        let mut one = Sessions::new(2, vec![]);
        one.open(7, s(1, "a", Platform::Ios)).unwrap();
        assert_eq!(one.room_beside(7, "a", Platform::Ios, &twice), Ok(()));
        assert_eq!(
            one.room_beside(7, "d", Platform::Web, &twice),
            Err(OpenError::TooManyDevices { devices_max: 2 })
        );
    }

    #[test]
    fn sessions_leave_the_expiry_index_once_taken_replaced_or_closed() {
        let at = |conn: u64, device: &str, expires: u64| Session {
            token_expires_at_ms: expires,
            ..s(conn, device, Platform::Web)
        };
        let c = |conn: u64| ConnRef { shard: 0, conn };
        let mut reg = Sessions::new(10, vec![]);
        reg.open(7, at(1, "a", 100)).unwrap();
        reg.open(7, at(2, "b", 50)).unwrap();
        reg.open(8, at(3, "", 200)).unwrap();
        assert!(!reg.any_expired(49));
        assert!(reg.any_expired(50));
        assert_eq!(
            reg.take_expired(100, 1),
            vec![(7, c(2))],
            "oldest first, bounded"
        );
        assert_eq!(reg.take_expired(100, 10), vec![(7, c(1))]);
        assert!(!reg.any_expired(199), "taken once");
        assert_eq!(
            reg.of_user(7).len(),
            2,
            "registered until their connection closes"
        );
        // A replaced session and a closed one leave the index; a new token moves its entry.
        reg.open(8, at(4, "", 300)).unwrap();
        reg.close(8, c(3));
        reg.open(7, at(5, "a", 400)).unwrap();
        reg.set_token(8, c(4), [1; 32], 500);
        assert_eq!(reg.take_expired(450, 10), vec![(7, c(5))]);
        assert_eq!(reg.take_expired(u64::MAX, 10), vec![(8, c(4))]);
        assert_eq!(reg.session(8, c(4)).unwrap().token_expires_at_ms, 500);
        for (user, conn) in [(7, 2), (7, 5), (8, 4)] {
            reg.close(user, c(conn));
        }
        assert_eq!(reg.online_users(), 0);
        assert!(reg.expiring.is_empty());
    }
}

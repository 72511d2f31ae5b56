//! Who is online where: the registry of logged-in connections, by user.
//!
//! Shared by the backend, the sequencer and the shards behind one read-write lock that is never
//! held across an `.await`: delivery and delivery acks only read it, logins and closes write.

use std::collections::HashMap;
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
    /// When it logged in (wall clock, unix ms): an operator's kick from another node ends only
    /// sessions opened before it was issued (`cluster/link/kicks.rs`).
    pub opened_at_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    TooManyDevices { devices_max: usize },
}

/// The registry, shared. Readers do not wait for each other: a commit group's delivery looking
/// up its members never holds up a shard's delivery ack.
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
    by_user: HashMap<UserId, SmallVec<[Session; 1]>>,
    devices_max: usize,
    replace_on: Vec<Platform>,
}

impl Sessions {
    pub fn new(devices_max: usize, replace_on: Vec<Platform>) -> Self {
        Self {
            by_user: HashMap::new(),
            devices_max,
            replace_on,
        }
    }

    /// Registers a session. Returns the connections it replaces (same device id, or same platform
    /// where the policy says so); the caller kicks them.
    pub fn open(&mut self, user_id: UserId, session: Session) -> Result<Vec<ConnRef>, OpenError> {
        let existing = self.by_user.entry(user_id).or_default();
        let replace_platform = self.replace_on.contains(&session.platform);
        let replaces = |old: &Session| {
            (!session.device_id.is_empty() && old.device_id == session.device_id)
                || (replace_platform && old.platform == session.platform)
        };
        let staying = existing.iter().filter(|old| !replaces(old)).count();
        if staying >= self.devices_max {
            if existing.is_empty() {
                self.by_user.remove(&user_id);
            }
            return Err(OpenError::TooManyDevices {
                devices_max: self.devices_max,
            });
        }
        let mut replaced = Vec::new();
        existing.retain(|old| {
            if replaces(old) {
                replaced.push(old.conn);
                false
            } else {
                true
            }
        });
        existing.push(session);
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
        Some(session)
    }

    pub fn session(&self, user_id: UserId, conn: ConnRef) -> Option<&Session> {
        self.of_user(user_id).iter().find(|s| s.conn == conn)
    }

    /// The session's token changed (ChangePassword gave it a fresh one).
    pub fn set_token(&mut self, user_id: UserId, conn: ConnRef, token_hash: TokenHash) {
        if let Some(s) = self
            .by_user
            .get_mut(&user_id)
            .and_then(|list| list.iter_mut().find(|s| s.conn == conn))
        {
            s.token_hash = token_hash;
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
}

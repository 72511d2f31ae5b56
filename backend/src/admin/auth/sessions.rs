//! Dashboard sessions, in memory: a restart logs operators out, which is the safe direction.
//! The cookie carries a 256-bit random id; only its SHA-256 is kept, with the operator's name,
//! a CSRF token and the expiry. Bounded per operator: past `sessions_per_operator_max` a new
//! login ends that operator's own oldest session; and in all: past `sessions_max` the oldest
//! session of whoever holds the most ends, so that one operator's logins (a loop, a stolen
//! password) cannot log the others out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::credentials::hex;

#[derive(Debug, Clone)]
pub struct Session {
    pub operator: String,
    /// SHA-256 of the operator's password hash at login: a session ends when the password is
    /// replaced, or the operator removed and added again under the same name.
    pub credential: [u8; 32],
    pub csrf_token: String,
    pub expires: Instant,
}

pub struct Sessions {
    ttl: Duration,
    max: usize,
    per_operator_max: usize,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> std::io::Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    Ok(hex(&raw))
}

fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// What a session is kept under: the SHA-256 of its cookie id (the id itself is never kept).
pub type SessionKey = [u8; 32];

/// The key of the session whose cookie id is `id`.
pub fn key_of(id: &str) -> SessionKey {
    hash(id)
}

/// What a session keeps of an operator's password hash, to compare with the current one.
pub fn credential_of(password_hash: &str) -> [u8; 32] {
    hash(password_hash)
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize, per_operator_max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            per_operator_max: per_operator_max.max(1),
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `operator`, whose stored password hash is `password_hash`: its
    /// cookie id and the session.
    pub fn start(
        &self,
        operator: &str,
        password_hash: &str,
        now: Instant,
    ) -> std::io::Result<(String, Session)> {
        let id = random_hex()?;
        let session = Session {
            operator: operator.to_owned(),
            credential: hash(password_hash),
            csrf_token: random_hex()?,
            expires: now + self.ttl,
        };
        let mut all = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= self.max {
            all.retain(|_, s| s.expires > now);
        }
        let own = all
            .values()
            .filter(|s| s.operator == operator && s.expires > now)
            .count();
        let evict = if own >= self.per_operator_max {
            // Sessions last the same time: the soonest to expire is the oldest.
            all.iter()
                .filter(|(_, s)| s.operator == operator)
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        } else if all.len() >= self.max {
            oldest_of_the_most_held(&all)
        } else {
            None
        };
        if let Some(key) = evict {
            all.remove(&key);
        }
        all.insert(hash(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this cookie id; an expired one is removed.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        self.get_by_key(&key_of(id), now)
    }

    /// The live session kept under `key`; an expired one is removed.
    pub fn get_by_key(&self, key: &SessionKey, now: Instant) -> Option<Session> {
        let key = *key;
        let mut all = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                all.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, id: &str) {
        self.end_by_key(&key_of(id));
    }

    pub fn end_by_key(&self, key: &SessionKey) {
        self.by_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The oldest session of the operator holding the most (of those, the one expiring soonest).
fn oldest_of_the_most_held(all: &HashMap<[u8; 32], Session>) -> Option<[u8; 32]> {
    let mut held: HashMap<&str, usize> = HashMap::new();
    for s in all.values() {
        *held.entry(s.operator.as_str()).or_insert(0) += 1;
    }
    let most = held.values().copied().max()?;
    all.iter()
        .filter(|(_, s)| held.get(s.operator.as_str()) == Some(&most))
        .min_by_key(|(_, s)| s.expires)
        .map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_stay_bounded() {
        let t0 = Instant::now();
        let s = Sessions::new(Duration::from_secs(10), 2, 2);
        let (a, sa) = s.start("alice", "hash", t0).unwrap();
        assert_eq!(s.get(&a, t0).unwrap().csrf_token, sa.csrf_token);
        assert!(s.get(&a, t0 + Duration::from_secs(11)).is_none(), "expired");
        let (b, _) = s.start("bob", "hash", t0).unwrap();
        let (c, _) = s
            .start("carol", "hash", t0 + Duration::from_secs(1))
            .unwrap();
        let (d, _) = s
            .start("dave", "hash", t0 + Duration::from_secs(2))
            .unwrap();
        assert!(
            s.get(&b, t0).is_none(),
            "the one expiring soonest made room"
        );
        assert!(s.get(&c, t0).is_some() && s.get(&d, t0).is_some());
        s.end(&c);
        assert!(s.get(&c, t0).is_none());
        assert!(s.get("not-a-session", t0).is_none());
    }

    #[test]
    fn an_operator_past_their_share_loses_their_own_oldest_session() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let s = Sessions::new(Duration::from_secs(100), 10, 2);
        let (bob, _) = s.start("bob", "hash", at(0)).unwrap();
        let (a1, _) = s.start("alice", "hash", at(1)).unwrap();
        let (a2, _) = s.start("alice", "hash", at(2)).unwrap();
        let (a3, _) = s.start("alice", "hash", at(3)).unwrap();
        assert!(s.get(&a1, at(3)).is_none(), "alice's oldest made room");
        assert!(s.get(&a2, at(3)).is_some() && s.get(&a3, at(3)).is_some());
        assert!(
            s.get(&bob, at(3)).is_some(),
            "bob's session is not alice's to end"
        );
    }

    #[test]
    fn when_all_are_taken_the_one_holding_the_most_gives_one_up() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let s = Sessions::new(Duration::from_secs(100), 4, 3);
        // Bob's session expires first, but alice holds three.
        let (bob, _) = s.start("bob", "hash", at(0)).unwrap();
        let (a1, _) = s.start("alice", "hash", at(1)).unwrap();
        let (a2, _) = s.start("alice", "hash", at(2)).unwrap();
        let (a3, _) = s.start("alice", "hash", at(3)).unwrap();
        let (carol, _) = s.start("carol", "hash", at(4)).unwrap();
        assert!(s.get(&bob, at(4)).is_some(), "bob keeps his only session");
        assert!(s.get(&a1, at(4)).is_none(), "alice's oldest made room");
        for id in [&a2, &a3, &carol] {
            assert!(s.get(id, at(4)).is_some());
        }
    }
}

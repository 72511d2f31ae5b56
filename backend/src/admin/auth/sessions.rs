//! Dashboard sessions, in memory: a restart logs operators out, which is the safe direction.
//! The cookie carries a 256-bit random id; only its SHA-256 is kept, with the operator's name,
//! a CSRF token and the expiry. Bounded: past `sessions_max` the one expiring soonest ends.

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

/// What a session keeps of an operator's password hash, to compare with the current one.
pub fn credential_of(password_hash: &str) -> [u8; 32] {
    hash(password_hash)
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
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
        if all.len() >= self.max
            && let Some(soonest) = all.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            all.remove(&soonest);
        }
        all.insert(hash(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this cookie id; an expired one is removed.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let key = hash(id);
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
        self.by_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_stay_bounded() {
        let t0 = Instant::now();
        let s = Sessions::new(Duration::from_secs(10), 2);
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
}

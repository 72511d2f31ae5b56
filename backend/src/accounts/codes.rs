//! One-time e-mail codes: 6 digits, kept only as a keyed SHA-256, expiring, void after
//! `code_tries_max` wrong guesses, and rate-limited per address and per client address.
//!
//! Codes live in memory, not in the store: a code lives minutes, anyone can ask for one (so a
//! request must not cost a disk write), and after a restart the user asks again. The table is
//! bounded by `email.codes_pending_max`; full of live codes, it drops the oldest codes asked
//! from the networks holding the most (`limiter.rs` says why nobody is refused for it).
//! In a cluster the codes and the per-address counters are in Redis instead
//! (`cluster/codes.rs`: any node redeems a code any node sent); the per-client limits stay
//! per node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use ringchat_proto::v1::{EmailCodePurpose, ErrorCode};
use sha2::{Digest, Sha256};

use super::Refusal;
use super::limiter::{ClientLimiter, Limited, WindowLimiter, evict_biggest_groups, network_key};
use crate::cluster::codes::{self as shared, CodeRules, SharedCodes};
use crate::config::EmailConfig;

/// Digits in a code.
pub const CODE_DIGITS: usize = 6;

/// Which code: one pending per (purpose, case-folded address).
type CodeKey = (i32, String);

struct Pending {
    hash: [u8; 32],
    sent_at_ms: u64,
    expires_at_ms: u64,
    tries_left: u32,
    /// The network that asked for it ([`network_key`]).
    group: IpAddr,
}

/// A code just made, to mail.
pub(crate) struct Issued {
    pub code: String,
    pub expires_at_ms: u64,
}

/// Never prints the code.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

pub(crate) struct EmailCodes {
    /// Random per process: a code's stored hash is useless without it.
    key: [u8; 32],
    ttl_ms: u64,
    resend_interval_ms: u64,
    tries_max: u32,
    pending_max: usize,
    pending: Mutex<HashMap<CodeKey, Pending>>,
    /// Grouped by the network that asked.
    per_address: WindowLimiter<String, IpAddr>,
    per_client: ClientLimiter,
    /// Cluster mode: the codes and per-address counters every node sees.
    shared: OnceLock<Arc<SharedCodes>>,
    rules: CodeRules,
}

impl EmailCodes {
    pub fn new(cfg: &EmailConfig) -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        let window_ms = cfg.code_window_s.saturating_mul(1000);
        Ok(Self {
            key,
            ttl_ms: cfg.code_ttl_s.saturating_mul(1000),
            resend_interval_ms: cfg.code_resend_interval_s.saturating_mul(1000),
            tries_max: cfg.code_tries_max,
            pending_max: cfg.codes_pending_max,
            pending: Mutex::new(HashMap::new()),
            per_address: WindowLimiter::new(
                cfg.codes_per_address_max,
                window_ms,
                cfg.codes_pending_max,
            ),
            per_client: ClientLimiter::new(
                cfg.codes_per_ip_max,
                cfg.codes_per_network_max,
                window_ms,
                cfg.codes_pending_max,
            ),
            shared: OnceLock::new(),
            rules: CodeRules {
                ttl_ms: cfg.code_ttl_s.saturating_mul(1000),
                resend_interval_ms: cfg.code_resend_interval_s.saturating_mul(1000),
                tries_max: cfg.code_tries_max,
                per_address_max: cfg.codes_per_address_max,
                window_ms,
            },
        })
    }

    /// Cluster mode: codes live in Redis from now on. A second call is ignored.
    pub fn share(&self, codes: Arc<SharedCodes>) {
        if self.shared.set(codes).is_err() {
            tracing::warn!("e-mail codes shared twice; keeping the first store");
        }
    }

    pub fn tries_max(&self) -> u32 {
        self.tries_max
    }

    fn hash(&self, purpose: EmailCodePurpose, email_key: &str, code: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((purpose as i32).to_be_bytes());
        h.update((email_key.len() as u64).to_be_bytes());
        h.update(email_key.as_bytes());
        h.update(code.as_bytes());
        h.finalize().into()
    }

    /// Makes a new code for (purpose, address), replacing a pending one, within the limits:
    /// the resend interval, then codes per address and per client address in the window.
    /// Counts a request from `peer` against its hourly budget: every code request is counted,
    /// also one answered without a code (an address already taken), so that the answers cannot
    /// be used to test addresses without limit.
    pub fn charge_client(&self, peer: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.per_client.take(peer, now_ms).map_err(|l| match l {
            Limited::Client { retry_after_ms } => {
                rate_limited("too many codes requested from this address", retry_after_ms)
            }
            Limited::Network { retry_after_ms } => {
                rate_limited("too many codes requested from this network", retry_after_ms)
            }
        })
    }

    pub async fn issue(
        &self,
        purpose: EmailCodePurpose,
        email_key: &str,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<Issued, Refusal> {
        let Some(shared) = self.shared.get() else {
            return self.issue_here(purpose, email_key, peer, now_ms);
        };
        self.charge_client(peer, now_ms)?;
        let code = random_code().map_err(Refusal::unavailable)?;
        let stored = (shared.issue(purpose as i32, email_key, &code, now_ms, self.rules))
            .await
            .map_err(Refusal::unavailable)?;
        match stored {
            shared::Issued::Stored => Ok(Issued {
                code,
                expires_at_ms: now_ms.saturating_add(self.ttl_ms),
            }),
            shared::Issued::TooSoon { retry_after_ms } => Err(too_soon(retry_after_ms)),
            shared::Issued::AddressFull { retry_after_ms } => Err(address_full(retry_after_ms)),
        }
    }

    /// [`Self::issue`] on one box: the table in this node's memory.
    fn issue_here(
        &self,
        purpose: EmailCodePurpose,
        email_key: &str,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<Issued, Refusal> {
        let key: CodeKey = (purpose as i32, email_key.to_owned());
        {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = pending.get(&key) {
                let ready_at = p.sent_at_ms.saturating_add(self.resend_interval_ms);
                if ready_at > now_ms {
                    return Err(too_soon(ready_at - now_ms));
                }
            }
        }
        self.charge_client(peer, now_ms)?;
        let group = network_key(peer);
        self.per_address
            .take(email_key.to_owned(), group, now_ms)
            .map_err(address_full)?;
        let code = random_code().map_err(Refusal::unavailable)?;
        let expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        let entry = Pending {
            hash: self.hash(purpose, email_key, &code),
            sent_at_ms: now_ms,
            expires_at_ms,
            tries_left: self.tries_max,
            group,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= self.pending_max && !pending.contains_key(&key) {
            pending.retain(|_, p| p.expires_at_ms > now_ms);
            if pending.len() >= self.pending_max {
                let free = (self.pending_max / 16).max(pending.len() + 1 - self.pending_max);
                evict_biggest_groups(&mut pending, free, |p| (p.group, p.sent_at_ms));
            }
        }
        pending.insert(key, entry);
        Ok(Issued {
            code,
            expires_at_ms,
        })
    }

    /// Checks a code and uses it up: a right code works once; a wrong one costs a try, and the
    /// last try voids the code.
    pub async fn redeem(
        &self,
        purpose: EmailCodePurpose,
        email_key: &str,
        code: &str,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let Some(shared) = self.shared.get() else {
            return self.redeem_here(purpose, email_key, code, now_ms);
        };
        let redeemed = (shared.redeem(purpose as i32, email_key, code, CODE_DIGITS, now_ms))
            .await
            .map_err(Refusal::unavailable)?;
        match redeemed {
            shared::Redeemed::Used => Ok(()),
            shared::Redeemed::Unknown => Err(no_code()),
            shared::Redeemed::Expired => Err(expired()),
            shared::Redeemed::Wrong { tries_left } => Err(wrong(tries_left)),
            shared::Redeemed::Exhausted => Err(exhausted(purpose)),
        }
    }

    /// [`Self::redeem`] on one box.
    fn redeem_here(
        &self,
        purpose: EmailCodePurpose,
        email_key: &str,
        code: &str,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let key: CodeKey = (purpose as i32, email_key.to_owned());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = pending.get_mut(&key) else {
            return Err(no_code());
        };
        if p.expires_at_ms <= now_ms {
            pending.remove(&key);
            return Err(expired());
        }
        let right = code.len() == CODE_DIGITS && p.hash == self.hash(purpose, email_key, code);
        if right {
            pending.remove(&key);
            return Ok(());
        }
        p.tries_left = p.tries_left.saturating_sub(1);
        if p.tries_left == 0 {
            pending.remove(&key);
            return Err(exhausted(purpose));
        }
        Err(wrong(p.tries_left))
    }
}

// What a code request or try is told, one box or cluster alike.

fn too_soon(retry_after_ms: u64) -> Refusal {
    rate_limited(
        "a code was sent to this address moments ago",
        retry_after_ms,
    )
}

fn address_full(retry_after_ms: u64) -> Refusal {
    rate_limited("too many codes sent to this e-mail address", retry_after_ms)
}

fn no_code() -> Refusal {
    Refusal::new(
        ErrorCode::EmailCodeInvalid,
        "wrong code, or no code was requested for this address",
    )
}

fn expired() -> Refusal {
    Refusal::new(
        ErrorCode::EmailCodeExpired,
        "the code has expired; request a new one",
    )
}

fn wrong(tries_left: u32) -> Refusal {
    Refusal::new(
        ErrorCode::EmailCodeInvalid,
        format!("wrong code, {tries_left} tries left"),
    )
}

fn exhausted(purpose: EmailCodePurpose) -> Refusal {
    tracing::warn!(
        purpose = purpose.as_str_name(),
        "e-mail code voided after too many wrong tries"
    );
    Refusal::new(
        ErrorCode::EmailCodeTriesExhausted,
        "too many wrong codes; request a new one",
    )
}

fn rate_limited(message: &str, retry_after_ms: u64) -> Refusal {
    Refusal {
        code: ErrorCode::RateLimited,
        message: message.into(),
        retry_after_ms: retry_after_ms.max(1),
    }
}

/// Six uniformly random digits (rejection sampling: no modulo bias).
fn random_code() -> Result<String, getrandom::Error> {
    const SPAN: u32 = 1_000_000;
    const LIMIT: u32 = u32::MAX - u32::MAX % SPAN;
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)?;
        let n = u32::from_le_bytes(b);
        if n < LIMIT {
            return Ok(format!("{:06}", n % SPAN));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const RESET: EmailCodePurpose = EmailCodePurpose::ResetPassword;

    fn codes(f: impl FnOnce(&mut EmailConfig)) -> EmailCodes {
        let mut cfg = EmailConfig::default();
        f(&mut cfg);
        EmailCodes::new(&cfg).unwrap()
    }

    fn wrong(code: &str) -> String {
        let d = (code.as_bytes()[0] - b'0' + 1) % 10;
        format!("{d}{}", &code[1..])
    }

    #[test]
    fn a_code_is_six_digits_works_once_and_only_for_its_purpose() {
        let c = codes(|_| {});
        let issued = c.issue_here(RESET, "a@x.io", IP, 0).unwrap();
        assert_eq!(issued.code.len(), 6);
        assert!(issued.code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(issued.expires_at_ms, 600_000);
        let other = c.redeem_here(EmailCodePurpose::Register, "a@x.io", &issued.code, 1);
        assert_eq!(other.unwrap_err().code, ErrorCode::EmailCodeInvalid);
        assert!(c.redeem_here(RESET, "a@x.io", &issued.code, 1).is_ok());
        let again = c.redeem_here(RESET, "a@x.io", &issued.code, 2);
        assert_eq!(again.unwrap_err().code, ErrorCode::EmailCodeInvalid);
    }

    #[test]
    fn codes_expire() {
        let c = codes(|cfg| cfg.code_ttl_s = 10);
        let issued = c.issue_here(RESET, "a@x.io", IP, 0).unwrap();
        let late = c.redeem_here(RESET, "a@x.io", &issued.code, 10_000);
        assert_eq!(late.unwrap_err().code, ErrorCode::EmailCodeExpired);
    }

    #[test]
    fn wrong_codes_use_up_the_tries_then_void_the_code() {
        let c = codes(|cfg| cfg.code_tries_max = 3);
        let issued = c.issue_here(RESET, "a@x.io", IP, 0).unwrap();
        let bad = wrong(&issued.code);
        for _ in 0..2 {
            let e = c.redeem_here(RESET, "a@x.io", &bad, 1).unwrap_err();
            assert_eq!(e.code, ErrorCode::EmailCodeInvalid);
        }
        let e = c.redeem_here(RESET, "a@x.io", &bad, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::EmailCodeTriesExhausted);
        let e = c.redeem_here(RESET, "a@x.io", &issued.code, 1).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::EmailCodeInvalid,
            "void: even the right code"
        );
    }

    #[test]
    fn resends_and_requests_are_rate_limited_per_address_and_per_ip() {
        let c = codes(|cfg| {
            cfg.code_resend_interval_s = 60;
            cfg.codes_per_address_max = 2;
            cfg.codes_per_ip_max = 4;
        });
        assert!(c.issue_here(RESET, "a@x.io", IP, 0).is_ok());
        let soon = c.issue_here(RESET, "a@x.io", IP, 1_000).unwrap_err();
        assert_eq!(soon.code, ErrorCode::RateLimited);
        assert_eq!(soon.retry_after_ms, 59_000);
        assert!(c.issue_here(RESET, "a@x.io", IP, 60_000).is_ok());
        let per_address = c.issue_here(RESET, "a@x.io", IP, 120_000).unwrap_err();
        assert_eq!(per_address.code, ErrorCode::RateLimited);
        assert!(c.issue_here(RESET, "b@x.io", IP, 120_000).is_ok());
        let per_ip = c.issue_here(RESET, "c@x.io", IP, 120_000).unwrap_err();
        assert_eq!(per_ip.code, ErrorCode::RateLimited);
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert!(c.issue_here(RESET, "c@x.io", other_ip, 120_000).is_ok());
    }

    /// The `i`th /64 of 2001:db8:<site>::/48.
    fn subnet(site: u16, i: u16) -> IpAddr {
        IpAddr::from([0x2001, 0xdb8, site, i, 0, 0, 0, 1])
    }

    #[test]
    fn many_64s_of_one_48_cannot_lock_others_out_of_codes() {
        let c = codes(|cfg| {
            cfg.codes_per_ip_max = 2;
            cfg.codes_per_network_max = 20;
            cfg.codes_pending_max = 50;
        });
        let mut sent = 0;
        for i in 0..2_000u16 {
            let addr = format!("junk{i}@x.io");
            match c.issue_here(RESET, &addr, subnet(1, i), 0) {
                Ok(_) => sent += 1,
                Err(e) => assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}"),
            }
        }
        assert_eq!(sent, 20, "one /48's budget");
        let other = c.issue_here(RESET, "a@y.io", subnet(2, 0), 0);
        assert!(
            other.is_ok(),
            "another network still gets a code: {other:?}"
        );
    }

    #[test]
    fn a_full_pending_table_drops_the_biggest_networks_codes_not_everyones() {
        let c = codes(|cfg| {
            cfg.codes_per_ip_max = 1_000;
            cfg.codes_per_network_max = 0;
            cfg.codes_pending_max = 16;
        });
        let honest = c.issue_here(RESET, "a@y.io", subnet(2, 0), 0).unwrap();
        for i in 0..100u16 {
            let addr = format!("junk{i}@x.io");
            let r = c.issue_here(RESET, &addr, subnet(1, i), 1);
            assert!(r.is_ok(), "never refused for a full table: {r:?}");
        }
        assert!(c.pending.lock().unwrap().len() <= 16);
        assert!(
            c.redeem_here(RESET, "a@y.io", &honest.code, 2).is_ok(),
            "the flooding network's codes went, not this one"
        );
    }

    #[test]
    fn only_a_keyed_hash_is_kept() {
        let c = codes(|_| {});
        let issued = c.issue_here(RESET, "a@x.io", IP, 0).unwrap();
        let pending = c.pending.lock().unwrap();
        let p = pending.values().next().unwrap();
        let plain: [u8; 32] = Sha256::digest(issued.code.as_bytes()).into();
        assert_ne!(p.hash, plain);
    }
}

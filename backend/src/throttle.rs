//! Slows down repeated failed password logins per account and per address (token logins are
//! not counted here: a token cannot be guessed; unknown ones are limited apart,
//! `accounts/unknown_tokens.rs`), and the admin listener's logins.
//!
//! After `failures_free` failures inside the window, each further attempt must wait a delay that
//! doubles per failure (capped). Attempts during the delay are refused without checking the
//! password, so guessing costs the attacker time and costs us nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{LoginConfig, Settings};
use crate::live::LiveSettings;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// What a login names, as typed (folded): use [`ThrottleKey::user_id`],
    /// [`ThrottleKey::username`], [`ThrottleKey::email`].
    ///
    /// Never the account it resolves to: failures by e-mail address then throttling the
    /// account's username would tell a stranger whose address it is, and one key for all
    /// unknown ids would tell which ids exist. An account thus has three counters (id, name,
    /// address), each with `failures_free`; the address's throttle still counts every guess.
    Account(String),
    /// A client's address: use [`ThrottleKey::addr`], which keys an IPv6 client by its /64 (a
    /// host has a whole /64 to pick fresh addresses from).
    Addr(IpAddr),
}

impl ThrottleKey {
    pub fn addr(peer: IpAddr) -> Self {
        Self::Addr(crate::accounts::limiter::client_key(peer))
    }

    pub fn user_id(id: crate::store::UserId) -> Self {
        Self::Account(format!("id:{id}"))
    }

    pub fn username(name: &str) -> Self {
        Self::Account(format!("name:{}", crate::store::username_key(name)))
    }

    pub fn email(email: &str) -> Self {
        Self::Account(format!("email:{}", crate::store::email_key(email)))
    }

    /// Every key a login to `user` may be counted under.
    pub fn all_of(user: &crate::store::UserRecord) -> Vec<Self> {
        let mut keys = vec![Self::user_id(user.user_id), Self::username(&user.username)];
        if !user.email.is_empty() {
            keys.push(Self::email(&user.email));
        }
        keys
    }

    fn table(&self) -> usize {
        match self {
            Self::Account(_) => 0,
            Self::Addr(_) => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

pub struct Throttle {
    /// `[login]`'s throttle keys, read at each attempt: they change live.
    live: Arc<LiveSettings>,
    entries: Mutex<Tables>,
}

/// Accounts and addresses in tables of their own, each of `throttle_entries_max`: failures
/// from many addresses never push an account's entry out, so they cannot buy its attacker
/// fresh free guesses.
#[derive(Default)]
struct Tables {
    by_kind: [HashMap<ThrottleKey, Entry>; 2],
    /// When a full table may next be swept of expired entries: a sweep walks the table under
    /// the lock every login takes, so a table full of live entries is swept at most once per
    /// [`SWEEP_EVERY`] and otherwise loses one entry.
    next_sweep: [Option<Instant>; 2],
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The throttle's settings at one attempt.
struct Params {
    failures_free: u32,
    delay: Duration,
    delay_max: Duration,
    window: Duration,
    entries_max: usize,
}

impl Params {
    fn of(cfg: &LoginConfig) -> Self {
        Self {
            failures_free: cfg.failures_free,
            delay: Duration::from_millis(cfg.failure_delay_ms),
            delay_max: Duration::from_millis(cfg.failure_delay_ms_max),
            window: Duration::from_secs(cfg.failure_window_s),
            entries_max: cfg.throttle_entries_max,
        }
    }
}

impl Throttle {
    /// A throttle with fixed settings.
    pub fn new(cfg: &LoginConfig) -> Self {
        Self::live(Arc::new(LiveSettings::new(Settings {
            login: cfg.clone(),
            ..Settings::default()
        })))
    }

    /// A throttle that follows `[login]` as it changes.
    pub fn live(live: Arc<LiveSettings>) -> Self {
        Self {
            live,
            entries: Mutex::new(Tables::default()),
        }
    }

    fn params(&self) -> Params {
        Params::of(&self.live.get().login)
    }

    /// How long the caller must still wait before another attempt for `key`, if at all.
    pub fn wait_for(&self, key: &ThrottleKey, now: Instant) -> Option<Duration> {
        let params = self.params();
        let tables = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = tables.by_kind[key.table()].get(key)?;
        let ready_at = entry
            .last_failure
            .checked_add(params.delay_after(entry.failures)?)?;
        (ready_at > now).then(|| ready_at - now)
    }
}

impl Params {
    fn delay_after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.failures_free)?;
        if over == 0 {
            return None;
        }
        let factor = 1u32 << (over - 1).min(20);
        Some(
            self.delay
                .checked_mul(factor)
                .unwrap_or(self.delay_max)
                .min(self.delay_max),
        )
    }
}

impl Throttle {
    pub fn record_failure(&self, key: ThrottleKey, now: Instant) {
        let params = self.params();
        let mut tables = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let kind = key.table();
        let Tables {
            by_kind,
            next_sweep,
        } = &mut *tables;
        let entries = &mut by_kind[kind];
        if entries.len() >= params.entries_max && !entries.contains_key(&key) {
            if next_sweep[kind].is_none_or(|at| now >= at) {
                let window = params.window;
                entries.retain(|_, e| now.duration_since(e.last_failure) < window);
                next_sweep[kind] = Some(now + SWEEP_EVERY);
            }
            if entries.len() >= params.entries_max {
                // Full of live entries: forget one rather than grow.
                let victim = entries.keys().next().cloned();
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        let entry = entries.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
        });
        if now.duration_since(entry.last_failure) >= params.window {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
    }

    pub fn record_success(&self, key: &ThrottleKey) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_kind[key.table()]
        .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(&LoginConfig {
            failures_free: 2,
            failure_delay_ms: 100,
            failure_delay_ms_max: 250,
            failure_window_s: 60,
            throttle_entries_max: 2,
            ..LoginConfig::default()
        })
    }

    #[test]
    fn delays_start_after_free_failures_and_double_up_to_the_cap() {
        let t = throttle();
        let k = ThrottleKey::Account("a".into());
        let t0 = Instant::now();
        t.record_failure(k.clone(), t0);
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), None);
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), Some(Duration::from_millis(100)));
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), Some(Duration::from_millis(200)));
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), Some(Duration::from_millis(250)));
        assert_eq!(t.wait_for(&k, t0 + Duration::from_millis(250)), None);
        t.record_success(&k);
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), None);
    }

    #[test]
    fn table_stays_bounded() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..10u8 {
            t.record_failure(ThrottleKey::Addr(IpAddr::from([10, 0, 0, i])), now);
        }
        assert!(t.entries.lock().unwrap().by_kind[1].len() <= 2);
    }

    #[test]
    fn failures_from_many_addresses_never_push_an_account_out() {
        let t = throttle();
        let victim = ThrottleKey::Account("victim".into());
        let now = Instant::now();
        for _ in 0..3 {
            t.record_failure(victim.clone(), now);
        }
        assert!(t.wait_for(&victim, now).is_some());
        for i in 0..1_000u16 {
            let [a, b] = i.to_be_bytes();
            t.record_failure(ThrottleKey::addr(IpAddr::from([10, 1, a, b])), now);
        }
        assert!(t.wait_for(&victim, now).is_some(), "still throttled");
    }

    #[test]
    fn an_ipv6_client_is_throttled_by_its_64() {
        let t = throttle();
        let now = Instant::now();
        let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..3 {
            t.record_failure(ThrottleKey::addr(host(i)), now);
        }
        assert!(t.wait_for(&ThrottleKey::addr(host(999)), now).is_some());
    }

    #[test]
    fn a_live_change_applies_to_the_next_attempt() {
        let live = Arc::new(LiveSettings::new(Settings::default()));
        let t = Throttle::live(Arc::clone(&live));
        let k = ThrottleKey::Account("a".into());
        let t0 = Instant::now();
        t.record_failure(k.clone(), t0);
        assert_eq!(t.wait_for(&k, t0), None, "5 free failures by default");
        live.set(Settings {
            login: LoginConfig {
                failures_free: 0,
                failure_delay_ms: 100,
                ..LoginConfig::default()
            },
            ..Settings::default()
        });
        assert_eq!(t.wait_for(&k, t0), Some(Duration::from_millis(100)));
    }
}

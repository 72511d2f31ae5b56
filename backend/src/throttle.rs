//! Slows down repeated failed password logins per account, per address and per IPv6 network
//! (token logins are not counted here: a token cannot be guessed; unknown ones are limited
//! apart, `accounts/unknown_tokens.rs`), and the admin listener's logins.
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
    /// An IPv6 client's /48: use [`ThrottleKey::network`]. Allowed
    /// `login.failures_free_per_network`, not `failures_free`.
    Network(IpAddr),
}

impl ThrottleKey {
    pub fn addr(peer: IpAddr) -> Self {
        Self::Addr(crate::accounts::limiter::client_key(peer))
    }

    /// The network an IPv6 client is in (its /48, by the limiters' one rule,
    /// `limiter::ipv6_network_key`): one holder of a /48 has 65,536 /64s, each with
    /// `failures_free` of its own, enough together to keep the password hasher busy for everyone.
    ///
    /// `None` for an IPv4 client, counted per address only. An IPv4 address costs the same
    /// whether or not it shares a /24 with the attacker's others (a botnet's are scattered),
    /// so a /24 key would stop little: one address gets some 26 hashed guesses a window with
    /// the defaults, a whole /24 some 7 hashes a second against a hasher's 60 or more. It would
    /// lump together every subscriber of a carrier's NAT pool or a campus's egress /24, where
    /// one guesser would then delay the password logins of thousands.
    pub fn network(peer: IpAddr) -> Option<Self> {
        crate::accounts::limiter::ipv6_network_key(peer).map(Self::Network)
    }

    /// The keys a password login from `peer` is counted under beside the account's: the
    /// address's, and the network's when it has one.
    pub fn client(peer: IpAddr) -> Vec<Self> {
        std::iter::once(Self::addr(peer))
            .chain(Self::network(peer))
            .collect()
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
            Self::Network(_) => 2,
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

/// Accounts, addresses and networks in tables of their own, each of `throttle_entries_max`:
/// failures from many addresses or networks never push an account's entry out, so they cannot
/// buy its attacker fresh free guesses, and many networks never push an address out.
#[derive(Default)]
struct Tables {
    by_kind: [HashMap<ThrottleKey, Entry>; 3],
    /// When a full table may next be swept of expired entries: a sweep walks the table under
    /// the lock every login takes, so a table full of live entries is swept at most once per
    /// [`SWEEP_EVERY`] and otherwise loses one entry.
    next_sweep: [Option<Instant>; 3],
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The throttle's settings at one attempt.
struct Params {
    failures_free: u32,
    /// 0: network keys are neither counted nor checked.
    failures_free_per_network: u32,
    delay: Duration,
    delay_max: Duration,
    window: Duration,
    entries_max: usize,
}

impl Params {
    fn of(cfg: &LoginConfig) -> Self {
        Self {
            failures_free: cfg.failures_free,
            failures_free_per_network: cfg.failures_free_per_network,
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
        let free = params.free_for(key)?;
        let tables = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = tables.by_kind[key.table()].get(key)?;
        let ready_at = entry
            .last_failure
            .checked_add(params.delay_after(free, entry.failures)?)?;
        (ready_at > now).then(|| ready_at - now)
    }
}

impl Params {
    /// The failures `key` is allowed before delays; `None`: `key` is not throttled.
    fn free_for(&self, key: &ThrottleKey) -> Option<u32> {
        match key {
            ThrottleKey::Network(_) if self.failures_free_per_network == 0 => None,
            ThrottleKey::Network(_) => Some(self.failures_free_per_network),
            ThrottleKey::Account(_) | ThrottleKey::Addr(_) => Some(self.failures_free),
        }
    }

    fn delay_after(&self, failures_free: u32, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(failures_free)?;
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
        if params.free_for(&key).is_none() {
            return;
        }
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

    /// Five free failures per client, ten per network (0 networks not throttled).
    fn with_networks(failures_free_per_network: u32) -> Throttle {
        Throttle::new(&LoginConfig {
            failures_free: 5,
            failures_free_per_network,
            failure_delay_ms: 100,
            failure_delay_ms_max: 250,
            failure_window_s: 60,
            throttle_entries_max: 4,
            ..LoginConfig::default()
        })
    }

    /// A failed password login from `peer`, as `logins.rs` records it.
    fn fail_from(t: &Throttle, peer: IpAddr, now: Instant) {
        for key in ThrottleKey::client(peer) {
            t.record_failure(key, now);
        }
    }

    /// Whether a password login from `peer` would be refused before hashing.
    fn refused(t: &Throttle, peer: IpAddr, now: Instant) -> bool {
        ThrottleKey::client(peer)
            .iter()
            .any(|k| t.wait_for(k, now).is_some())
    }

    /// Host 1 of /64 number `subnet` of `2001:db8:site::/48`.
    fn v6(site: u16, subnet: u16) -> IpAddr {
        IpAddr::from([0x2001, 0xdb8, site, subnet, 0, 0, 0, 1])
    }

    #[test]
    fn failures_from_many_64s_of_one_48_throttle_the_48_alone() {
        let t = with_networks(10);
        let now = Instant::now();
        // Each /64 stays within its own five; together they use the /48's ten.
        for subnet in 0..10 {
            fail_from(&t, v6(1, subnet), now);
            fail_from(&t, v6(1, subnet), now);
            if subnet < 4 {
                assert!(!refused(&t, v6(1, 999), now), "after {subnet} /64s");
            }
        }
        let fresh = v6(1, 999);
        assert_eq!(t.wait_for(&ThrottleKey::addr(fresh), now), None);
        assert_eq!(
            t.wait_for(&ThrottleKey::network(fresh).unwrap(), now),
            Some(Duration::from_millis(250)),
            "20 failures, 10 over: the cap"
        );
        assert!(refused(&t, fresh, now), "a fresh /64 of the /48 waits");
        assert!(!refused(&t, v6(2, 0), now), "another /48 is untouched");
        assert!(!refused(&t, v6(2, 999), now));
        // After the delay, the /48 may try again.
        assert!(!refused(&t, fresh, now + Duration::from_millis(250)));
    }

    #[test]
    fn ipv4_clients_are_counted_per_address_only() {
        let t = with_networks(10);
        let now = Instant::now();
        let v4 = |last: u8| IpAddr::from([198, 51, 100, last]);
        let mapped =
            |last: u8| IpAddr::V6(std::net::Ipv4Addr::from([198, 51, 100, last]).to_ipv6_mapped());
        assert_eq!(ThrottleKey::network(v4(1)), None);
        assert_eq!(ThrottleKey::network(mapped(1)), None);
        assert_eq!(
            ThrottleKey::client(mapped(1)),
            vec![ThrottleKey::addr(v4(1))]
        );
        // 250 addresses of one /24 with four failures each: none throttled.
        for last in 0..250 {
            for _ in 0..4 {
                fail_from(&t, v4(last), now);
            }
        }
        assert!(!refused(&t, v4(250), now));
        assert!(!refused(&t, v4(1), now));
        assert!(t.entries.lock().unwrap().by_kind[2].is_empty());
    }

    #[test]
    fn networks_not_throttled_at_0() {
        let t = with_networks(0);
        let now = Instant::now();
        for subnet in 0..100 {
            fail_from(&t, v6(1, subnet), now);
        }
        assert!(!refused(&t, v6(1, 999), now));
        assert!(
            t.entries.lock().unwrap().by_kind[2].is_empty(),
            "nothing kept"
        );
    }

    #[test]
    fn failures_from_many_networks_never_push_an_account_or_address_out() {
        let t = with_networks(10);
        let victim = ThrottleKey::Account("victim".into());
        let guesser = v6(7, 7);
        let now = Instant::now();
        for _ in 0..6 {
            t.record_failure(victim.clone(), now);
            t.record_failure(ThrottleKey::addr(guesser), now);
        }
        for site in 100..1_100 {
            let network = ThrottleKey::network(v6(site, 0)).unwrap();
            t.record_failure(network, now);
        }
        assert!(
            t.wait_for(&victim, now).is_some(),
            "the account still throttled"
        );
        assert!(
            t.wait_for(&ThrottleKey::addr(guesser), now).is_some(),
            "the address still throttled"
        );
        let tables = t.entries.lock().unwrap();
        assert!(
            tables.by_kind[2].len() <= 4,
            "the networks' table stays bounded"
        );
        assert_eq!(tables.by_kind[0].len(), 1);
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

    #[test]
    fn a_live_change_of_the_networks_allowance_applies_to_the_next_attempt() {
        let live = Arc::new(LiveSettings::new(Settings::default()));
        let t = Throttle::live(Arc::clone(&live));
        let t0 = Instant::now();
        for subnet in 0..20 {
            fail_from(&t, v6(1, subnet), t0);
        }
        assert!(
            !refused(&t, v6(1, 999), t0),
            "100 free per network by default"
        );
        live.set(Settings {
            login: LoginConfig {
                failures_free_per_network: 10,
                failure_delay_ms: 100,
                ..LoginConfig::default()
            },
            ..Settings::default()
        });
        assert!(refused(&t, v6(1, 999), t0));
    }
}

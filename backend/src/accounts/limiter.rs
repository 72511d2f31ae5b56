//! "At most N per window per key", for requests a stranger can make (e-mail codes per address
//! and per client address, registrations per client address). Fixed windows per key, in a
//! bounded table.
//!
//! A client address is counted twice: by itself (an IPv4 address, an IPv6 /64) and by its
//! network (an IPv4 /24, an IPv6 /48: one site's allocation), each with its own limit. A /64 is
//! cheap (a /48 customer holds 65,536 of them): counted only by /64, one stranger could make
//! new keys without end. The network's limit caps the keys one network adds per window.
//!
//! When a table is full of live keys nobody is refused for it (that was a lock-out anyone with
//! a /48 could cause): each entry carries a group (the network that made it), and the groups
//! holding the most entries lose their oldest ones. Losing an entry forgives its count, so a
//! full table errs toward the biggest consumers getting a fresh window, never toward everybody
//! being refused. One network adds at most its network limit of keys per window, so only many
//! networks together fill a table, and then the biggest of them give way first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// Prefix lengths of a client (its own budget) and of its network (a shared, larger one).
const CLIENT_PREFIX_V4: u32 = 32;
const CLIENT_PREFIX_V6: u32 = 64;
const NETWORK_PREFIX_V4: u32 = 24;
const NETWORK_PREFIX_V6: u32 = 48;
/// The group a network's entry belongs to in the networks' table.
const REGION_PREFIX_V4: u32 = 16;
const REGION_PREFIX_V6: u32 = 32;

/// Share of a full table freed at once (1/16): the scan that picks the entries to drop walks
/// the table, so it runs once per that many new keys, not for each.
const EVICT_SHARE: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window<G> {
    started_ms: u64,
    count: u32,
    group: G,
}

/// One table, without a lock: [`WindowLimiter`] and [`ClientLimiter`] hold it behind theirs.
struct WindowTable<K, G> {
    max: u32,
    window_ms: u64,
    entries_max: usize,
    entries: HashMap<K, Window<G>>,
}

impl<K: Hash + Eq + Clone, G: Hash + Eq + Copy> WindowTable<K, G> {
    fn new(max: u32, window_ms: u64, entries_max: usize) -> Self {
        assert!(max >= 1 && window_ms >= 1 && entries_max >= 1);
        Self {
            max,
            window_ms,
            entries_max,
            entries: HashMap::new(),
        }
    }

    /// `Ok` if `key` may be counted once more at `now_ms` (nothing is counted), else the ms to
    /// wait.
    fn check(&self, key: &K, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(w)
                if now_ms.saturating_sub(w.started_ms) < self.window_ms && w.count >= self.max =>
            {
                Err((w.started_ms + self.window_ms)
                    .saturating_sub(now_ms)
                    .max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one use of `key` (made by `group`), which `check` allowed.
    fn charge(&mut self, key: K, group: G, now_ms: u64) {
        if self.entries.len() >= self.entries_max && !self.entries.contains_key(&key) {
            self.make_room(now_ms);
        }
        let window_ms = self.window_ms;
        let w = self.entries.entry(key).or_insert(Window {
            started_ms: now_ms,
            count: 0,
            group,
        });
        if now_ms.saturating_sub(w.started_ms) >= window_ms {
            *w = Window {
                started_ms: now_ms,
                count: 0,
                group,
            };
        }
        w.count = w.count.saturating_add(1);
    }

    fn make_room(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        self.entries
            .retain(|_, w| now_ms.saturating_sub(w.started_ms) < window_ms);
        if self.entries.len() >= self.entries_max {
            let free =
                (self.entries_max / EVICT_SHARE).max(self.entries.len() + 1 - self.entries_max);
            evict_biggest_groups(&mut self.entries, free, |w| (w.group, w.started_ms));
        }
    }
}

/// Drops `count` entries of `map`: the oldest of the group holding the most entries first,
/// then of the next biggest, and so on. `group_and_age` gives an entry's group and its start.
pub(crate) fn evict_biggest_groups<K: Hash + Eq + Clone, V, G: Hash + Eq + Copy>(
    map: &mut HashMap<K, V>,
    count: usize,
    group_and_age: impl Fn(&V) -> (G, u64),
) {
    // Each group's size and oldest start; the biggest first, the older first among equals.
    let mut sizes: HashMap<G, (usize, u64)> = HashMap::new();
    for v in map.values() {
        let (g, age) = group_and_age(v);
        let s = sizes.entry(g).or_insert((0, age));
        *s = (s.0 + 1, s.1.min(age));
    }
    let mut by_size: Vec<(usize, u64, G)> =
        sizes.into_iter().map(|(g, (n, a))| (n, a, g)).collect();
    by_size.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // Only the biggest groups that together hold `count` entries are looked at.
    let mut rank: HashMap<G, usize> = HashMap::new();
    let mut covered = 0;
    for (i, (n, _, g)) in by_size.into_iter().enumerate() {
        if covered >= count {
            break;
        }
        rank.insert(g, i);
        covered += n;
    }
    let mut victims: Vec<(usize, u64, K)> = map
        .iter()
        .filter_map(|(k, v)| {
            let (g, age) = group_and_age(v);
            rank.get(&g).map(|&r| (r, age, k.clone()))
        })
        .collect();
    victims.sort_unstable_by_key(|(rank, age, _)| (*rank, *age));
    for (_, _, k) in victims.into_iter().take(count) {
        map.remove(&k);
    }
}

/// One table of windows per key; a full table drops the oldest entries of the biggest groups.
pub(crate) struct WindowLimiter<K, G> {
    table: Mutex<WindowTable<K, G>>,
}

impl<K: Hash + Eq + Clone, G: Hash + Eq + Copy> WindowLimiter<K, G> {
    pub fn new(max: u32, window_ms: u64, entries_max: usize) -> Self {
        Self {
            table: Mutex::new(WindowTable::new(max, window_ms, entries_max)),
        }
    }

    /// Counts one use of `key` by `group` at `now_ms`, or says how long to wait (in ms) when
    /// the key's window is used up.
    pub fn take(&self, key: K, group: G, now_ms: u64) -> Result<(), u64> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.check(&key, now_ms)?;
        table.charge(key, group, now_ms);
        Ok(())
    }
}

/// Which of a client's two budgets ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    /// The client's own (an IPv4 address, an IPv6 /64).
    Client { retry_after_ms: u64 },
    /// Its network's (an IPv4 /24, an IPv6 /48).
    Network { retry_after_ms: u64 },
}

impl Limited {
    pub fn retry_after_ms(self) -> u64 {
        match self {
            Self::Client { retry_after_ms } | Self::Network { retry_after_ms } => retry_after_ms,
        }
    }
}

/// Which clients' networks a [`ClientLimiter`] counts beside the clients themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworksOf {
    /// Every client's ([`network_key`]: an IPv4 /24, an IPv6 /48).
    All,
    /// IPv6 clients' only ([`ipv6_network_key`], the password throttle's rule): an IPv4 client
    /// is counted by its address alone.
    Ipv6,
}

/// Requests per client address and per its network in one window, both bounded.
pub(crate) struct ClientLimiter {
    tables: Mutex<ClientTables>,
    networks_of: NetworksOf,
}

struct ClientTables {
    /// Keyed by [`client_key`], grouped by [`network_key`].
    clients: WindowTable<IpAddr, IpAddr>,
    /// Keyed by [`network_key`], grouped by a wider prefix; `None`: networks are not limited.
    networks: Option<WindowTable<IpAddr, IpAddr>>,
}

impl ClientLimiter {
    /// `per_client_max` and `per_network_max` (0: networks not limited) uses per `window_ms`;
    /// each table keeps at most `entries_max` keys. Every client's network is counted.
    pub fn new(
        per_client_max: u32,
        per_network_max: u32,
        window_ms: u64,
        entries_max: usize,
    ) -> Self {
        Self {
            tables: Mutex::new(ClientTables {
                clients: WindowTable::new(per_client_max, window_ms, entries_max),
                networks: (per_network_max > 0)
                    .then(|| WindowTable::new(per_network_max, window_ms, entries_max)),
            }),
            networks_of: NetworksOf::All,
        }
    }

    /// The same, counting the networks `networks_of` names.
    pub fn counting_networks_of(self, networks_of: NetworksOf) -> Self {
        Self {
            networks_of,
            ..self
        }
    }

    /// Counts one request from `peer`, against its own budget and its network's; both are
    /// checked before either is counted, so a refused request costs nothing.
    pub fn take(&self, peer: IpAddr, now_ms: u64) -> Result<(), Limited> {
        let (client, network) = (client_key(peer), network_key(peer));
        let counted = match self.networks_of {
            NetworksOf::All => Some(network),
            NetworksOf::Ipv6 => ipv6_network_key(peer),
        };
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let ClientTables { clients, networks } = &mut *tables;
        clients
            .check(&client, now_ms)
            .map_err(|retry_after_ms| Limited::Client { retry_after_ms })?;
        if let (Some(networks), Some(counted)) = (networks, counted) {
            networks
                .check(&counted, now_ms)
                .map_err(|retry_after_ms| Limited::Network { retry_after_ms })?;
            networks.charge(counted, region_key(peer), now_ms);
        }
        // Grouped by its network either way: a full table gives way by the biggest networks.
        clients.charge(client, network, now_ms);
        Ok(())
    }
}

/// `ip` cut to its first `v4` or `v6` bits; an IPv4-mapped IPv6 address as the IPv4 one.
fn prefix(ip: IpAddr, v4: u32, v6: u32) -> IpAddr {
    let v4_prefix = |a: Ipv4Addr| {
        IpAddr::V4(Ipv4Addr::from_bits(
            a.to_bits() & u32::MAX.checked_shl(32 - v4).unwrap_or(0),
        ))
    };
    match ip {
        IpAddr::V4(a) => v4_prefix(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4_prefix(m),
            None => IpAddr::V6(Ipv6Addr::from_bits(
                a.to_bits() & u128::MAX.checked_shl(128 - v6).unwrap_or(0),
            )),
        },
    }
}

/// The key a client address is counted under: an IPv4 address as it is, an IPv6 address by its
/// /64 (one subscriber's usual share: counted apart, each of its addresses would be a fresh
/// budget), an IPv4-mapped IPv6 address as the IPv4 one. The one rule for every per-client
/// count (the gateway's connection limits use it too, as `ringchat_backend::client_key`).
pub fn client_key(ip: IpAddr) -> IpAddr {
    prefix(ip, CLIENT_PREFIX_V4, CLIENT_PREFIX_V6)
}

/// The key a client's share of a whole shard's bound is counted under (the gateway's TLS
/// handshake gate, `ringchat_backend::share_key`): an IPv4 address as it is, an IPv6 address by
/// its /48 (one site's allocation, as [`network_key`]), an IPv4-mapped IPv6 address as the IPv4
/// one. Not [`client_key`]'s /64: one holder of a /48 has 65,536 /64s, and four of them would
/// take every quarter share.
pub fn share_key(ip: IpAddr) -> IpAddr {
    prefix(ip, CLIENT_PREFIX_V4, NETWORK_PREFIX_V6)
}

/// The network a client address belongs to: its IPv4 /24, its IPv6 /48 (one site's
/// allocation, RFC 6177).
pub(crate) fn network_key(ip: IpAddr) -> IpAddr {
    prefix(ip, NETWORK_PREFIX_V4, NETWORK_PREFIX_V6)
}

/// The network an IPv6 client is counted in beside its /64 ([`network_key`]'s /48: one holder
/// of a /48 has 65,536 /64s, each a fresh per-client count); `None` for an IPv4 client, counted
/// per address only. A /24 would lump together every subscriber of a carrier's NAT pool or a
/// campus's egress /24, where a few hosts would shut out thousands, and it stops little: a
/// botnet's IPv4 addresses are scattered. The password throttle's rule
/// (`ThrottleKey::network`) and the unknown tokens' (`unknown_tokens.rs`).
pub(crate) fn ipv6_network_key(ip: IpAddr) -> Option<IpAddr> {
    Some(network_key(ip)).filter(IpAddr::is_ipv6)
}

/// What a network is grouped by when the networks' table is full: its IPv4 /16, IPv6 /32.
fn region_key(ip: IpAddr) -> IpAddr {
    prefix(ip, REGION_PREFIX_V4, REGION_PREFIX_V6)
}

#[cfg(test)]
mod tests;

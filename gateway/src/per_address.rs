//! Connections open at once per client, for the listeners that bound them across threads (the
//! file connections of every shard, `files.rs`; the status node's HTTP listener,
//! `status_http.rs`): per client as every per-client count is (`ringchat_backend::client_key`:
//! an IPv4 address, an IPv6 /64, which its host has every address of) and per IPv6 client
//! network (its /48, `ringchat_backend::share_key`: a /48 holds 65,536 /64s, each a fresh
//! per-client limit). IPv4 clients are counted per address only. A place is given back when its
//! [`AddressPlace`] drops; the maps hold an entry only while it has a place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The counts and their bounds.
pub struct PerAddress {
    per_ip_max: usize,
    per_network_max: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    clients: HashMap<IpAddr, usize>,
    networks: HashMap<IpAddr, usize>,
}

/// A place among the open connections of a client and of its IPv6 network, given back when
/// dropped.
pub struct AddressPlace {
    counts: Arc<PerAddress>,
    from: IpAddr,
    /// The IPv6 client's /48; `None` for an IPv4 client (its network is its address).
    network: Option<IpAddr>,
}

impl PerAddress {
    /// At most `per_ip_max` connections per client key, `per_network_max` per IPv6 /48.
    pub fn new(per_ip_max: usize, per_network_max: usize) -> Arc<Self> {
        Arc::new(Self {
            per_ip_max,
            per_network_max,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // A count map has no invariant a panic could break half-way.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `peer`, or `None` when its client or its IPv6 network
    /// holds its most already. A refusal takes nothing.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Option<AddressPlace> {
        let from = ringchat_backend::client_key(peer);
        let network = match ringchat_backend::share_key(peer) {
            net @ IpAddr::V6(_) => Some(net),
            IpAddr::V4(_) => None,
        };
        let mut open = self.open();
        // Looked up before an entry is made: a refused client leaves none behind.
        let full = |counts: &HashMap<IpAddr, usize>, key: &IpAddr, max: usize| {
            counts.get(key).is_some_and(|n| *n >= max)
        };
        if full(&open.clients, &from, self.per_ip_max)
            || network.is_some_and(|net| full(&open.networks, &net, self.per_network_max))
        {
            return None;
        }
        *open.clients.entry(from).or_default() += 1;
        if let Some(net) = network {
            *open.networks.entry(net).or_default() += 1;
        }
        Some(AddressPlace {
            counts: Arc::clone(self),
            from,
            network,
        })
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        let open = self.open();
        open.clients.is_empty() && open.networks.is_empty()
    }
}

/// Gives back one place of `key`, dropping its entry at zero.
fn give_back(counts: &mut HashMap<IpAddr, usize>, key: &IpAddr) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.counts.open();
        give_back(&mut open.clients, &self.from);
        if let Some(net) = &self.network {
            give_back(&mut open.networks, net);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv6 host has its whole /64 to connect from: its connections are counted together,
    /// as the backend counts its registrations and code requests.
    #[test]
    fn connections_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let counts = PerAddress::new(1, 256);
        let held = counts.take(ip("2001:db8:1:2::1")).expect("the first");
        assert!(
            counts.take(ip("2001:db8:1:2:ffff::9")).is_none(),
            "another address of the same /64"
        );
        let other = counts.take(ip("2001:db8:1:3::1")).expect("another /64");
        let v4 = counts.take(ip("192.0.2.7")).expect("an IPv4 client");
        assert!(
            counts.take(ip("::ffff:192.0.2.7")).is_none(),
            "the same IPv4 client, mapped"
        );
        drop(held);
        let again = counts.take(ip("2001:db8:1:2:ffff::9")).expect("freed");
        drop((again, other, v4));
        assert!(counts.is_empty());
    }

    /// An IPv6 client's /48 is counted as a whole too: its other /64s are refused once it holds
    /// `per_network_max`, while another /48 and IPv4 clients get in.
    #[test]
    fn connections_of_an_ipv6_48_are_counted_together() {
        let counts = PerAddress::new(1, 2);
        let first = counts.take(ip("2001:db8:1:1::1")).expect("the first /64");
        let second = counts.take(ip("2001:db8:1:2::1")).expect("the second /64");
        assert!(
            counts.take(ip("2001:db8:1:3::1")).is_none(),
            "a third /64 of the same /48"
        );
        let other = counts.take(ip("2001:db8:2:1::1")).expect("another /48");
        let v4: Vec<_> = ["192.0.2.7", "192.0.2.8", "192.0.2.9"]
            .into_iter()
            .map(|a| counts.take(ip(a)).expect("IPv4: per address only"))
            .collect();
        drop(first);
        let again = counts.take(ip("2001:db8:1:3::1")).expect("given back");
        drop((second, other, v4, again));
        assert!(counts.is_empty());
    }
}

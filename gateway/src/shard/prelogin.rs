//! Connections not logged in yet, counted per client on one shard
//! (`gateway.prelogin_conns_per_ip_max`). Without a bound one stranger could fill the shard's
//! `conns_per_shard_max` with sockets that never log in, each renewed every handshake timeout,
//! and push real users out (`SERVER_FULL`).
//!
//! A place is taken at accept (for a trusted balancer's connection: after its PROXY header, on
//! the header's address) and given back when its [`PreloginPlace`] drops. The connection's
//! session holds it in its state until the login succeeds (`session.rs`) or the connection
//! becomes a file connection (counted by `[gateway.files]` then), and drops it with itself
//! however the connection ends (a close, a kick, the handshake timeout, the shard stopping):
//! once, whatever the path. Shard-local, as everything in a shard: a client spread over N
//! shards gets up to N times the limit. Clients are keyed as every per-client count is
//! (`ringchat_backend::client_key`: an IPv4 address, an IPv6 /64), and an IPv6 client's
//! network is counted too (`gateway.prelogin_conns_per_network_max`, its /48:
//! `ringchat_backend::share_key`): a /48 holds 65,536 /64s, each a fresh per-client limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use super::Shard;

/// Pre-login connections on one shard per client key, and per IPv6 network; an entry only
/// while it has one.
#[derive(Default)]
pub(super) struct PreloginCounts {
    clients: RefCell<HashMap<IpAddr, usize>>,
    networks: RefCell<HashMap<IpAddr, usize>>,
}

impl PreloginCounts {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.clients.borrow().is_empty() && self.networks.borrow().is_empty()
    }
}

/// One connection's place among its client's pre-login connections on its shard. Boxed: the
/// session keeps it in its state (`State::AwaitHello`), which then stays the size the logged-in
/// state needs, so an idle logged-in connection pays nothing for it.
pub(crate) struct PreloginPlace(Box<Held>);

struct Held {
    shard: Rc<Shard>,
    from: IpAddr,
    /// The IPv6 client's /48; `None` for an IPv4 client (its network is its address).
    network: Option<IpAddr>,
}

impl PreloginPlace {
    /// A place for a connection from `peer`, or `None` when its client already holds
    /// `gateway.prelogin_conns_per_ip_max` on this shard, or its IPv6 network
    /// `gateway.prelogin_conns_per_network_max` (live keys).
    pub fn take(shard: &Rc<Shard>, peer: IpAddr) -> Option<Self> {
        let from = ringchat_backend::client_key(peer);
        let network = match ringchat_backend::share_key(peer) {
            net @ IpAddr::V6(_) => Some(net),
            IpAddr::V4(_) => None,
        };
        let live = shard.live.get();
        let mut clients = shard.prelogin.clients.borrow_mut();
        let mut networks = shard.prelogin.networks.borrow_mut();
        // Looked up before an entry is made: a refused client leaves none behind.
        let full = |counts: &HashMap<IpAddr, usize>, key: &IpAddr, max: usize| {
            counts.get(key).is_some_and(|n| *n >= max)
        };
        if full(&clients, &from, live.prelogin_conns_per_ip_max)
            || network.is_some_and(|net| full(&networks, &net, live.prelogin_conns_per_network_max))
        {
            return None;
        }
        *clients.entry(from).or_default() += 1;
        if let Some(net) = network {
            *networks.entry(net).or_default() += 1;
        }
        Some(Self(Box::new(Held {
            shard: Rc::clone(shard),
            from,
            network,
        })))
    }
}

/// Gives back one place of `key`, dropping its entry at zero.
fn give_back(counts: &RefCell<HashMap<IpAddr, usize>>, key: &IpAddr) {
    let mut counts = counts.borrow_mut();
    let n = counts
        .get_mut(key)
        .expect("a pre-login place is counted until it is given back");
    *n -= 1;
    if *n == 0 {
        counts.remove(key);
    }
}

impl Drop for PreloginPlace {
    fn drop(&mut self) {
        let counts = &self.0.shard.prelogin;
        give_back(&counts.clients, &self.0.from);
        if let Some(net) = &self.0.network {
            give_back(&counts.networks, net);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::shard::live::LiveLimits;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv6 host has its whole /64 to connect from, and an IPv4 client may come as an
    /// IPv4-mapped address on a dual-stack listener: counted as `client_key` says, as every
    /// per-client count is. A place dropped is given back; the map keeps no empty entry.
    #[test]
    fn places_are_counted_per_client_key_and_given_back_when_dropped() {
        let (shard, _requests) = crate::shard::tests::shard_with(GatewayConfig::default());
        shard.live.set(LiveLimits {
            prelogin_conns_per_ip_max: 2,
            ..shard.live.get()
        });
        let first = PreloginPlace::take(&shard, ip("2001:db8:1:2::1")).expect("the first");
        let _second = PreloginPlace::take(&shard, ip("2001:db8:1:2:ffff::9")).expect("the second");
        assert!(
            PreloginPlace::take(&shard, ip("2001:db8:1:2::7")).is_none(),
            "a third from the same /64"
        );
        let _other = PreloginPlace::take(&shard, ip("2001:db8:1:3::1")).expect("another /64");
        let _v4 = PreloginPlace::take(&shard, ip("192.0.2.7")).expect("an IPv4 client");
        let _mapped = PreloginPlace::take(&shard, ip("::ffff:192.0.2.7")).expect("its second");
        assert!(
            PreloginPlace::take(&shard, ip("192.0.2.7")).is_none(),
            "the IPv4 client, mapped or not"
        );
        drop(first);
        let _again = PreloginPlace::take(&shard, ip("2001:db8:1:2::1")).expect("given back");
        drop((_second, _other, _v4, _mapped, _again));
        assert!(shard.prelogin.is_empty(), "no entry left");
    }

    /// An IPv6 client's /48 is counted as a whole too: its other /64s are refused once it
    /// holds `prelogin_conns_per_network_max`, while another /48 and IPv4 clients get in.
    #[test]
    fn an_ipv6_network_is_counted_as_a_whole() {
        let (shard, _requests) = crate::shard::tests::shard_with(GatewayConfig::default());
        shard.live.set(LiveLimits {
            prelogin_conns_per_ip_max: 2,
            prelogin_conns_per_network_max: 3,
            ..shard.live.get()
        });
        let held: Vec<_> = ["2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:2::1"]
            .into_iter()
            .map(|a| PreloginPlace::take(&shard, ip(a)).expect("within both"))
            .collect();
        assert!(
            PreloginPlace::take(&shard, ip("2001:db8:1:3::1")).is_none(),
            "a fourth /64 of the same /48"
        );
        assert!(
            PreloginPlace::take(&shard, ip("2001:db8:1:ffff::1")).is_none(),
            "the /48's last /64"
        );
        let other = PreloginPlace::take(&shard, ip("2001:db8:2:1::1")).expect("another /48");
        let v4: Vec<_> = ["192.0.2.7", "192.0.2.8", "192.0.2.9", "192.0.2.10"]
            .into_iter()
            .map(|a| PreloginPlace::take(&shard, ip(a)).expect("IPv4: per address only"))
            .collect();
        drop(held);
        let again = PreloginPlace::take(&shard, ip("2001:db8:1:3::1")).expect("given back");
        drop((other, v4, again));
        assert!(shard.prelogin.is_empty(), "no entry left");
    }

    /// The limit is a live key: a lowered one applies to the next connection; those open stay.
    #[test]
    fn a_lowered_limit_applies_to_the_next_connection() {
        let (shard, _requests) = crate::shard::tests::shard_with(GatewayConfig::default());
        let held: Vec<_> = (0..3)
            .map(|_| PreloginPlace::take(&shard, ip("192.0.2.7")).expect("within the default"))
            .collect();
        shard.live.set(LiveLimits {
            prelogin_conns_per_ip_max: 2,
            ..shard.live.get()
        });
        assert!(PreloginPlace::take(&shard, ip("192.0.2.7")).is_none());
        drop(held);
        assert!(PreloginPlace::take(&shard, ip("192.0.2.7")).is_some());
    }
}

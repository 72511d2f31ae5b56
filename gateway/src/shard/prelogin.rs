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
//! (`ringchat_backend::client_key`: an IPv4 address, an IPv6 /64).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use super::Shard;

/// Pre-login connections per client key on one shard; an entry only while it has one.
#[derive(Default)]
pub(super) struct PreloginCounts(RefCell<HashMap<IpAddr, usize>>);

/// One connection's place among its client's pre-login connections on its shard. Boxed: the
/// session keeps it in its state (`State::AwaitHello`), which then stays the size the logged-in
/// state needs, so an idle logged-in connection pays nothing for it.
pub(crate) struct PreloginPlace(Box<Held>);

struct Held {
    shard: Rc<Shard>,
    from: IpAddr,
}

impl PreloginPlace {
    /// A place for a connection from `peer`, or `None` when its client already holds
    /// `gateway.prelogin_conns_per_ip_max` (a live key) on this shard.
    pub fn take(shard: &Rc<Shard>, peer: IpAddr) -> Option<Self> {
        let from = ringchat_backend::client_key(peer);
        let max = shard.live.get().prelogin_conns_per_ip_max;
        let mut counts = shard.prelogin.0.borrow_mut();
        // Looked up before an entry is made: a refused client leaves none behind.
        if counts.get(&from).is_some_and(|n| *n >= max) {
            return None;
        }
        *counts.entry(from).or_default() += 1;
        Some(Self(Box::new(Held {
            shard: Rc::clone(shard),
            from,
        })))
    }
}

impl Drop for PreloginPlace {
    fn drop(&mut self) {
        let mut counts = self.0.shard.prelogin.0.borrow_mut();
        let n = counts
            .get_mut(&self.0.from)
            .expect("a pre-login place is counted until it is given back");
        *n -= 1;
        if *n == 0 {
            counts.remove(&self.0.from);
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
        assert!(shard.prelogin.0.borrow().is_empty(), "no entry left");
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

//! Login slots: the pre-login requests (Login, Register, account requests) one shard has
//! waiting for the backend at once, bounded per shard and shared out per client.

use std::net::IpAddr;
use std::rc::Rc;

use super::Shard;

/// The part of a shard-wide bound one client (`ringchat_backend::share_key`: an IPv4 address,
/// an IPv6 /48) may take: 1 / this. The TLS gate's rate, burst and places and the login slots
/// share it, so that four hosts at least are needed to fill any of them.
pub(super) const CLIENT_SHARE_DIVISOR: u32 = 4;

/// One client's share of `places` shard-wide places: a quarter, at least one.
pub(super) fn client_share(places: usize) -> usize {
    (places / CLIENT_SHARE_DIVISOR as usize).max(1)
}

/// Whether a client already holding `of_client` of `places` (`in_flight` of them taken by
/// everyone) is refused one more. While more than a share of them is free, no one is: one host
/// alone (a load generator, a carrier's NAT reconnecting) may use three quarters of the shard's
/// places. The last share is scarce, and shared out again: there a client may hold at most a
/// share of the share (a sixteenth), so a host looping requests and a second one together
/// still leave most of it to others, and filling the shard takes five hosts. (Letting a client
/// under its share take the whole last quarter let two hosts fill it.)
pub(super) fn past_client_share(of_client: usize, in_flight: usize, places: usize) -> bool {
    let share = client_share(places);
    in_flight + share >= places && of_client >= client_share(share)
}

impl Shard {
    /// A place for one more pre-login request from `peer` on its way to the backend, or why
    /// there is none: the shard has `gateway.logins_in_flight_per_shard_max` of them already,
    /// or the client (`share_key`) its share of them while they are scarce
    /// (`past_client_share`). Without the share one host looping
    /// requests the backend refuses at once (a `Login{}`, a throttled password) on many
    /// connections held every slot, and everyone else's login was told `SERVER_FULL`.
    /// Shard-local: no atomics; given back when the slot drops.
    pub fn login_slot(self: &Rc<Self>, peer: IpAddr) -> Result<LoginSlot, LoginsFull> {
        let n = self.logins_in_flight.get();
        if n >= self.gateway.logins_in_flight_per_shard_max {
            return Err(LoginsFull::Shard);
        }
        let from = ringchat_backend::share_key(peer);
        let mut per_client = self.logins_in_flight_from.borrow_mut();
        let of_client = per_client.entry(from).or_insert(0);
        if past_client_share(*of_client, n, self.gateway.logins_in_flight_per_shard_max) {
            return Err(LoginsFull::Client);
        }
        *of_client += 1;
        self.logins_in_flight.set(n + 1);
        self.stats.logins_in_flight.set(n as u64 + 1);
        Ok(LoginSlot {
            shard: Rc::clone(self),
            from,
        })
    }

    /// The `retry_after_ms` for a client turned away before login: jittered, so that the
    /// clients of one storm do not come back together.
    pub fn login_retry_after_ms(&self) -> u64 {
        ringchat_backend::retry_after::jittered_ms(self.gateway.login_retry_after_ms)
    }
}

/// Why `Shard::login_slot` found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginsFull {
    /// `gateway.logins_in_flight_per_shard_max` in flight.
    Shard,
    /// The client's share of them (`client_share`) in flight.
    Client,
}

/// One pre-login request in flight on a shard (`Shard::login_slot`), from client `from`.
pub(crate) struct LoginSlot {
    shard: Rc<Shard>,
    from: IpAddr,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        let shard = &self.shard;
        let n = shard.logins_in_flight.get().saturating_sub(1);
        shard.logins_in_flight.set(n);
        shard.stats.logins_in_flight.set(n as u64);
        let mut per_client = shard.logins_in_flight_from.borrow_mut();
        if let Some(of_client) = per_client.get_mut(&self.from) {
            *of_client -= 1;
            if *of_client == 0 {
                per_client.remove(&self.from);
            }
        }
    }
}

//! Admits TLS handshakes on one shard: at most `gateway.tls_handshakes_per_shard_per_s` a
//! second (after a burst of [`BURST`]) and `gateway.tls_handshakes_in_flight_per_shard_max`
//! handshaking at once, of which one client (an IPv4 address, an IPv6 /64) holds a quarter at
//! most. A place is taken when the client's first bytes (its ClientHello) are readable, before
//! rustls reads them, and given back when the handshake is done. Past a bound the socket is
//! closed, with no crypto done.
//!
//! Why: the key exchange and the signature run inline on the shard's thread when the
//! ClientHello is read (`stream.rs`). A stranger replaying canned ClientHellos spends no crypto
//! of their own, and without a bound would keep the shard's core busy and stall every session
//! on it. Connections turned away because the shard is full pass here too, so they are no way
//! around it. Why at the first bytes and not at accept: sockets that send nothing would
//! otherwise hold every place for the handshake timeout and lock real clients out for the
//! price of a TCP connect; and why a share per client: so that one host stalling its
//! handshakes cannot take them all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use super::Shard;
use super::login_pace::LoginPace;

/// Handshakes a shard that was quiet lets through at once before the rate applies.
const BURST: u32 = 64;

/// Why a TLS connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Rate,
    /// The shard's places, or the client's share of them, are taken.
    InFlight,
}

pub(super) struct TlsGate {
    pace: LoginPace,
    in_flight: Cell<usize>,
    in_flight_max: usize,
    /// Handshakes in flight per client key (an entry only while it has one).
    in_flight_from: RefCell<HashMap<IpAddr, usize>>,
}

impl TlsGate {
    pub fn new(per_second: u32, in_flight_max: usize, now: Instant) -> Self {
        Self {
            pace: LoginPace::new(per_second, BURST, now),
            in_flight: Cell::new(0),
            in_flight_max,
            in_flight_from: RefCell::new(HashMap::new()),
        }
    }

    /// One client's share of the places: a quarter, at least one.
    fn per_client_max(&self) -> usize {
        (self.in_flight_max / 4).max(1)
    }
}

/// One TLS handshake under way; its place is given back when dropped (the handshake done, or
/// the connection gone).
pub(super) struct HandshakeSlot {
    shard: Rc<Shard>,
    from: IpAddr,
}

impl HandshakeSlot {
    /// A place for the handshake of a TLS connection from `peer` on `shard`, or why there is
    /// none. A refusal takes no place in the rate.
    pub fn take(shard: &Rc<Shard>, peer: IpAddr) -> Result<Self, Refused> {
        let gate = &shard.tls_gate;
        let from = ringchat_backend::client_key(peer);
        if gate.in_flight.get() >= gate.in_flight_max
            || gate
                .in_flight_from
                .borrow()
                .get(&from)
                .copied()
                .unwrap_or(0)
                >= gate.per_client_max()
        {
            return Err(Refused::InFlight);
        }
        if !gate.pace.admit(Instant::now()) {
            return Err(Refused::Rate);
        }
        gate.in_flight.set(gate.in_flight.get() + 1);
        *gate.in_flight_from.borrow_mut().entry(from).or_default() += 1;
        shard.stats.tls_handshakes_in_flight.add(1);
        Ok(Self {
            shard: Rc::clone(shard),
            from,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let gate = &self.shard.tls_gate;
        gate.in_flight.set(gate.in_flight.get() - 1);
        let mut from = gate.in_flight_from.borrow_mut();
        if let Some(n) = from.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                from.remove(&self.from);
            }
        }
        self.shard.stats.tls_handshakes_in_flight.sub(1);
    }
}

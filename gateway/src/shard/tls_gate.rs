//! Admits TLS handshakes on one shard: at most `gateway.tls_handshakes_per_shard_per_s` a
//! second (after a burst of [`BURST`]) and `gateway.tls_handshakes_in_flight_per_shard_max`
//! opening at once. Past either, the socket is closed at accept, before rustls sees a byte.
//!
//! Why: the key exchange and the signature run inline on the shard's thread when the
//! ClientHello is read (`stream.rs`). A stranger replaying canned ClientHellos spends no crypto
//! of their own, and without a bound would keep the shard's core busy and stall every session
//! on it. Connections turned away because the shard is full pass here first too, so they are
//! no way around it.

use std::cell::Cell;
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
    InFlight,
}

pub(super) struct TlsGate {
    pace: LoginPace,
    in_flight: Cell<usize>,
    in_flight_max: usize,
}

impl TlsGate {
    pub fn new(per_second: u32, in_flight_max: usize, now: Instant) -> Self {
        Self {
            pace: LoginPace::new(per_second, BURST, now),
            in_flight: Cell::new(0),
            in_flight_max,
        }
    }
}

/// One TLS connection being opened; its place is given back when dropped (the opening done,
/// or the connection gone).
pub(super) struct HandshakeSlot(Rc<Shard>);

impl HandshakeSlot {
    /// A place for a new TLS connection on `shard`, or why there is none. A refusal takes no
    /// place in the rate.
    pub fn take(shard: &Rc<Shard>) -> Result<Self, Refused> {
        let gate = &shard.tls_gate;
        if gate.in_flight.get() >= gate.in_flight_max {
            return Err(Refused::InFlight);
        }
        if !gate.pace.admit(Instant::now()) {
            return Err(Refused::Rate);
        }
        gate.in_flight.set(gate.in_flight.get() + 1);
        shard.stats.tls_handshakes_in_flight.add(1);
        Ok(Self(Rc::clone(shard)))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let gate = &self.0.tls_gate;
        gate.in_flight.set(gate.in_flight.get() - 1);
        self.0.stats.tls_handshakes_in_flight.sub(1);
    }
}

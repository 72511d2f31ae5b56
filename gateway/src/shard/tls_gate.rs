//! Admits TLS handshakes on one shard: at most `gateway.tls_handshakes_per_shard_per_s` a
//! second (after a burst of [`BURST`]) and `gateway.tls_handshakes_in_flight_per_shard_max`
//! handshaking at once; one client (`ringchat_backend::share_key`: an IPv4 address, an IPv6
//! /48) has a quarter of each at most. A place is taken once the client's ClientHello is in
//! whole ([`client_hello`]), before rustls reads it, and given back when the handshake is done.
//! Past a bound the socket is closed, with no crypto done.
//!
//! Why: the key exchange and the signature run inline on the shard's thread when the
//! ClientHello is read (`stream.rs`). A stranger replaying canned ClientHellos spends no crypto
//! of their own, and without a bound would keep the shard's core busy and stall every session
//! on it. Connections turned away because the shard is full pass here too, so they are no way
//! around it.
//!
//! Why at a whole ClientHello, not at accept nor at the first byte: rustls does no crypto
//! before it has the whole message, so bytes short of it cost the shard nothing, and a place
//! taken for them would be a place lost. At accept, sockets that send nothing would hold every
//! place for the handshake timeout; at the first byte, one host looping "connect, send one
//! byte, close" spent the whole rate for the price of a TCP connect, and every other client's
//! handshake was refused. Waiting for the whole message is simpler than giving a token back
//! (the pace's `admit` has nothing to give back to, and a place held while the client dawdles
//! is still a place others do not get); the bytes wait in a pooled buffer, bounded by
//! [`CLIENT_HELLO_BYTES_MAX`] and the opening's timeout.
//!
//! Why a share per client of the rate too: so that one host sending whole ClientHellos, each
//! costing the shard its crypto, cannot spend the rate alone. Keyed by /48 for IPv6, not by the
//! /64 of the per-connection limits: a host has 65,536 /64s, and four would take every share.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Shard;
use super::login_pace::LoginPace;
use super::login_slots::{CLIENT_SHARE_DIVISOR, client_share};
use crate::stats::ShardStats;

/// Handshakes a shard that was quiet lets through at once before the rate applies.
const BURST: u32 = 64;

/// Clients whose handshakes the rate share remembers, per shard. Never reached in practice: an
/// entry lives until the client's burst has come back (`CLIENT_SHARE_DIVISOR × BURST` gaps of the
/// shard's rate at most), and the shard admits no more than `2 × BURST` handshakes in that time.
/// Were it full, a new client would be refused until entries expire, rather than the map grow.
const CLIENT_RATE_ENTRIES_MAX: usize = 1024;

/// The longest ClientHello waited for, in bytes, counting the record headers around it (a real
/// one is under 2 KiB, one with a post-quantum key share included); past it the connection is
/// closed as a failed handshake.
pub(super) const CLIENT_HELLO_BYTES_MAX: usize = 16 * 1024;

/// The TLS record header: content type, version, length.
const RECORD_HEADER_BYTES: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
/// The handshake message header: type, length.
const HANDSHAKE_HEADER_BYTES: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The longest plaintext record (RFC 8446, 5.1).
const RECORD_BYTES_MAX: usize = 1 << 14;

/// What the bytes a TLS client sent first hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hello {
    /// A whole ClientHello (in one handshake record or several): rustls may take it now.
    Whole,
    /// The start of one: wait for more.
    Partial,
    /// Not a ClientHello rustls would take, or one longer than [`CLIENT_HELLO_BYTES_MAX`].
    Refused,
}

/// Reads the record and handshake headers in `raw` (the client's first bytes, unprocessed) to
/// tell whether they hold a whole ClientHello. Only the framing is checked: rustls checks the
/// rest, and does its crypto only once it has the whole message.
pub(super) fn client_hello(raw: &[u8]) -> Hello {
    let mut header = [0u8; HANDSHAKE_HEADER_BYTES];
    let mut header_bytes = 0;
    // Handshake bytes in the whole records seen.
    let mut payload = 0;
    let mut rest = raw;
    loop {
        match rest.first() {
            None => break,
            Some(&CONTENT_HANDSHAKE) => {}
            Some(_) => return Hello::Refused,
        }
        if rest.len() < RECORD_HEADER_BYTES {
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > RECORD_BYTES_MAX {
            return Hello::Refused;
        }
        let Some(body) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
            break;
        };
        for &b in body.iter().take(HANDSHAKE_HEADER_BYTES - header_bytes) {
            header[header_bytes] = b;
            header_bytes += 1;
        }
        payload += len;
        rest = &rest[RECORD_HEADER_BYTES + len..];
        // Bounded, or a client cutting its hello into tiny records could make the shard hold
        // several times the longest one.
        if raw.len() - rest.len() > CLIENT_HELLO_BYTES_MAX {
            return Hello::Refused;
        }
        if header_bytes == HANDSHAKE_HEADER_BYTES {
            if header[0] != HANDSHAKE_CLIENT_HELLO {
                return Hello::Refused;
            }
            let message = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            if RECORD_HEADER_BYTES + HANDSHAKE_HEADER_BYTES + message > CLIENT_HELLO_BYTES_MAX {
                return Hello::Refused;
            }
            if payload >= HANDSHAKE_HEADER_BYTES + message {
                return Hello::Whole;
            }
        }
    }
    if raw.len() > CLIENT_HELLO_BYTES_MAX {
        return Hello::Refused;
    }
    Hello::Partial
}

/// Why a TLS connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The shard's rate is spent.
    Rate,
    /// The client's share of the rate is spent.
    ClientRate,
    /// The shard's places, or the client's share of them, are taken.
    InFlight,
}

impl Refused {
    pub fn count(self, stats: &ShardStats) {
        match self {
            Self::Rate => stats.refused_tls_rate.add(1),
            Self::ClientRate => stats.refused_tls_client_rate.add(1),
            Self::InFlight => stats.refused_tls_in_flight.add(1),
        }
    }
}

pub(super) struct TlsGate {
    pace: LoginPace,
    /// Time between two handshakes of one client at its share of the rate; zero: not paced.
    client_gap: Duration,
    /// How far a client's `next` may lag behind now: its share of the burst.
    client_burst: Duration,
    /// Per client key, when its next handshake would go if it had no burst left (the pace's
    /// rule, one instant per client). An entry at or behind `now - client_burst` says nothing
    /// more than no entry: such entries are dropped when the map is full.
    client_next: RefCell<HashMap<IpAddr, Instant>>,
    in_flight: Cell<usize>,
    in_flight_max: usize,
    /// Handshakes in flight per client key (an entry only while it has one).
    in_flight_from: RefCell<HashMap<IpAddr, usize>>,
}

impl TlsGate {
    pub fn new(per_second: u32, in_flight_max: usize, now: Instant) -> Self {
        let client_gap = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) * CLIENT_SHARE_DIVISOR / per_second
        };
        // Started as a shard that was quiet, its burst there: a client's share starts full (a
        // client it has not seen), so without the burst one client could take a just-started
        // shard's whole rate until the burst had filled.
        let quiet_since = now.checked_sub(client_gap * BURST).unwrap_or(now);
        Self {
            pace: LoginPace::new(per_second, BURST, quiet_since),
            client_gap,
            client_burst: client_gap * (BURST / CLIENT_SHARE_DIVISOR - 1),
            client_next: RefCell::new(HashMap::new()),
            in_flight: Cell::new(0),
            in_flight_max,
            in_flight_from: RefCell::new(HashMap::new()),
        }
    }

    /// One client's share of the places (`client_share`).
    fn per_client_max(&self) -> usize {
        client_share(self.in_flight_max)
    }

    /// When `from`'s next handshake goes, if its share of the rate has one free now; nothing
    /// taken. `None`: spent (or no room to remember a new client).
    fn client_place(&self, from: IpAddr, now: Instant) -> Option<Instant> {
        let earliest = now.checked_sub(self.client_burst).unwrap_or(now);
        let mut next = self.client_next.borrow_mut();
        let at = match next.get(&from) {
            Some(&at) => at.max(earliest),
            None => {
                if next.len() >= CLIENT_RATE_ENTRIES_MAX {
                    next.retain(|_, at| *at > earliest);
                    if next.len() >= CLIENT_RATE_ENTRIES_MAX {
                        return None;
                    }
                }
                earliest
            }
        };
        (at <= now).then_some(at)
    }

    /// Takes the place `client_place` found.
    fn take_client_place(&self, from: IpAddr, at: Instant) {
        self.client_next
            .borrow_mut()
            .insert(from, at + self.client_gap);
    }

    /// Takes a place in the rate for a handshake from `from` now: the client's share first,
    /// then the shard's. A refusal takes nothing.
    fn admit(&self, from: IpAddr, now: Instant) -> Result<(), Refused> {
        if self.client_gap.is_zero() {
            return Ok(());
        }
        let at = self.client_place(from, now).ok_or(Refused::ClientRate)?;
        if !self.pace.admit(now) {
            return Err(Refused::Rate);
        }
        self.take_client_place(from, at);
        Ok(())
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
        let from = ringchat_backend::share_key(peer);
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
        gate.admit(from, Instant::now())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_client_gets_a_quarter_of_the_rate_and_the_others_the_rest() {
        let t = Instant::now() + Duration::from_secs(100);
        // 100 a second, after a quiet spell: the burst of 64 is there.
        let gate = TlsGate::new(100, 1024, t - Duration::from_secs(50));
        let a: Vec<bool> = (0..20).map(|_| gate.admit(ip(1), t).is_ok()).collect();
        assert_eq!(
            a.iter().filter(|ok| **ok).count(),
            16,
            "a quarter of the burst"
        );
        assert_eq!(gate.admit(ip(1), t), Err(Refused::ClientRate));
        // The others still have the rest of the burst, each its quarter of it.
        assert!((2..5).all(|c| (0..16).all(|_| gate.admit(ip(c), t).is_ok())));
        // The shard's burst is spent now, whoever asks.
        assert_eq!(gate.admit(ip(9), t), Err(Refused::Rate));
        // The first client's next is one client gap (40 ms) on; the shard's refusals took
        // nothing from it.
        assert_eq!(gate.admit(ip(1), t + 39 * MS), Err(Refused::ClientRate));
        assert_eq!(gate.admit(ip(1), t + 40 * MS), Ok(()));
    }

    #[test]
    fn a_new_shard_has_its_burst_so_one_clients_share_is_not_all_of_it() {
        let t = Instant::now();
        let gate = TlsGate::new(100, 1024, t);
        assert!((1..5).all(|c| (0..16).all(|_| gate.admit(ip(c), t).is_ok())));
        assert_eq!(gate.admit(ip(9), t), Err(Refused::Rate));
    }

    #[test]
    fn an_unpaced_gate_remembers_no_client() {
        let t = Instant::now();
        let gate = TlsGate::new(0, 1024, t);
        assert!((0..10_000).all(|i| gate.admit(ip((i % 200) as u8), t).is_ok()));
        assert!(gate.client_next.borrow().is_empty());
    }

    #[test]
    fn entries_that_say_nothing_are_dropped_when_the_map_is_full() {
        let t = Instant::now();
        let gate = TlsGate::new(1_000_000, 1024, t);
        let client = |i: usize| IpAddr::from((i as u128).to_be_bytes());
        for i in 0..CLIENT_RATE_ENTRIES_MAX {
            assert!(gate.client_place(client(i), t).is_some());
            gate.take_client_place(client(i), t);
        }
        // Still owed: a new client is refused rather than the map grown.
        assert!(gate.client_place(client(usize::MAX), t).is_none());
        // Once their bursts came back, the entries go and the newcomer is admitted.
        let later = t + Duration::from_secs(1);
        assert!(gate.client_place(client(usize::MAX), later).is_some());
        assert!(gate.client_next.borrow().is_empty());
    }

    fn record(body: &[u8]) -> Vec<u8> {
        let mut r = vec![CONTENT_HANDSHAKE, 3, 1];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn hello_message(len: usize) -> Vec<u8> {
        let mut m = vec![HANDSHAKE_CLIENT_HELLO];
        m.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        m.resize(HANDSHAKE_HEADER_BYTES + len, 7);
        m
    }

    #[test]
    fn a_client_hello_is_whole_once_its_last_byte_is_in() {
        let one = record(&hello_message(300));
        for cut in 0..one.len() {
            assert_eq!(client_hello(&one[..cut]), Hello::Partial, "{cut} bytes");
        }
        assert_eq!(client_hello(&one), Hello::Whole);
        // One byte on its own, as a connect-and-close flood sends: no place for it.
        assert_eq!(client_hello(&[CONTENT_HANDSHAKE]), Hello::Partial);
        // A record of one byte is not a hello either, nor is a header cut across records.
        let message = hello_message(300);
        let mut split = record(&message[..1]);
        assert_eq!(client_hello(&split), Hello::Partial);
        split.extend(record(&message[1..200]));
        assert_eq!(client_hello(&split), Hello::Partial);
        split.extend(record(&message[200..]));
        assert_eq!(client_hello(&split), Hello::Whole);
    }

    #[test]
    fn what_is_no_client_hello_is_refused_without_waiting() {
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::Refused);
        assert_eq!(client_hello(&record(&[])), Hello::Refused);
        let mut finished = hello_message(10);
        finished[0] = 20;
        assert_eq!(client_hello(&record(&finished)), Hello::Refused);
        // Longer than any real one, by its header: refused before its bytes come.
        let declared = hello_message(CLIENT_HELLO_BYTES_MAX);
        assert_eq!(client_hello(&record(&declared[..10])), Hello::Refused);
        // Cut in records of one byte each: refused once the bytes held reach the bound.
        let tiny: Vec<u8> = hello_message(CLIENT_HELLO_BYTES_MAX / 2)
            .iter()
            .flat_map(|b| record(&[*b]))
            .collect();
        assert_eq!(client_hello(&tiny[..60]), Hello::Partial);
        assert_eq!(client_hello(&tiny), Hello::Refused);
    }
}

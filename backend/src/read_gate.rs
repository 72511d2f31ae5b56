//! The gate in front of the read pool: sync, history, contacts and account reads run at most
//! `in_flight` at once, up to `waiting_max` more wait their turn in arrival order, and past that
//! a client is told to retry (`UNAVAILABLE` with `retry_after_ms`). A login storm's first
//! reads queue for a moment instead of being refused, and the queue still has a bound.
//!
//! One connection holds at most `per_conn_max` places (waiting or running): a client that
//! pipelines thousands of reads is told to slow down (`RATE_LIMITED`) instead of filling the
//! queue and the slots every other user's reads wait for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::accounts::Refusal;
use crate::api::ConnRef;

/// The base of a refused read's `retry_after_ms`: a full server's is jittered up to twice it
/// (`retry_after.rs`), a connection's own share is its own to wait for, so not.
const RETRY_AFTER_MS: u64 = 100;

pub(crate) struct ReadGate {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    waiting_max: usize,
    per_conn: Arc<PerConn>,
}

/// Places held per connection (waiting or running); an entry goes when its count is 0, so
/// the map holds the connections with reads in the gate, at most `waiting_max + in_flight`.
struct PerConn {
    max: u32,
    held: Mutex<HashMap<ConnRef, u32>>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `waiting_max` reads wait already, from everyone.
    Server,
    /// This connection holds `per_conn_max` places already.
    Conn,
}

impl Full {
    /// The answer to a request refused a place: `UNAVAILABLE` when the server's queue is full,
    /// `RATE_LIMITED` when the connection holds `per_conn_max` places. `what` names the
    /// requests the gate holds.
    pub(crate) fn refusal(self, what: &str, per_conn_max: u32) -> Refusal {
        match self {
            Self::Server => {
                Refusal::busy(format!("too many {what} waiting, retry"), RETRY_AFTER_MS)
            }
            Self::Conn => Refusal {
                code: ringchat_proto::v1::ErrorCode::RateLimited,
                message: format!(
                    "{per_conn_max} {what} of this connection are waiting or running already"
                ),
                retry_after_ms: RETRY_AFTER_MS,
            },
        }
    }
}

/// A place in the queue: [`Ticket::permit`] waits for the read's turn. Dropped unused, it
/// gives its place back.
pub(crate) struct Ticket {
    permits: Arc<Semaphore>,
    waiting: WaitingPlace,
    conn: ConnPlace,
}

/// A place among the `waiting_max`; given back when dropped.
struct WaitingPlace(Arc<AtomicUsize>);

/// The read's turn: held while it runs.
pub(crate) struct ReadPermit {
    _permit: OwnedSemaphorePermit,
    _conn: ConnPlace,
}

/// One of a connection's places; given back when dropped.
struct ConnPlace {
    per_conn: Arc<PerConn>,
    conn: ConnRef,
}

impl ReadGate {
    pub(crate) fn new(in_flight: usize, waiting_max: usize, per_conn_max: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(in_flight)),
            waiting: Arc::new(AtomicUsize::new(0)),
            waiting_max,
            per_conn: Arc::new(PerConn {
                max: per_conn_max,
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn per_conn_max(&self) -> u32 {
        self.per_conn.max
    }

    /// A place in the queue for a read of `conn`, or why there is none.
    pub(crate) fn ticket(&self, conn: ConnRef) -> Result<Ticket, Full> {
        let conn = self.per_conn.take(conn).ok_or(Full::Conn)?;
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.waiting_max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Server);
        }
        Ok(Ticket {
            permits: Arc::clone(&self.permits),
            waiting: WaitingPlace(Arc::clone(&self.waiting)),
            conn,
        })
    }
}

impl PerConn {
    fn take(self: &Arc<Self>, conn: ConnRef) -> Option<ConnPlace> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(conn).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnPlace {
            per_conn: Arc::clone(self),
            conn,
        })
    }
}

impl Drop for ConnPlace {
    fn drop(&mut self) {
        let mut held = self
            .per_conn
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.conn);
            }
        }
    }
}

impl Ticket {
    /// Waits for a free slot; the read runs while the permit is held.
    pub(crate) async fn permit(self) -> ReadPermit {
        let Ticket {
            permits,
            waiting,
            conn,
        } = self;
        // The semaphore is never closed.
        let permit = permits.acquire_owned().await.expect("read gate open");
        drop(waiting);
        ReadPermit {
            _permit: permit,
            _conn: conn,
        }
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u64) -> ConnRef {
        ConnRef { shard: 0, conn: n }
    }

    /// Refused together, a full server's readers come back spread over [100, 200) ms.
    #[test]
    fn a_full_servers_refusals_are_jittered() {
        let server = || Full::Server.refusal("reads", 16);
        assert_eq!(server().code, ringchat_proto::v1::ErrorCode::Unavailable);
        crate::retry_after::assert_jittered(RETRY_AFTER_MS, || server().retry_after_ms);
        let conn = Full::Conn.refusal("reads", 16);
        assert_eq!(conn.code, ringchat_proto::v1::ErrorCode::RateLimited);
        assert_eq!(conn.retry_after_ms, RETRY_AFTER_MS);
    }

    #[tokio::test]
    async fn reads_wait_in_turn_up_to_the_bound() {
        let gate = ReadGate::new(1, 2, 100);
        let first = gate.ticket(conn(1)).unwrap().permit().await;
        let (a, b) = (gate.ticket(conn(2)).unwrap(), gate.ticket(conn(3)).unwrap());
        assert_eq!(
            gate.ticket(conn(4)).err(),
            Some(Full::Server),
            "two waiting"
        );
        drop(b);
        let c = gate.ticket(conn(4)).expect("a place was given back");
        let waiting = tokio::spawn(a.permit());
        drop(first);
        let second = waiting.await.unwrap();
        assert!(gate.ticket(conn(5)).is_ok(), "a is running, not waiting");
        drop((second, c));
    }

    #[tokio::test]
    async fn one_connection_holds_its_share_and_no_more() {
        let gate = ReadGate::new(1, 100, 2);
        let running = gate.ticket(conn(1)).unwrap().permit().await;
        let waiting = gate.ticket(conn(1)).unwrap();
        // Running and waiting both count.
        assert_eq!(gate.ticket(conn(1)).err(), Some(Full::Conn));
        let other = gate
            .ticket(conn(2))
            .expect("another connection is not held back");
        drop(running);
        let third = gate
            .ticket(conn(1))
            .expect("a place was given back when one ended");
        assert_eq!(gate.ticket(conn(1)).err(), Some(Full::Conn));
        let second = waiting.permit().await;
        assert_eq!(
            gate.ticket(conn(1)).err(),
            Some(Full::Conn),
            "one runs, one waits"
        );
        drop((second, third, other));
        assert!(
            gate.per_conn.held.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}

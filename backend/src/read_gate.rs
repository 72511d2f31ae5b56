//! The gate in front of the read pool: sync, history, contacts and account reads run at most
//! `in_flight` at once, up to `waiting_max` more wait their turn in arrival order, and past that
//! a client is told to retry (`UNAVAILABLE` with `retry_after_ms`). A login storm's first
//! reads queue for a moment instead of being refused, and the queue still has a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct ReadGate {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    waiting_max: usize,
}

/// A place in the queue: [`Ticket::permit`] waits for the read's turn. Dropped unused, it
/// gives its place back.
pub(crate) struct Ticket {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl ReadGate {
    pub(crate) fn new(in_flight: usize, waiting_max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(in_flight)),
            waiting: Arc::new(AtomicUsize::new(0)),
            waiting_max,
        }
    }

    /// A place in the queue, or `None` when `waiting_max` reads are waiting already.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.waiting_max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Ticket {
            permits: Arc::clone(&self.permits),
            waiting: Arc::clone(&self.waiting),
        })
    }
}

impl Ticket {
    /// Waits for a free slot; the read runs while the permit is held.
    pub(crate) async fn permit(self) -> OwnedSemaphorePermit {
        let permits = Arc::clone(&self.permits);
        // The semaphore is never closed.
        let permit = permits.acquire_owned().await.expect("read gate open");
        drop(self);
        permit
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_wait_in_turn_up_to_the_bound() {
        let gate = ReadGate::new(1, 2);
        let first = gate.ticket().unwrap().permit().await;
        let (a, b) = (gate.ticket().unwrap(), gate.ticket().unwrap());
        assert!(gate.ticket().is_none(), "two waiting already");
        drop(b);
        let c = gate.ticket().expect("a place was given back");
        let waiting = tokio::spawn(a.permit());
        drop(first);
        let second = waiting.await.unwrap();
        assert!(gate.ticket().is_some(), "a is running, not waiting");
        drop((second, c));
    }
}

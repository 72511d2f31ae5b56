//! Ids this process hands out for requests to other nodes whose answers come back naming them:
//! forwarded writes (`pending.rs`), system-notification batches (`system.rs`) and room asks
//! (`rooms/cluster`). One rule for all: a random 64-bit start, then +1, never 0 (0 means "no
//! answer wanted"). An answer still on its way when the asking process died (or gave up on
//! it) then matches nothing in the node's next process, whose ids start elsewhere; counting
//! from 1 in every process, the late answer to the old request 1 completed the new one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub(crate) struct RequestIds {
    next: AtomicU64,
}

impl RequestIds {
    /// A space starting at a random id (from the OS's random source).
    pub(crate) fn random() -> Result<Self, String> {
        let mut first = [0u8; 8];
        getrandom::fill(&mut first).map_err(|e| format!("cluster: no random bytes: {e}"))?;
        Ok(Self::starting_at(u64::from_le_bytes(first)))
    }

    /// A space starting at `first` (tests).
    pub(crate) fn starting_at(first: u64) -> Self {
        Self {
            next: AtomicU64::new(first),
        }
    }

    /// An id not handed out before by this space (never 0; wraps after 2^64 - 1 ids).
    pub(crate) fn next(&self) -> u64 {
        loop {
            let id = self.next.fetch_add(1, Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_do_not_start_at_the_same_id() {
        let (a, b) = (RequestIds::random().unwrap(), RequestIds::random().unwrap());
        // Equal with probability 2^-64: a failure here means the start is not random.
        assert_ne!(a.next(), b.next());
    }

    #[test]
    fn zero_is_never_handed_out() {
        let ids = RequestIds::starting_at(u64::MAX);
        assert_eq!((ids.next(), ids.next(), ids.next()), (u64::MAX, 1, 2));
    }
}

//! Whether the database is known to be away: after a connection attempt failed, every call
//! fails at once (UNAVAILABLE) for `storage.postgres.reconnect_interval_ms`, so an outage
//! costs one connection attempt per interval instead of one per request (a host that drops
//! packets would otherwise hold each request for the whole `connect_timeout_ms`, and a commit
//! group of a thousand operations a thousand times that). The first call after the interval
//! tries again; the first connection made ends the outage. Logged once when it starts and
//! once when it ends; `ringchat_store_reachable` says which it is.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreError;
use crate::time::now_ms;

pub(super) struct Away {
    interval_ms: u64,
    /// When the last connection attempt failed (ms since the epoch); 0: the last one worked.
    failed_at_ms: AtomicU64,
    /// When this outage's first attempt failed; 0: no outage.
    since_ms: AtomicU64,
}

impl Away {
    pub(super) fn new(interval_ms: u64) -> Self {
        metrics::gauge!("ringchat_store_reachable").set(1.0);
        Self {
            interval_ms,
            failed_at_ms: AtomicU64::new(0),
            since_ms: AtomicU64::new(0),
        }
    }

    /// `Unavailable` at once while the last attempt failed less than the interval ago.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let failed_at = self.failed_at_ms.load(Ordering::Acquire);
        if failed_at != 0 && now_ms().saturating_sub(failed_at) < self.interval_ms {
            return Err(StoreError::Unavailable(
                "PostgreSQL is unreachable (the last connection attempt failed); retrying soon"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A connection attempt failed (or timed out).
    pub(super) fn failed(&self, why: &dyn std::fmt::Display) {
        let now = now_ms().max(1);
        self.failed_at_ms.store(now, Ordering::Release);
        if self
            .since_ms
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::gauge!("ringchat_store_reachable").set(0.0);
            tracing::error!(
                error = %why,
                retry_every_ms = self.interval_ms,
                "PostgreSQL is unreachable: requests that need it are answered UNAVAILABLE \
                 with retry_after_ms until it is back"
            );
        }
    }

    /// A connection was had: the outage, if any, is over.
    pub(super) fn reached(&self) {
        if self.failed_at_ms.load(Ordering::Acquire) == 0 {
            return;
        }
        self.failed_at_ms.store(0, Ordering::Release);
        let since = self.since_ms.swap(0, Ordering::AcqRel);
        if since != 0 {
            metrics::gauge!("ringchat_store_reachable").set(1.0);
            tracing::warn!(
                outage_ms = now_ms().saturating_sub(since),
                "PostgreSQL is reachable again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_fails_calls_at_once_until_a_connection_is_made() {
        let away = Away::new(60_000);
        assert!(away.check().is_ok());
        away.failed(&"connection refused");
        assert!(matches!(away.check(), Err(StoreError::Unavailable(_))));
        away.reached();
        assert!(away.check().is_ok());
    }

    #[test]
    fn the_next_attempt_is_allowed_once_the_interval_is_over() {
        let away = Away::new(1);
        away.failed(&"connection refused");
        // Backdated instead of waiting: the last attempt failed 2 ms ago.
        away.failed_at_ms.store(now_ms() - 2, Ordering::Release);
        assert!(away.check().is_ok());
    }
}

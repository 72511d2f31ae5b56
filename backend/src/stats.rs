//! Shard-local counters, aggregated only when `/metrics` is scraped.
//!
//! Each `ShardStats` has exactly one writer (its shard thread), so a bump is a plain load and
//! store with no locked instruction and no contention; readers see values at most a moment old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread and read by any.
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Error codes counted per shard (index = `v1::ErrorCode` value).
pub const ERROR_CODES_MAX: usize = 32;
/// Kick reasons counted per shard (index = `v1::KickReason` value).
pub const KICK_REASONS_MAX: usize = 8;

/// The I/O driver a shard runs on.
pub const DRIVER_IO_URING: u64 = 1;
pub const DRIVER_EPOLL: u64 = 2;

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub connections: LocalCounter,
    pub authenticated: LocalCounter,
    pub accepted: LocalCounter,
    pub rejected_full: LocalCounter,
    pub frames_in: LocalCounter,
    pub frames_out: LocalCounter,
    pub bytes_in: LocalCounter,
    pub bytes_out: LocalCounter,
    pub logins: LocalCounter,
    pub login_failures: LocalCounter,
    /// `DRIVER_IO_URING` or `DRIVER_EPOLL` once the shard runs.
    pub driver: LocalCounter,
    pub errors: [LocalCounter; ERROR_CODES_MAX],
    pub kicks: [LocalCounter; KICK_REASONS_MAX],
}

impl ShardStats {
    pub fn error(&self, code: ringchat_proto::v1::ErrorCode) {
        if let Some(c) = self.errors.get(code as usize) {
            c.add(1);
        }
    }

    pub fn kick(&self, reason: ringchat_proto::v1::KickReason) {
        if let Some(c) = self.kicks.get(reason as usize) {
            c.add(1);
        }
    }
}

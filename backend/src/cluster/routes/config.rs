//! `[cluster.routes]`: where each online device is, kept in Redis and cached in memory.

use serde::{Deserialize, Serialize};

/// `[cluster.routes]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// A user's route key (`{prefix}:route:{user}`) expires this long after the last node
    /// holding one of their devices refreshed it, in milliseconds: what a node that died leaves
    /// behind lives at most this long (the live-node view hides it sooner). Also how long a
    /// node is out of this node's view before a fill deletes its fields, and the age at which
    /// a cached entry is read again.
    pub ttl_ms: u64,
    /// How often a node rewrites all its routes (fields and TTL), in milliseconds; also the
    /// longest a Redis that restarted empty stays without them. At most half of `ttl_ms`.
    pub refresh_ms: u64,
    /// Logins and closes are written to Redis (and published to the other nodes) at most this
    /// long after they happen, in milliseconds: they go in one pipeline per flush.
    pub flush_ms: u64,
    /// Users per Redis pipeline (route writes, refreshes, cache fills), at most.
    pub batch_users_max: usize,
    /// Users whose nodes this node keeps in memory for the message path, at most (entries: one
    /// per user, a few dozen bytes each); the least recently used make room.
    pub cache_users_max: usize,
    /// Cache misses waiting to be fetched from Redis, in delivery batches; more are dropped
    /// (their recipients are sent to every live node meanwhile).
    pub fill_queue_batches_max: usize,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 30_000,
            refresh_ms: 10_000,
            flush_ms: 20,
            batch_users_max: 512,
            cache_users_max: 100_000,
            fill_queue_batches_max: 1_024,
        }
    }
}

impl RoutesConfig {
    /// Every problem of the section, as `key: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut range = |v: u64, lo: u64, hi: u64, key: &str| {
            if !(lo..=hi).contains(&v) {
                out.push(format!(
                    "cluster.routes.{key}: must be between {lo} and {hi}"
                ));
            }
        };
        range(self.ttl_ms, 1_000, 3_600_000, "ttl_ms");
        range(self.refresh_ms, 100, 1_800_000, "refresh_ms");
        range(self.flush_ms, 1, 10_000, "flush_ms");
        range(self.batch_users_max as u64, 1, 100_000, "batch_users_max");
        range(
            self.cache_users_max as u64,
            1,
            100_000_000,
            "cache_users_max",
        );
        range(
            self.fill_queue_batches_max as u64,
            1,
            1_000_000,
            "fill_queue_batches_max",
        );
        if self.refresh_ms.saturating_mul(2) > self.ttl_ms {
            out.push("cluster.routes.refresh_ms: must be at most half of ttl_ms, or one late refresh drops the routes of a live node".into());
        }
        out
    }
}

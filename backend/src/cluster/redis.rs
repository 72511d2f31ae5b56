//! The one way cluster code talks to Redis: redis-rs's `ConnectionManager` (one multiplexed
//! connection, reconnected in the background), every call bounded by `redis_timeout_ms`, and a
//! circuit breaker: after `redis_breaker_failures` failures in a row, calls fail at once for
//! `redis_breaker_open_ms` (no caller waits on a Redis that is away), then one call probes.
//!
//! Redis holds only what can be lost and rebuilt (the node registry now; routing and presence
//! later), never the truth for a seq.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "redis: skipped, {failures} calls failed in a row (breaker open for {open_for:?} more)"
    )]
    BreakerOpen { failures: u32, open_for: Duration },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Consecutive failures and when the breaker may let a call through again.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    failures_max: u32,
    open_for: Duration,
    breaker: Mutex<Breaker>,
}

impl Redis {
    /// Connects lazily: a node starts (and serves) while Redis is away. Call on the runtime.
    pub fn new(config: &ClusterConfig) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnecting is the heartbeat's job: each call tries once, within its deadline.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, manager)?,
            timeout,
            failures_max: config.redis_breaker_failures.max(1),
            open_for: Duration::from_millis(config.redis_breaker_open_ms),
            breaker: Mutex::new(Breaker::default()),
        })
    }

    /// Runs a pipeline (one round trip) under the deadline and the breaker.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.admit()?;
        let mut conn = self.conn.clone();
        let result = match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(r) => r.map_err(RedisError::from),
        };
        self.record(result.is_ok());
        result
    }

    fn admit(&self) -> Result<(), RedisError> {
        let mut b = self.breaker.lock().expect("breaker lock");
        match b.open_until {
            Some(until) if Instant::now() < until => Err(RedisError::BreakerOpen {
                failures: b.failures,
                open_for: until - Instant::now(),
            }),
            // Half open: this call probes; another failure opens the breaker again.
            Some(_) => {
                b.open_until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().expect("breaker lock");
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures = b.failures.saturating_add(1);
            if b.failures >= self.failures_max {
                b.open_until = Some(Instant::now() + self.open_for);
            }
        }
    }
}

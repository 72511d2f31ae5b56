//! Short leases in Redis, one per name: for a check-then-write that must run on one node at a
//! time across the cluster (a user's upload limits: `files/service.rs`), where a lock in one
//! process holds only that process's requests.
//!
//! Key `{prefix}:lease:{name}` = a random token, `SET NX PX`: the holder's until it gives the
//! lease back (a script deletes the key only while it still holds its token) or the lease runs
//! out, so a node that dies holding one delays the others by at most the lease.

use std::time::{Duration, Instant};

use super::ClusterConfig;
use super::redis::{Redis, RedisError};

/// How often a taker asks again while the lease is held elsewhere.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// Deletes the key only while it holds the caller's token. KEYS: the lease. ARGV: the token.
const GIVE_BACK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("no randomness for a lease token: {0}")]
    Random(getrandom::Error),
}

pub struct Leases {
    redis: Redis,
    prefix: String,
}

/// A lease held: give it back with [`Leases::give_back`] (or it runs out).
#[derive(Debug)]
pub struct Lease {
    key: String,
    token: String,
}

impl Leases {
    /// Call on the runtime (the Redis connection is made lazily).
    pub fn new(config: &ClusterConfig) -> Result<Self, RedisError> {
        Ok(Self {
            redis: Redis::new(config)?,
            prefix: config.redis_key_prefix.clone(),
        })
    }

    /// Takes the lease `name` for `hold`, asking again every 20 ms while another holds it;
    /// `Ok(None)` when `wait` passed without it.
    pub async fn take(
        &self,
        name: &str,
        hold: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(LeaseError::Random)?;
        let lease = Lease {
            key: format!("{}:lease:{name}", self.prefix),
            token: crate::admin::auth::credentials::hex(&token),
        };
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let deadline = Instant::now() + wait;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&lease.key)
                .arg(&lease.token)
                .arg("NX")
                .arg("PX")
                .arg(hold_ms);
            let (taken,): (Option<String>,) = self.redis.query(&pipe).await?;
            if taken.is_some() {
                return Ok(Some(lease));
            }
            if Instant::now() + RETRY_EVERY > deadline {
                return Ok(None);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Gives a lease back; a failure is only logged (the lease runs out by itself).
    pub async fn give_back(&self, lease: Lease) {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(GIVE_BACK)
            .arg(1)
            .arg(&lease.key)
            .arg(&lease.token)
            .ignore();
        if let Err(err) = self.redis.query::<()>(&pipe).await {
            tracing::warn!(%err, key = lease.key, "a lease could not be given back; it runs out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(prefix: &str) -> Leases {
        let url = std::env::var("RINGCHAT_TEST_REDIS_URL")
            .expect("RINGCHAT_TEST_REDIS_URL: the lease tests need Redis (scripts/test.sh)");
        Leases::new(&ClusterConfig {
            enabled: true,
            redis_url: url,
            redis_key_prefix: prefix.into(),
            ..ClusterConfig::default()
        })
        .expect("redis client")
    }

    #[tokio::test]
    async fn a_lease_is_one_holders_until_given_back_or_run_out() {
        let prefix = format!("leases_{}_{}", std::process::id(), crate::time::now_ms());
        let (a, b) = (leases(&prefix), leases(&prefix));
        let hold = Duration::from_secs(30);
        let held = a.take("u1", hold, Duration::ZERO).await.unwrap().unwrap();
        let none = b.take("u1", hold, Duration::from_millis(60)).await.unwrap();
        assert!(none.is_none(), "held by a");
        let other = b.take("u2", hold, Duration::ZERO).await.unwrap();
        assert!(other.is_some(), "another name is free");
        // A taker that waits gets it once the holder gives it back.
        let waiter = tokio::spawn(async move { b.take("u1", hold, Duration::from_secs(10)).await });
        a.give_back(held).await;
        let got = waiter.await.unwrap().unwrap();
        assert!(got.is_some(), "given back, taken by the waiter");
        // A lease that ran out is taken again; its old holder's give-back frees nothing.
        let short = a
            .take("u3", Duration::from_millis(50), Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let c = leases(&prefix);
        let after = c.take("u3", hold, Duration::from_secs(10)).await.unwrap();
        assert!(after.is_some(), "the short lease ran out");
        a.give_back(short).await;
        let still = a.take("u3", hold, Duration::ZERO).await.unwrap();
        assert!(still.is_none(), "the old holder's give-back left c's lease");
    }
}

//! The one way cluster code talks to Redis: redis-rs's `ConnectionManager` (one multiplexed
//! connection, reconnected in the background), every call bounded by `redis_timeout_ms`, and a
//! circuit breaker: after `redis_breaker_failures` failures in a row, calls fail at once for
//! `redis_breaker_open_ms` (no caller waits on a Redis that is away), then one call probes.
//!
//! Where Redis is: `redis_url`, or the primary that Redis Sentinel names (`sentinel_addrs`,
//! `sentinel_master`). With Sentinel, a call that fails on the connection (or is refused with
//! READONLY by a demoted primary) marks the manager stale; the next call asks the sentinels
//! again — at most once per `redis_breaker_open_ms` — and swaps in a manager for the new
//! primary. Pub/sub users take [`Redis::client`] on each (re)subscribe.
//!
//! Redis holds only what can be lost and rebuilt (the node registry now; routing and presence
//! later), never the truth for a seq.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelServerType};

use super::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "redis: skipped, {failures} calls failed in a row (breaker open for {open_for:?} more)"
    )]
    BreakerOpen { failures: u32, open_for: Duration },
    #[error(
        "redis: no primary known yet for sentinel master {0:?} (the sentinels are asked again soon)"
    )]
    NoPrimary(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Consecutive failures and when the breaker may let a call through again.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// The primary in use: its client (for pub/sub) and manager; `None` until Sentinel named one.
#[derive(Default)]
struct Current {
    primary: Option<(redis::Client, ConnectionManager)>,
    /// A call failed on the connection: ask the sentinels again (Sentinel only).
    stale: bool,
    /// The sentinels were last asked then (rate limit: once per breaker period).
    asked_at: Option<Instant>,
}

/// Sentinel's side: who to ask, and for which master name.
struct Sentinels {
    /// Held across one lookup (the client caches its connections to the sentinels), so two
    /// callers never ask at once.
    client: tokio::sync::Mutex<SentinelClient>,
    master: String,
}

pub struct Redis {
    sentinels: Option<Sentinels>,
    current: Mutex<Current>,
    manager: ConnectionManagerConfig,
    timeout: Duration,
    failures_max: u32,
    open_for: Duration,
    breaker: Mutex<Breaker>,
}

impl Redis {
    /// Connects lazily: a node starts (and serves) while Redis is away. Call on the runtime.
    pub fn new(config: &ClusterConfig) -> Result<Self, RedisError> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnecting is the heartbeat's job: each call tries once, within its deadline.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let (sentinels, primary) = if config.sentinel_addrs.is_empty() {
            let client = redis::Client::open(config.redis_url.as_str())?;
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?;
            (None, Some((client, conn)))
        } else {
            let client = SentinelClient::build(
                config.sentinel_urls(),
                config.sentinel_master.clone(),
                None,
                SentinelServerType::Master,
            )?;
            let sentinels = Sentinels {
                client: tokio::sync::Mutex::new(client),
                master: config.sentinel_master.clone(),
            };
            (Some(sentinels), None)
        };
        Ok(Self {
            sentinels,
            current: Mutex::new(Current {
                primary,
                ..Current::default()
            }),
            manager,
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
        let call = async {
            let (_, mut conn) = self.primary().await?;
            pipe.query_async(&mut conn).await.map_err(RedisError::from)
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(r) => r,
        };
        if let Err(err) = &result
            && primary_suspect(err)
        {
            self.current().stale = true;
        }
        self.record(result.is_ok());
        result
    }

    /// A client for the current primary, for a pub/sub connection (call on each subscribe:
    /// after a failover it names the new primary). Bounded by `redis_timeout_ms`.
    pub async fn client(&self) -> Result<redis::Client, RedisError> {
        // A resubscribe follows a lost subscription: the primary may have moved.
        if self.sentinels.is_some() {
            self.current().stale = true;
        }
        match tokio::time::timeout(self.timeout, self.primary()).await {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(r) => Ok(r?.0),
        }
    }

    /// The primary to use now: asks the sentinels first when none is known or the one in use
    /// failed, at most once per breaker period (in between, the one known is used, or none).
    async fn primary(&self) -> Result<(redis::Client, ConnectionManager), RedisError> {
        let Some(sentinels) = &self.sentinels else {
            let current = self.current();
            let (client, conn) = current
                .primary
                .as_ref()
                .expect("a plain URL always has one");
            return Ok((client.clone(), conn.clone()));
        };
        // Once per breaker period; meanwhile (or while another caller asks) the known one.
        if self.claim_lookup()
            && let Ok(mut client) = sentinels.client.try_lock()
        {
            let found = client.async_get_client().await;
            drop(client);
            self.adopt(found, &sentinels.master)?;
        }
        let current = self.current();
        match &current.primary {
            Some((client, conn)) => Ok((client.clone(), conn.clone())),
            None => Err(RedisError::NoPrimary(sentinels.master.clone())),
        }
    }

    /// Whether this caller asks the sentinels now (then the rate limit counts from now).
    fn claim_lookup(&self) -> bool {
        let mut current = self.current();
        let due = (current.primary.is_none() || current.stale)
            && current
                .asked_at
                .is_none_or(|at| at.elapsed() >= self.open_for);
        if due {
            current.asked_at = Some(Instant::now());
        }
        due
    }

    /// Takes the primary the sentinels named (a lookup that failed keeps the one known).
    fn adopt(
        &self,
        found: redis::RedisResult<redis::Client>,
        master: &str,
    ) -> Result<(), RedisError> {
        match found {
            Ok(client) => {
                let addr = client.get_connection_info().addr().to_string();
                let mut current = self.current();
                current.stale = false;
                // The same primary (it only hiccupped): keep its connection.
                if let Some((known, _)) = &current.primary
                    && known.get_connection_info().addr().to_string() == addr
                {
                    return Ok(());
                }
                drop(current);
                let conn =
                    ConnectionManager::new_lazy_with_config(client.clone(), self.manager.clone())?;
                tracing::info!(primary = %addr, master, "cluster: Redis Sentinel named the primary");
                self.current().primary = Some((client, conn));
                Ok(())
            }
            Err(err) => {
                tracing::warn!(%err, master, "cluster: asking Redis Sentinel for the primary failed");
                match self.current().primary {
                    None => Err(err.into()),
                    Some(_) => Ok(()),
                }
            }
        }
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
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

/// Pause after a failed subscribe or a lost subscription before subscribing again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(200);

/// What a [`Redis::listen`]er does over a subscription's life.
pub trait Subscriber {
    /// Subscribed (again): whatever was published meanwhile is lost, catch up here.
    fn subscribed(&self) -> impl std::future::Future<Output = ()> + Send;
    fn message(&self, payload: &[u8]);
    /// The subscription ended (the connection broke, or a ping went unanswered).
    fn lost(&self);
}

impl Redis {
    /// Listens on `channel` for ever: subscribes on the primary of the moment, hands each
    /// payload to `subscriber`, pings every `ping_every` (a silent peer, as in a partition, is
    /// only found by asking) and subscribes again after a loss.
    pub async fn listen(&self, channel: &str, ping_every: Duration, subscriber: &impl Subscriber) {
        use futures_util::StreamExt as _;
        loop {
            let connect = async {
                let mut pubsub = self.client().await?.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, RedisError>(pubsub)
            };
            let pubsub = match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(err)) => {
                    tracing::debug!(%err, channel, "cluster: subscribing failed");
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
                Err(_) => {
                    tracing::debug!(channel, "cluster: subscribing timed out");
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
            };
            subscriber.subscribed().await;
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => subscriber.message(msg.get_payload_bytes()),
                        None => break,
                    },
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            subscriber.lost();
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    }
}

/// The failure says the primary may have moved: the connection broke or timed out, or the
/// server is a replica now (READONLY). A script or type error says nothing about it.
fn primary_suspect(err: &RedisError) -> bool {
    match err {
        RedisError::Timeout(_) | RedisError::NoPrimary(_) => true,
        RedisError::BreakerOpen { .. } => false,
        RedisError::Redis(e) => {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        }
    }
}

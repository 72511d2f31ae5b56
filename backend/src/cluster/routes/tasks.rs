//! The routes' three tasks: the writer (this node's routes into Redis), the fill (cache misses
//! from Redis) and the subscription (the other nodes' changes into the cache).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use smallvec::SmallVec;

use super::local::Writer;
use super::wire::{self, NodeLife};
use super::{NOT_SUBSCRIBED, Routes};
use crate::cluster::redis::Subscriber;
use crate::store::UserId;
use crate::time::now_ms;

/// Pause after a failed write or a lost subscription before trying again.
const RETRY: Duration = Duration::from_millis(200);
/// Delivery batches of misses taken by the fill at once.
const FILL_BATCHES_MAX: usize = 64;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Routes {
    /// Runs the tasks until `stop` completes; then deletes this node's routes (one pass,
    /// bounded by the Redis deadline per pipeline).
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        // Aborted when `run` ends or is dropped.
        let _fill = AbortOnDrop(tokio::spawn(Arc::clone(&self).fill()));
        let _subscribe = AbortOnDrop(tokio::spawn(Arc::clone(&self).subscribe()));
        self.write(stop).await;
        self.trusted_from_ms.store(NOT_SUBSCRIBED, Relaxed);
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            redis: &self.redis,
            prefix: &self.prefix,
            node_id: &self.me.node_id,
            started_at_ms: self.me.started_at_ms,
            ttl_ms: self.config.ttl_ms,
            batch_users_max: self.config.batch_users_max,
        }
    }

    async fn write(&self, stop: impl std::future::Future<Output = ()>) {
        let writer = self.writer();
        let mut refresh = tokio::time::interval(Duration::from_millis(self.config.refresh_ms));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flush_wait = Duration::from_millis(self.config.flush_ms);
        let mut failing = false;
        tokio::pin!(stop);
        loop {
            let result = tokio::select! {
                () = &mut stop => break,
                () = self.local.changed.notified() => {
                    // Gather what else changes meanwhile into the same pipeline.
                    tokio::time::sleep(flush_wait).await;
                    writer.flush(&self.local).await.map(drop)
                }
                _ = refresh.tick() => match writer.refresh(&self.local).await {
                    Ok(()) => writer.flush(&self.local).await.map(drop),
                    Err(err) => Err(err),
                },
                () = self.resubscribed.notified() => match writer.refresh(&self.local).await {
                    Ok(()) => writer.flush(&self.local).await.map(drop),
                    Err(err) => Err(err),
                },
            };
            match result {
                Ok(()) if failing => {
                    // Redis may have restarted empty: put everything back now.
                    failing = false;
                    tracing::info!(
                        "cluster: route writes reach Redis again; rewriting this node's routes"
                    );
                    if writer.refresh(&self.local).await.is_err() {
                        failing = true;
                    }
                }
                Ok(()) => {}
                Err(err) => {
                    if !failing {
                        tracing::warn!(%err, "cluster: writing routes failed; retrying (other nodes send this node's users everything meanwhile)");
                    }
                    failing = true;
                    tokio::time::sleep(RETRY).await;
                    self.local.changed.notify_one();
                }
            }
        }
        self.local.clear();
        match writer.flush(&self.local).await {
            Ok(users) => tracing::info!(users, "cluster: removed this node's routes"),
            Err(err) => {
                tracing::warn!(%err, "cluster: could not remove this node's routes; they expire after routes.ttl_ms")
            }
        }
    }

    async fn fill(self: Arc<Self>) {
        let Some(mut rx) = self
            .fill_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let mut batches = Vec::with_capacity(FILL_BATCHES_MAX);
        loop {
            batches.clear();
            if rx.recv_many(&mut batches, FILL_BATCHES_MAX).await == 0 {
                return;
            }
            let mut users: Vec<UserId> = batches.iter().flatten().copied().collect();
            users.sort_unstable();
            users.dedup();
            let users = self.cache().fetching(&users);
            for chunk in users.chunks(self.config.batch_users_max.max(1)) {
                self.fill_chunk(chunk).await;
            }
        }
    }

    /// One pipeline of HGETALL for `users`, into the cache; fields of nodes that are surely
    /// gone are deleted: an older life of a node in the view, or a node out of a fresh view
    /// for over `ttl_ms` counted from when it left this node's view (`Departed`). Not from
    /// the life's start: a node that has run longer than that and is cut from Redis for
    /// `node_ttl_ms` (still serving, its fields still right) would lose them the moment it
    /// left the view, and the entries filled without them would never be corrected.
    async fn fill_chunk(&self, users: &[UserId]) {
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HGETALL")
                .arg(wire::route_key(&self.prefix, *user));
        }
        let result: Result<Vec<HashMap<Vec<u8>, redis::Value>>, _> = self.redis.query(&pipe).await;
        let hashes = match result {
            Ok(h) if h.len() == users.len() => h,
            other => {
                if let Err(err) = other {
                    tracing::debug!(%err, "cluster: filling the route cache failed");
                }
                let mut cache = self.cache();
                for user in users {
                    cache.filled(*user, None, 0);
                }
                return;
            }
        };
        let mut prune = redis::pipe();
        let mut pruning = false;
        let mut filled = Vec::with_capacity(users.len());
        {
            // The view and the departures of one moment (`set_view` changes both under this lock).
            let departed = self.departed();
            let view = self.view.load();
            let now = now_ms();
            for (user, fields) in users.iter().zip(hashes) {
                let mut nodes: SmallVec<[NodeLife; 2]> = SmallVec::new();
                let mut gone = Vec::new();
                for field in fields.keys() {
                    let Some((node, started)) = wire::parse_field(field) else {
                        continue;
                    };
                    let current = view
                        .nodes
                        .iter()
                        .find(|n| n.record.node_id == node)
                        .map(|n| n.record.started_at_ms);
                    let stale = match current {
                        Some(live) => started < live,
                        None => {
                            view.fresh && departed.gone_for(node, started, self.config.ttl_ms, now)
                        }
                    };
                    if stale {
                        gone.push(field.clone());
                    } else if !nodes
                        .iter()
                        .any(|n| *n.node_id == *node && n.started_at_ms == started)
                    {
                        nodes.push(NodeLife {
                            node_id: node.into(),
                            started_at_ms: started,
                        });
                    }
                }
                if !gone.is_empty() {
                    pruning = true;
                    prune
                        .cmd("HDEL")
                        .arg(wire::route_key(&self.prefix, *user))
                        .arg(gone)
                        .ignore();
                }
                filled.push((*user, nodes));
            }
        }
        {
            let now = now_ms();
            let mut cache = self.cache();
            for (user, nodes) in filled {
                cache.filled(user, Some(nodes), now);
            }
        }
        metrics::gauge!("ringchat_cluster_route_cache_users").set(self.cached_users() as f64);
        if pruning && let Err(err) = self.redis.query::<()>(&prune).await {
            tracing::debug!(%err, "cluster: pruning stale routes failed");
        }
    }

    async fn subscribe(self: Arc<Self>) {
        let ping_every = Duration::from_millis(self.config.refresh_ms.min(5_000));
        self.redis
            .listen(&wire::channel(&self.prefix), ping_every, &*self)
            .await;
    }

    fn apply(&self, payload: &[u8]) {
        metrics::counter!("ringchat_cluster_route_pubsub_messages_total", "direction" => "in")
            .increment(1);
        let Some((node, started, changes)) = wire::parse_message(payload) else {
            tracing::debug!("cluster: skipping a route message that does not parse");
            return;
        };
        if node == &*self.me.node_id {
            return;
        }
        let life = NodeLife {
            node_id: node.into(),
            started_at_ms: started,
        };
        let mut cache = self.cache();
        for (user, here) in changes {
            cache.changed(user, &life, here);
        }
    }
}

impl Subscriber for Routes {
    async fn subscribed(&self) {
        // Changes published while this node was not listening are lost: start over, and trust
        // the cache only once every node has rewritten its routes (a Redis that restarted
        // empty has them back by then).
        self.cache().clear();
        let grace = self.config.refresh_ms + self.redis_timeout.as_millis() as u64;
        self.trusted_from_ms.store(now_ms() + grace, Relaxed);
        // Redis may have restarted empty without this node's writes failing (none were due):
        // its routes go back now, well before the others trust their caches again.
        self.resubscribed.notify_one();
        tracing::info!("cluster: subscribed to route changes");
    }

    fn message(&self, payload: &[u8]) {
        self.apply(payload);
    }

    fn lost(&self) {
        self.trusted_from_ms.store(NOT_SUBSCRIBED, Relaxed);
        self.cache().clear();
        tracing::warn!(
            "cluster: lost the route-change subscription; sending to every live node until it is back"
        );
    }
}

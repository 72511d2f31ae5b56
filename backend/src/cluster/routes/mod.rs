//! Routes (issue 14, part 3): which node, shard and connection each online device of a user is
//! on, in Redis (`wire.rs` has the layout), and the route table the message path asks:
//! [`Routes::nodes_of`], answered from memory, never waiting on Redis.
//!
//! - **Writes** (`local.rs`): a login or a close changes this node's map under a short lock;
//!   a writer task brings Redis up to date every `flush_ms` (one pipeline per
//!   `batch_users_max` users, with one PUBLISH of the changes), and rewrites every route and
//!   its TTL every `refresh_ms`. A node that dies leaves routes that the live-node view hides
//!   at once and that expire after `ttl_ms` (or are pruned by a reader once out of its view
//!   for `ttl_ms`).
//! - **Reads** (`cache.rs`, `tasks.rs`): a bounded cache of other users' nodes, filled from
//!   Redis by a task (one pipeline per batch of misses, never on the commit thread or a shard),
//!   kept fresh by the other nodes' published changes, read again once `ttl_ms` old, and
//!   dropped where it lacks a node that comes back into the view (`set_view`).
//! - **Pruning**: a fill deletes the fields of nodes surely gone: an older life of a node in
//!   the view, or a node out of this node's view for over `ttl_ms` counted from when it left
//!   it (not from the node's start: a live node cut from Redis for a while keeps its fields).
//! - **Degraded**: while the subscription is down (Redis away), and for `refresh_ms` after it
//!   is back (the time every node needs to rewrite its routes into a Redis that restarted
//!   empty), the cache is not trusted and `nodes_of` answers every live node: messages still
//!   reach every device; each destination keeps only its own sessions. A miss is answered the
//!   same way while its fill is under way.

mod cache;
pub mod config;
mod local;
mod tasks;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

pub use config::RoutesConfig;
pub use local::Published;
pub use wire::NodeLife;

use super::ClusterConfig;
use super::redis::{Redis, RedisError};
use super::view::ClusterView;
use crate::api::ConnRef;
use crate::store::UserId;
use cache::{Cache, Lookup};
use local::Local;

/// The nodes a batch of recipients is on, this node left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// One per destination node, in view order; each with the recipients (of those asked)
    /// that may be there.
    pub nodes: Vec<Destination>,
    /// Some recipients were sent to every live node: the cache did not know them (yet), or
    /// is not trusted (Redis away or just back).
    pub everywhere: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Destination {
    pub node_id: Arc<str>,
    pub users: Vec<UserId>,
}

/// Never-set value of `trusted_from_ms`: the subscription is down.
const NOT_SUBSCRIBED: u64 = u64::MAX;

/// Nodes remembered as having left the view, at most; past it the one that left first is
/// forgotten (its fields are then judged by how long this node has watched: see `Departed`).
const DEPARTED_NODES_MAX: usize = 4_096;

/// The nodes that left this node's view, and when: how long a node has been out of the view,
/// for the fill's pruning, and which entries a node coming back may be missing from.
#[derive(Debug, Default)]
struct Departed {
    /// When this node first had a fresh view (ms): a node never seen in it has been out of
    /// it at least since then.
    watching_since_ms: Option<u64>,
    /// Node id → when it left the view (ms, this node's clock).
    left: HashMap<Arc<str>, u64>,
}

impl Departed {
    /// Whether the fields of `node`'s life started at `started_at_ms`, a node missing from
    /// the fresh view, belong to a node out of it for over `ttl_ms` at `now_ms` (never before
    /// that life began, nor before this node watched).
    fn gone_for(&self, node: &str, started_at_ms: u64, ttl_ms: u64, now_ms: u64) -> bool {
        let since = self.left.get(node).copied().or(self.watching_since_ms);
        since.is_some_and(|s| now_ms.saturating_sub(s.max(started_at_ms)) > ttl_ms)
    }
}

pub struct Routes {
    config: RoutesConfig,
    prefix: String,
    me: NodeLife,
    redis: Redis,
    redis_timeout: std::time::Duration,
    /// A node whose heartbeat was not seen to advance for longer (ms) does not count for the
    /// offline push (`view::push_quiet_ms`).
    push_quiet_ms: u64,
    view: Arc<ArcSwap<ClusterView>>,
    local: Local,
    cache: Mutex<Cache>,
    departed: Mutex<Departed>,
    fill_tx: mpsc::Sender<Vec<UserId>>,
    fill_rx: Mutex<Option<mpsc::Receiver<Vec<UserId>>>>,
    /// When the cache can be trusted again (ms since the epoch), or `NOT_SUBSCRIBED`.
    trusted_from_ms: AtomicU64,
    /// The route-change subscription is (back) up: the writer rewrites this node's routes at
    /// once, not at its next `refresh_ms` tick (a Redis that restarted empty lacks them, and
    /// the other nodes trust their caches `refresh_ms` after their own subscription is back).
    resubscribed: tokio::sync::Notify,
}

impl Routes {
    /// Call on the runtime (the Redis connection is made lazily there). Tasks start with `run`.
    pub fn new(
        config: &ClusterConfig,
        started_at_ms: u64,
        view: Arc<ArcSwap<ClusterView>>,
    ) -> Result<Arc<Self>, RedisError> {
        let routes = &config.routes;
        let (fill_tx, fill_rx) = mpsc::channel(routes.fill_queue_batches_max.max(1));
        Ok(Arc::new(Self {
            config: routes.clone(),
            prefix: config.redis_key_prefix.clone(),
            me: NodeLife {
                node_id: config.node_id.as_str().into(),
                started_at_ms,
            },
            redis: Redis::new(config)?,
            redis_timeout: std::time::Duration::from_millis(config.redis_timeout_ms),
            push_quiet_ms: super::view::push_quiet_ms(
                config.heartbeat_interval_ms,
                config.redis_timeout_ms,
            ),
            view,
            local: Local::new(),
            cache: Mutex::new(Cache::new(
                routes.cache_users_max,
                routes.refresh_ms,
                routes.ttl_ms,
            )),
            departed: Mutex::default(),
            fill_tx,
            fill_rx: Mutex::new(Some(fill_rx)),
            trusted_from_ms: AtomicU64::new(NOT_SUBSCRIBED),
            resubscribed: tokio::sync::Notify::new(),
        }))
    }

    /// Whether the other nodes have been told of `user`'s last login or close here.
    pub fn published(&self, user: UserId) -> Published {
        self.local.published(user)
    }

    /// `routes.flush_ms`.
    pub fn flush_ms(&self) -> u64 {
        self.config.flush_ms
    }

    /// A device logged in here. Returns at once; Redis has it within `flush_ms`.
    pub fn opened(&self, user: UserId, conn: ConnRef, device_id: &str, platform: &str) {
        self.local
            .opened(user, conn, wire::value(platform, device_id));
    }

    /// A device's connection here closed (unknown connections are ignored).
    pub fn closed(&self, user: UserId, conn: ConnRef) {
        self.local.closed(user, conn);
    }

    /// Users with a device logged in on this node.
    pub fn local_users(&self) -> usize {
        self.local.users()
    }

    /// Users in the route cache.
    pub fn cached_users(&self) -> usize {
        self.cache().len()
    }

    /// Whether the cache is trusted now (subscribed, past the rebuild time).
    pub fn trusted(&self) -> bool {
        crate::time::now_ms() >= self.trusted_from_ms.load(Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn departed(&self) -> MutexGuard<'_, Departed> {
        self.departed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the next view, a fresh read at `now_ms`, noting which nodes left. A node that
    /// comes back may be missing from cache entries filled while it was away (its fields
    /// pruned, or not rewritten yet, and its rewrite publishes nothing): those entries are
    /// dropped before the view lets pushes go to it, so the next lookup reads Redis again.
    /// Under the lock the fill holds while it judges fields, so a fill sees the view and
    /// the departures of the same moment (never a node back in one and long gone in the
    /// other).
    pub fn set_view(&self, new: ClusterView, now_ms: u64) {
        let mut departed = self.departed();
        let old = self.view.load();
        let in_view = |view: &ClusterView, id: &str| {
            view.nodes
                .binary_search_by(|n| n.record.node_id.as_str().cmp(id))
                .is_ok()
        };
        if new.fresh {
            departed.watching_since_ms.get_or_insert(now_ms);
        }
        for node in &old.nodes {
            let id = node.record.node_id.as_str();
            if !in_view(&new, id) {
                departed.left.insert(id.into(), now_ms);
            }
        }
        let mut back = Vec::new();
        for node in &new.nodes {
            if let Some(gone) = departed.left.remove_entry(node.record.node_id.as_str()) {
                back.push(gone);
            }
        }
        while departed.left.len() > DEPARTED_NODES_MAX {
            let first = departed
                .left
                .iter()
                .min_by_key(|(_, left_ms)| **left_ms)
                .map(|(id, _)| Arc::clone(id));
            if let Some(id) = first {
                departed.left.remove(&id);
            }
        }
        if !back.is_empty() {
            self.cache().rejoined(&back);
        }
        self.view.store(Arc::new(new));
    }

    /// The nodes other than this one where `users` (distinct) have devices, from memory: one
    /// lock, no await, no Redis. Users the cache does not know are sent to every live node, and fetched
    /// for the next time (one queued batch per call; a full queue drops it); users whose entry
    /// is due to be read again are sent by the entry, and fetched in the same batch.
    pub fn nodes_of(&self, users: &[UserId]) -> Destinations {
        let view = self.view.load();
        let mut out = Destinations::default();
        let others = || {
            view.nodes
                .iter()
                .filter(|n| *n.record.node_id != *self.me.node_id)
        };
        let mut everywhere = Vec::new();
        if !self.trusted() {
            metrics::counter!("ringchat_cluster_route_everywhere_total", "why" => "untrusted")
                .increment(1);
            everywhere.extend_from_slice(users);
        } else {
            let mut misses = Vec::new();
            let now = crate::time::now_ms();
            let mut cache = self.cache();
            let mut refills = Vec::new();
            for &user in users {
                let nodes = match cache.get(user, now) {
                    Lookup::Hit(nodes) => nodes,
                    Lookup::Refill(nodes) => {
                        refills.push(user);
                        nodes
                    }
                    Lookup::Miss => {
                        misses.push(user);
                        continue;
                    }
                };
                for life in nodes {
                    if *life.node_id != *self.me.node_id
                        && live(&view, &life.node_id, life.started_at_ms)
                    {
                        add(&mut out, &life.node_id, user);
                    }
                }
            }
            drop(cache);
            let hits = users.len() - misses.len();
            metrics::counter!("ringchat_cluster_route_cache_hits_total").increment(hits as u64);
            if !misses.is_empty() {
                metrics::counter!("ringchat_cluster_route_cache_misses_total")
                    .increment(misses.len() as u64);
                everywhere.extend_from_slice(&misses);
            }
            if !refills.is_empty() {
                metrics::counter!("ringchat_cluster_route_cache_refills_total")
                    .increment(refills.len() as u64);
                misses.append(&mut refills);
            }
            if !misses.is_empty() && self.fill_tx.try_send(misses).is_err() {
                metrics::counter!("ringchat_cluster_route_fill_dropped_total").increment(1);
            }
        }
        if !everywhere.is_empty() {
            out.everywhere = true;
            for node in others() {
                for &user in &everywhere {
                    add(&mut out, &node.record.node_id, user);
                }
            }
        }
        out
    }
}

impl Routes {
    /// Which of `users` have a device on another live node, as Redis has it now (one pipeline
    /// of HGETALL, not the cache: the offline push asks off the message path and wants the
    /// freshest answer). `Err` when Redis cannot say. For the push, a node of the view counts
    /// only while it is heard from: its heartbeat seen within `push_quiet_ms` and its link from
    /// here not known down (`link_down`). A node killed stays in the view, and its users'
    /// fields in Redis, for up to `node_ttl_ms`, and nothing asks again once it has left: a
    /// push is decided once, and a duplicate notification is the lesser harm.
    pub async fn online_elsewhere(
        &self,
        users: &[UserId],
        link_down: impl Fn(&str) -> bool,
    ) -> Result<std::collections::HashSet<UserId>, RedisError> {
        let mut out = std::collections::HashSet::new();
        if users.is_empty() {
            return Ok(out);
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HGETALL")
                .arg(wire::route_key(&self.prefix, *user));
        }
        let hashes: Vec<std::collections::HashMap<Vec<u8>, redis::Value>> =
            self.redis.query(&pipe).await?;
        let view = self.view.load();
        let now = crate::time::now_ms();
        let heard = |node: &str, started: u64| {
            live(&view, node, started)
                && view.heard_within(node, now, self.push_quiet_ms)
                && !link_down(node)
        };
        for (user, fields) in users.iter().zip(hashes) {
            let elsewhere = fields
                .keys()
                .filter_map(|f| wire::parse_field(f))
                .any(|(node, started)| *node != *self.me.node_id && heard(node, started));
            if elsewhere {
                out.insert(*user);
            }
        }
        Ok(out)
    }
}

impl Routes {
    /// The device ids of `user`'s sessions on the other live nodes, one per session (a
    /// nameless login is `""`), as Redis has them now: one HGETALL, for the device rules of a
    /// login and for ListDevices (never the message path). Bounded by the user's sessions
    /// (`login.devices_max` per node). `None` when the routes cannot say: the subscription is
    /// down (Redis away: no login waits for its timeout), or the read failed; the caller then
    /// applies its rules to this node's sessions only. A session that logged in elsewhere
    /// within `flush_ms` may not be there yet, nor, for up to `refresh_ms`, one in a Redis
    /// that restarted empty.
    pub async fn sessions_elsewhere(&self, user: UserId) -> Option<Vec<Box<str>>> {
        if self.trusted_from_ms.load(Relaxed) == NOT_SUBSCRIBED {
            metrics::counter!("ringchat_cluster_route_session_reads_total", "outcome" => "unsubscribed")
                .increment(1);
            return None;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(wire::route_key(&self.prefix, user));
        type Fields = std::collections::HashMap<Vec<u8>, Vec<u8>>;
        let read: Result<(Fields,), RedisError> = self.redis.query(&pipe).await;
        let (fields,) = match read {
            Ok(fields) => fields,
            Err(err) => {
                metrics::counter!("ringchat_cluster_route_session_reads_total", "outcome" => "failed")
                    .increment(1);
                tracing::debug!(%err, user, "cluster: reading a user's routes failed; this node's sessions only");
                return None;
            }
        };
        metrics::counter!("ringchat_cluster_route_session_reads_total", "outcome" => "ok")
            .increment(1);
        let view = self.view.load();
        Some(
            fields
                .iter()
                .filter(|(field, _)| {
                    wire::parse_field(field).is_some_and(|(node, started)| {
                        *node != *self.me.node_id && live(&view, node, started)
                    })
                })
                .filter_map(|(_, value)| wire::parse_value(value))
                .map(Box::from)
                .collect(),
        )
    }
}

/// The life is the one the view has: a node that left, or restarted since, does not count.
fn live(view: &ClusterView, node: &str, started_at_ms: u64) -> bool {
    view.nodes
        .binary_search_by(|n| n.record.node_id.as_str().cmp(node))
        .is_ok_and(|i| view.nodes[i].record.started_at_ms == started_at_ms)
}

/// Adds `user` to `node`'s list. Each user is added to a node once (the recipients of a batch
/// are distinct, a user's cached nodes are distinct), so no search of the list.
fn add(out: &mut Destinations, node: &str, user: UserId) {
    match out.nodes.iter_mut().find(|d| *d.node_id == *node) {
        Some(d) => d.users.push(user),
        None => out.nodes.push(Destination {
            node_id: node.into(),
            users: vec![user],
        }),
    }
}

//! Presence across the nodes of a cluster (issue 14, part 2): the presence port on Redis.
//!
//! - **This node's devices** stay in a [`LocalPresence`] (the same "most present device" rule
//!   as one box); their result is this node's *part* of each user's presence. A change of a
//!   part marks the user dirty; the writer (`tasks.rs`) brings Redis up to date every
//!   `routes.flush_ms` with one script per user that sets the part, moves last seen forward
//!   and publishes the user's whole state (`wire.rs`), and rewrites every part and its TTL
//!   every `routes.refresh_ms`. A rewrite that finds a part missing (Redis restarted empty,
//!   was flushed, or the key expired) publishes that user's state as a change does: the other
//!   nodes may have read or been told the state without it, and a silent rewrite would never
//!   correct them. A login or close never waits on Redis.
//! - **Other nodes' parts** arrive on the subscription, each message with the user's whole
//!   state in the order Redis applied the changes, and are kept per user while the user has a
//!   part on another node (bounded by the users online in the cluster). A user's shown state
//!   is `most_present` of this node's part and the parts of nodes in the live view, so a node
//!   that dies stops counting when it leaves the view (its key expires after `routes.ttl_ms`).
//! - Each node tells **its own** online friends of a user, through its own `Coalescer`
//!   (`Tracker::elsewhere`): a change anywhere costs each node at most one push per user per
//!   quiet period, and one read of the user's friends. Why Redis pub/sub rather than the
//!   node links: the state has to live in Redis anyway (it must outlive a node, and a node that
//!   starts must find it), and publishing from the script that writes it orders every change
//!   of a user the same way on every node, which per-pair links cannot.
//! - **A friends list** shows what this node's friends were told; users this node has not
//!   heard of are read from Redis then (one pipeline per page, on the blocking thread the list
//!   is built on, bounded by the Redis deadline).
//! - **Redis away**: parts are not written (retried) and changes on other nodes are not heard:
//!   presence goes stale, and lists show what this node last knew. When the subscription is
//!   back, each node rewrites its parts at once (as its routes), publishing those Redis lacked,
//!   and reads again the users it knows. A node that reads a friend's state before the
//!   friend's node has put it back sees them offline (its friends may be told so, after the
//!   quiet period), and is corrected by that node's publish moments later. Nothing else waits
//!   on presence.

mod tasks;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::ClusterConfig;
use super::redis::{Redis, RedisError};
use super::routes::{NodeLife, RoutesConfig};
use super::view::ClusterView;
use crate::api::ConnRef;
use crate::presence::{DeviceState, LocalPresence, PresenceStore, Shown, State, most_present};
use crate::store::UserId;
use wire::Parts;

/// What this node knows of one user beyond its own devices.
#[derive(Debug, Default)]
struct Known {
    /// Other nodes' parts, as last published.
    others: Parts,
    /// Last seen as Redis last had it.
    seen_ms: u64,
    /// What friends on this node were last told.
    published: Shown,
}

#[derive(Debug, Default)]
struct Users {
    known: HashMap<UserId, Known>,
    /// Users whose part here differs from what Redis has (or was not published yet).
    dirty: HashSet<UserId>,
    /// Users whose presence changed elsewhere, for the tracker to decide about.
    elsewhere: HashSet<UserId>,
}

pub struct ClusterPresence {
    prefix: String,
    me: NodeLife,
    config: RoutesConfig,
    redis: Redis,
    view: Arc<ArcSwap<ClusterView>>,
    /// This node's devices.
    local: LocalPresence,
    users: Mutex<Users>,
    /// Wakes the writer after the first change since its last flush.
    dirty_changed: tokio::sync::Notify,
    /// Wakes the writer to rewrite this node's parts at once: the subscription is back, and
    /// Redis may have restarted empty.
    resubscribed: tokio::sync::Notify,
    /// Wakes the backend's task that takes `take_elsewhere`.
    pub(crate) elsewhere_changed: tokio::sync::Notify,
    /// For the friends list's reads of Redis (made on a blocking thread).
    runtime: tokio::runtime::Handle,
    /// The subscription is up: other nodes' changes are heard.
    subscribed: AtomicBool,
}

impl ClusterPresence {
    /// Call on the runtime (the Redis connection is made lazily there). Tasks start with `run`.
    pub(crate) fn new(
        config: &ClusterConfig,
        started_at_ms: u64,
        view: Arc<ArcSwap<ClusterView>>,
    ) -> Result<Arc<Self>, RedisError> {
        Ok(Arc::new(Self {
            prefix: config.redis_key_prefix.clone(),
            me: NodeLife {
                node_id: config.node_id.as_str().into(),
                started_at_ms,
            },
            config: config.routes.clone(),
            redis: Redis::new(config)?,
            view,
            local: LocalPresence::default(),
            users: Mutex::default(),
            dirty_changed: tokio::sync::Notify::new(),
            resubscribed: tokio::sync::Notify::new(),
            elsewhere_changed: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::current(),
            subscribed: AtomicBool::new(false),
        }))
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Users whose presence changed on other nodes since the last call.
    pub(crate) fn take_elsewhere(&self) -> Vec<UserId> {
        self.users().elsewhere.drain().collect()
    }

    /// Whether other nodes' changes are heard now (the subscription is up).
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Relaxed)
    }

    /// Users with a part on another node known here (for tests and the overview).
    pub fn known_users(&self) -> usize {
        self.users().known.len()
    }

    /// This node's part and the user's known parts elsewhere, as one `Shown`.
    fn shown(&self, view: &ClusterView, mine: Shown, known: Option<&Known>) -> Shown {
        let others = known
            .into_iter()
            .flat_map(|k| k.others.iter())
            .filter(|(life, _)| *life.node_id != *self.me.node_id && live(view, life))
            .map(|(_, state)| *state);
        let state = most_present(std::iter::once(mine.state).chain(others));
        let seen = known.map_or(0, |k| k.seen_ms).max(mine.last_seen_ms);
        Shown {
            state,
            last_seen_ms: if state == State::Offline { seen } else { 0 },
        }
    }

    /// Forgets a user who shows offline everywhere once friends here were told so: the entry
    /// comes back with their next change (last seen is then read from Redis).
    fn forget_if_gone(&self, users: &mut Users, user: UserId) {
        let view = self.view.load();
        let gone = users.known.get(&user).is_some_and(|k| {
            k.published.state == State::Offline
                && !k.others.iter().any(|(life, _)| live(&view, life))
        });
        if gone && self.local.current(user).state == State::Offline {
            users.known.remove(&user);
        }
    }
}

/// The life is the one the view has: a node that left, or restarted since, does not count.
fn live(view: &ClusterView, life: &NodeLife) -> bool {
    view.nodes
        .iter()
        .any(|n| *n.record.node_id == *life.node_id && n.record.started_at_ms == life.started_at_ms)
}

impl PresenceStore for ClusterPresence {
    fn set_device(
        &self,
        user: UserId,
        device: ConnRef,
        state: Option<DeviceState>,
        now_ms: u64,
    ) -> Shown {
        let mut users = self.users();
        let before = self.local.current(user).state;
        let mine = self.local.set_device(user, device, state, now_ms);
        if mine.state != before {
            if users.dirty.is_empty() {
                self.dirty_changed.notify_one();
            }
            users.dirty.insert(user);
        }
        self.shown(&self.view.load(), mine, users.known.get(&user))
    }

    fn current(&self, user: UserId) -> Shown {
        let users = self.users();
        self.shown(
            &self.view.load(),
            self.local.current(user),
            users.known.get(&user),
        )
    }

    fn published(&self, users: &[UserId]) -> Vec<Shown> {
        let map = self.users();
        users
            .iter()
            .map(|u| {
                map.known
                    .get(u)
                    .map_or_else(Shown::default, |k| k.published)
            })
            .collect()
    }

    fn publish(&self, user: UserId, shown: Shown) {
        let mut users = self.users();
        users.known.entry(user).or_default().published = shown;
        self.forget_if_gone(&mut users, user);
    }

    fn listed(&self, users: &[UserId]) -> Vec<Shown> {
        let unknown: Vec<UserId> = {
            let map = self.users();
            users
                .iter()
                .copied()
                .filter(|u| !map.known.contains_key(u))
                .collect()
        };
        let fetched = if unknown.is_empty() {
            HashMap::new()
        } else {
            // A blocking thread (the list is built on one): wait here, within the deadline.
            match self.runtime.block_on(self.fetch(&unknown)) {
                Ok(fetched) => fetched,
                Err(err) => {
                    tracing::debug!(%err, "cluster: reading presence for a friends list failed; showing what this node knows");
                    HashMap::new()
                }
            }
        };
        let view = self.view.load();
        let mut map = self.users();
        users
            .iter()
            .map(|u| {
                if let Some(k) = map.known.get(u) {
                    return k.published;
                }
                let Some((seen_ms, others)) = fetched.get(u) else {
                    return self.shown(&view, self.local.current(*u), None);
                };
                let known = Known {
                    others: others.clone(),
                    seen_ms: *seen_ms,
                    published: Shown::default(),
                };
                let shown = self.shown(&view, self.local.current(*u), Some(&known));
                // Present: kept, so that their next change is told to friends here as one.
                if shown.state != State::Offline {
                    map.known.insert(
                        *u,
                        Known {
                            published: shown,
                            ..known
                        },
                    );
                }
                shown
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

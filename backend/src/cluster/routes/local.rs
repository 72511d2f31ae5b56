//! This node's routes: the devices logged in here, what of them Redis has, and the pipelines
//! that bring Redis up to date (a flush of what changed every `flush_ms`, a rewrite of
//! everything every `refresh_ms`). A login or a close only touches a map under a short lock:
//! no shard and no request ever waits on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use smallvec::SmallVec;

use super::wire;
use crate::api::ConnRef;
use crate::cluster::redis::{Redis, RedisError};
use crate::store::UserId;

#[derive(Debug, Clone)]
struct Device {
    conn: ConnRef,
    /// `{platform}/{device_id}`, the field's value.
    value: Box<str>,
}

#[derive(Debug, Default)]
struct User {
    /// Logged in here now.
    devices: SmallVec<[Device; 1]>,
    /// Fields Redis has (as far as this node knows).
    written: SmallVec<[ConnRef; 1]>,
    /// When the last change of the user's was published (ms since the epoch; 0: never).
    published_ms: u64,
}

/// Whether the other nodes have been told of a user's last change here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Not yet: waiting for the next flush, or in one.
    Pending,
    /// Its PUBLISH went out at this time (ms since the epoch; 0: nothing to tell).
    At(u64),
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, User>,
    /// Users whose devices differ from what Redis has, or whose change is not published yet.
    dirty: HashSet<UserId>,
    /// Users taken by a flush whose pipeline has not answered yet.
    publishing: HashSet<UserId>,
}

/// One user's part of a pipeline.
struct Write {
    user: UserId,
    set: Vec<(ConnRef, Box<str>)>,
    del: Vec<ConnRef>,
    /// The user has a device here after this write.
    here: bool,
}

pub struct Local {
    state: Mutex<State>,
    /// Wakes the writer after the first change since its last flush.
    pub(super) changed: tokio::sync::Notify,
}

impl Local {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn opened(&self, user: UserId, conn: ConnRef, value: String) {
        let mut state = self.state();
        let entry = state.users.entry(user).or_default();
        entry.devices.retain(|d| d.conn != conn);
        entry.devices.push(Device {
            conn,
            value: value.into(),
        });
        self.mark(&mut state, user);
    }

    pub fn closed(&self, user: UserId, conn: ConnRef) {
        let mut state = self.state();
        let Some(entry) = state.users.get_mut(&user) else {
            return;
        };
        let before = entry.devices.len();
        entry.devices.retain(|d| d.conn != conn);
        if entry.devices.len() != before {
            self.mark(&mut state, user);
        }
    }

    fn mark(&self, state: &mut State, user: UserId) {
        if state.dirty.is_empty() {
            self.changed.notify_one();
        }
        state.dirty.insert(user);
    }

    /// Users logged in here now (for tests and the admin view).
    pub fn users(&self) -> usize {
        self.state()
            .users
            .values()
            .filter(|u| !u.devices.is_empty())
            .count()
    }

    /// Takes up to `max` dirty users' writes: what to set and delete to make Redis match.
    fn take_dirty(&self, max: usize) -> Vec<Write> {
        let mut state = self.state();
        let users: Vec<UserId> = state.dirty.iter().copied().take(max).collect();
        let mut writes = Vec::with_capacity(users.len());
        for user in users {
            state.dirty.remove(&user);
            let Some(entry) = state.users.get(&user) else {
                continue;
            };
            let set = entry
                .devices
                .iter()
                .filter(|d| !entry.written.contains(&d.conn))
                .map(|d| (d.conn, d.value.clone()))
                .collect();
            let del = entry
                .written
                .iter()
                .filter(|c| !entry.devices.iter().any(|d| d.conn == **c))
                .copied()
                .collect();
            let here = !entry.devices.is_empty();
            state.publishing.insert(user);
            writes.push(Write {
                user,
                set,
                del,
                here,
            });
        }
        writes
    }

    /// The flush's PUBLISH of `writes` went out at `at_ms`.
    fn sent(&self, writes: &[Write], at_ms: u64) {
        let mut state = self.state();
        for w in writes {
            state.publishing.remove(&w.user);
            if let Some(entry) = state.users.get_mut(&w.user) {
                entry.published_ms = at_ms;
            }
        }
    }

    /// Whether `user`'s last change here has been published (`cluster/login_check.rs`).
    pub fn published(&self, user: UserId) -> Published {
        let state = self.state();
        if state.dirty.contains(&user) || state.publishing.contains(&user) {
            return Published::Pending;
        }
        Published::At(state.users.get(&user).map_or(0, |u| u.published_ms))
    }

    /// Every user's whole set of fields (the refresh), in pages of `max` users after `after`.
    fn page_all(&self, after: Option<UserId>, max: usize) -> Vec<Write> {
        let state = self.state();
        let mut users: Vec<UserId> = state
            .users
            .iter()
            .filter(|(u, e)| after.is_none_or(|a| **u > a) && !e.devices.is_empty())
            .map(|(u, _)| *u)
            .collect();
        users.sort_unstable();
        users.truncate(max);
        users
            .into_iter()
            .filter_map(|user| {
                let entry = state.users.get(&user)?;
                Some(Write {
                    user,
                    set: entry
                        .devices
                        .iter()
                        .map(|d| (d.conn, d.value.clone()))
                        .collect(),
                    del: Vec::new(),
                    here: true,
                })
            })
            .collect()
    }

    /// Redis has `writes` now: remember which fields it holds.
    fn written(&self, writes: &[Write]) {
        let mut state = self.state();
        for w in writes {
            let Some(entry) = state.users.get_mut(&w.user) else {
                continue;
            };
            entry.written.retain(|c| !w.del.contains(c));
            for (conn, _) in &w.set {
                if !entry.written.contains(conn) {
                    entry.written.push(*conn);
                }
            }
            if entry.devices.is_empty() && entry.written.is_empty() {
                state.users.remove(&w.user);
            }
        }
    }

    /// A write failed: its users stay dirty, to be tried again on the next flush.
    fn failed(&self, writes: &[Write]) {
        let mut state = self.state();
        for w in writes {
            state.publishing.remove(&w.user);
            state.dirty.insert(w.user);
        }
    }

    /// Forgets every device (the node is leaving): the next flush deletes their fields.
    pub fn clear(&self) {
        let mut state = self.state();
        let users: Vec<UserId> = state.users.keys().copied().collect();
        for user in users {
            if let Some(e) = state.users.get_mut(&user) {
                e.devices.clear();
            }
            state.dirty.insert(user);
        }
    }
}

/// Where and as whom the writer writes.
pub struct Writer<'a> {
    pub redis: &'a Redis,
    pub prefix: &'a str,
    pub node_id: &'a str,
    pub started_at_ms: u64,
    pub ttl_ms: u64,
    pub batch_users_max: usize,
}

impl Writer<'_> {
    /// Writes what changed since the last flush, in pipelines of `batch_users_max` users, each
    /// with one PUBLISH of its changes. A failed pipeline leaves its users dirty.
    pub async fn flush(&self, local: &Local) -> Result<usize, RedisError> {
        let mut users = 0;
        loop {
            let writes = local.take_dirty(self.batch_users_max);
            if writes.is_empty() {
                return Ok(users);
            }
            let changes: Vec<wire::Change> = writes.iter().map(|w| (w.user, w.here)).collect();
            if let Err(err) = self.write(&writes, Some(&changes)).await {
                local.failed(&writes);
                return Err(err);
            }
            metrics::counter!("ringchat_cluster_route_pubsub_messages_total", "direction" => "out")
                .increment(1);
            users += writes.len();
            local.written(&writes);
            local.sent(&writes, crate::time::now_ms());
        }
    }

    /// Rewrites every route of this node and its TTL (nothing published: nothing changed).
    pub async fn refresh(&self, local: &Local) -> Result<(), RedisError> {
        let mut after = None;
        loop {
            let writes = local.page_all(after, self.batch_users_max);
            let Some(last) = writes.last() else {
                return Ok(());
            };
            after = Some(last.user);
            self.write(&writes, None).await?;
            local.written(&writes);
        }
    }

    async fn write(
        &self,
        writes: &[Write],
        publish: Option<&[wire::Change]>,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        for w in writes {
            let key = wire::route_key(self.prefix, w.user);
            if !w.del.is_empty() {
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(&key);
                for conn in &w.del {
                    hdel.arg(wire::field(self.node_id, self.started_at_ms, *conn));
                }
                pipe.add_command(hdel).ignore();
            }
            if !w.set.is_empty() {
                let mut hset = redis::cmd("HSET");
                hset.arg(&key);
                for (conn, value) in &w.set {
                    hset.arg(wire::field(self.node_id, self.started_at_ms, *conn))
                        .arg(&**value);
                }
                pipe.add_command(hset)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(self.ttl_ms)
                    .ignore();
            }
        }
        if let Some(changes) = publish.filter(|c| !c.is_empty()) {
            pipe.cmd("PUBLISH")
                .arg(wire::channel(self.prefix))
                .arg(wire::message(self.node_id, self.started_at_ms, changes))
                .ignore();
        }
        metrics::counter!("ringchat_cluster_route_writes_total").increment(writes.len() as u64);
        self.redis.query::<()>(&pipe).await.inspect_err(|_| {
            metrics::counter!("ringchat_cluster_route_write_failures_total").increment(1);
        })
    }
}

#[cfg(test)]
mod published_tests {
    use super::{Local, Published};
    use crate::api::ConnRef;

    /// The login check's view: a change is pending until its flush's PUBLISH went out; a
    /// failed pipeline makes it pending again.
    #[test]
    fn a_change_is_pending_until_its_publish_went_out() {
        let local = Local::new();
        let conn = ConnRef { shard: 0, conn: 1 };
        assert_eq!(local.published(7), Published::At(0), "nothing to tell");
        local.opened(7, conn, "Web/d1".into());
        assert_eq!(
            local.published(7),
            Published::Pending,
            "waiting for a flush"
        );
        let writes = local.take_dirty(16);
        assert_eq!(local.published(7), Published::Pending, "in a flush");
        local.failed(&writes);
        assert_eq!(local.published(7), Published::Pending, "to be retried");
        let writes = local.take_dirty(16);
        local.written(&writes);
        local.sent(&writes, 1_234);
        assert_eq!(local.published(7), Published::At(1_234));
        local.closed(7, conn);
        assert_eq!(
            local.published(7),
            Published::Pending,
            "the close is a change too"
        );
    }
}

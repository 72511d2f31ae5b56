//! Cluster presence's tasks: the writer (this node's parts into Redis), the subscription (other
//! nodes' changes in), the watch on the live-node view (a node that leaves or comes back
//! changes what its users show), and the reads for friends lists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::ClusterPresence;
use super::wire::{self, Parts};
use crate::cluster::redis::{RedisError, Subscriber};
use crate::cluster::routes::NodeLife;
use crate::presence::{PresenceStore as _, State};
use crate::store::UserId;

/// Pause after a failed write before trying again.
const RETRY: Duration = Duration::from_millis(200);
/// How often the live-node view is compared with the last one seen.
const VIEW_CHECK: Duration = Duration::from_millis(100);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ClusterPresence {
    /// Runs the tasks until `stop` completes; then removes this node's parts (one pass,
    /// bounded by the Redis deadline per pipeline), which tells the other nodes.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let _subscribe = AbortOnDrop(tokio::spawn(Arc::clone(&self).subscribe()));
        let _view = AbortOnDrop(tokio::spawn(Arc::clone(&self).watch_view()));
        self.write(stop).await;
    }

    async fn write(&self, stop: impl std::future::Future<Output = ()>) {
        let mut refresh = tokio::time::interval(Duration::from_millis(self.config.refresh_ms));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flush_wait = Duration::from_millis(self.config.flush_ms);
        let mut failing = false;
        tokio::pin!(stop);
        loop {
            let result = tokio::select! {
                () = &mut stop => break,
                () = self.dirty_changed.notified() => {
                    // Gather what else changes meanwhile into the same pipeline.
                    tokio::time::sleep(flush_wait).await;
                    self.flush(false).await
                }
                _ = refresh.tick() => match self.refresh().await {
                    Ok(()) => self.flush(false).await,
                    Err(err) => Err(err),
                },
                // Redis may have restarted empty without a write of this node's failing (none
                // was due): the parts go back now, and the missing ones are published.
                () = self.resubscribed.notified() => match self.refresh().await {
                    Ok(()) => self.flush(false).await,
                    Err(err) => Err(err),
                },
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("cluster: presence writes reach Redis again");
                    // Redis may have restarted empty: put every part back now (the missing
                    // ones are flushed, and published, next).
                    failing = self.refresh().await.is_err();
                }
                Ok(()) => {}
                Err(err) => {
                    if !failing {
                        tracing::warn!(%err, "cluster: writing presence failed; retrying (other nodes see this node's users as they were meanwhile)");
                    }
                    failing = true;
                    tokio::time::sleep(RETRY).await;
                    self.dirty_changed.notify_one();
                }
            }
        }
        match self.flush(true).await {
            Ok(()) => tracing::info!("cluster: removed this node's presence"),
            Err(err) => {
                tracing::warn!(%err, "cluster: could not remove this node's presence; it expires after routes.ttl_ms")
            }
        }
    }

    /// Writes the parts of the dirty users (`leaving`: every user's part, as absent), one
    /// script call per user, `batch_users_max` per pipeline. A failed pipeline leaves its users
    /// dirty.
    async fn flush(&self, leaving: bool) -> Result<(), RedisError> {
        let field = wire::field(&self.me.node_id, self.me.started_at_ms);
        let channel = wire::channel(&self.prefix);
        let now = crate::time::now_ms();
        if leaving {
            // Only the users with a part here: the others' last seen is not ours.
            let here = self.local.present_users();
            self.users().dirty.extend(here);
        }
        loop {
            let users: Vec<UserId> = {
                let mut users = self.users();
                let batch: Vec<UserId> = users
                    .dirty
                    .iter()
                    .copied()
                    .take(self.config.batch_users_max.max(1))
                    .collect();
                for u in &batch {
                    users.dirty.remove(u);
                }
                batch
            };
            if users.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for &user in &users {
                let mine = self.local.current(user);
                let (digit, seen) = match (leaving, mine.state) {
                    (true, _) => (String::new(), now),
                    (false, State::Offline) => (String::new(), mine.last_seen_ms),
                    (false, state) => ((state.to_digit() as char).to_string(), 0),
                };
                pipe.cmd("EVAL")
                    .arg(wire::SET_PART)
                    .arg(2)
                    .arg(wire::presence_key(&self.prefix, user))
                    .arg(wire::seen_key(&self.prefix, user))
                    .arg(&field)
                    .arg(digit)
                    .arg(self.config.ttl_ms)
                    .arg(seen)
                    .arg(wire::LAST_SEEN_TTL_MS)
                    .arg(&channel)
                    .arg(user)
                    .ignore();
            }
            if let Err(err) = self.redis.query::<()>(&pipe).await {
                metrics::counter!("ringchat_cluster_presence_write_failures_total").increment(1);
                if !leaving {
                    self.users().dirty.extend(users);
                }
                return Err(err);
            }
            metrics::counter!("ringchat_cluster_presence_messages_total", "direction" => "out")
                .increment(users.len() as u64);
        }
    }

    /// Rewrites every present part of this node and its key's TTL. The one rule for what a
    /// rewrite publishes: a part Redis did not have (it restarted empty, was flushed, the key
    /// expired) makes its user dirty, so that the next flush publishes the whole state; the
    /// other nodes may have read the user's state without it (a re-read after subscribing) or
    /// been told it (another node's change), and nothing else would correct them. A part that
    /// was there publishes nothing: nothing changed.
    /// Present users' last seen is set to now too (one plain SET each, no script: this runs
    /// for every present user every `refresh_ms`): it is written otherwise only when a user's
    /// part goes offline, and a killed node never writes that, so its users showed the last
    /// seen from before their whole session.
    async fn refresh(&self) -> Result<(), RedisError> {
        let field = wire::field(&self.me.node_id, self.me.started_at_ms);
        let users = self.local.present_users();
        let now = crate::time::now_ms();
        let mut missing = Vec::new();
        for chunk in users.chunks(self.config.batch_users_max.max(1)) {
            let mut pipe = redis::pipe();
            let mut written = Vec::with_capacity(chunk.len());
            for &user in chunk {
                let state = self.local.current(user).state;
                if state == State::Offline {
                    continue;
                }
                written.push(user);
                let key = wire::presence_key(&self.prefix, user);
                // HSET answers how many fields it added: 1 when the part was missing.
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(&field)
                    .arg((state.to_digit() as char).to_string())
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(self.config.ttl_ms)
                    .ignore()
                    .cmd("SET")
                    .arg(wire::seen_key(&self.prefix, user))
                    .arg(now)
                    .arg("PX")
                    .arg(wire::LAST_SEEN_TTL_MS)
                    .ignore();
            }
            if written.is_empty() {
                continue;
            }
            let added: Vec<u64> = self.redis.query(&pipe).await?;
            missing.extend(
                written
                    .iter()
                    .zip(&added)
                    .filter(|(_, added)| **added > 0)
                    .map(|(user, _)| *user),
            );
        }
        if !missing.is_empty() {
            metrics::counter!("ringchat_cluster_presence_parts_restored_total")
                .increment(missing.len() as u64);
            let mut users = self.users();
            if users.dirty.is_empty() {
                self.dirty_changed.notify_one();
            }
            users.dirty.extend(missing);
        }
        Ok(())
    }

    /// Each user's last seen and parts, as Redis has them (one pipeline per `batch_users_max`).
    pub(super) async fn fetch(
        &self,
        users: &[UserId],
    ) -> Result<HashMap<UserId, (u64, Parts)>, RedisError> {
        let mut out = HashMap::with_capacity(users.len());
        for chunk in users.chunks(self.config.batch_users_max.max(1)) {
            let mut pipe = redis::pipe();
            for &user in chunk {
                pipe.cmd("HGETALL")
                    .arg(wire::presence_key(&self.prefix, user))
                    .cmd("GET")
                    .arg(wire::seen_key(&self.prefix, user));
            }
            let replies: Vec<redis::Value> = self.redis.query(&pipe).await?;
            for (user, pair) in chunk.iter().zip(replies.chunks(2)) {
                let [hash, seen] = pair else { continue };
                let parts = match hash {
                    redis::Value::Map(map) => map.iter().filter_map(|(f, v)| part(f, v)).collect(),
                    redis::Value::Array(flat) => flat
                        .chunks(2)
                        .filter_map(|fv| match fv {
                            [f, v] => part(f, v),
                            _ => None,
                        })
                        .collect(),
                    _ => Parts::new(),
                };
                let seen = match seen {
                    redis::Value::BulkString(b) => {
                        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok())
                    }
                    _ => None,
                };
                out.insert(*user, (seen.unwrap_or(0), parts));
            }
        }
        Ok(out)
    }

    async fn subscribe(self: Arc<Self>) {
        let ping_every = Duration::from_millis(self.config.refresh_ms.min(5_000));
        self.redis
            .listen(&wire::channel(&self.prefix), ping_every, &*self)
            .await;
    }

    fn apply(&self, payload: &[u8]) {
        metrics::counter!("ringchat_cluster_presence_messages_total", "direction" => "in")
            .increment(1);
        let Some((user, seen, parts)) = wire::parse_message(payload) else {
            tracing::debug!("cluster: skipping a presence message that does not parse");
            return;
        };
        self.update(user, seen, parts);
    }

    /// `user`'s state elsewhere is now `parts` (this node's own part is known here already).
    pub(super) fn update(&self, user: UserId, seen: u64, mut parts: Parts) {
        parts.retain(|(life, _)| *life.node_id != *self.me.node_id);
        let mut users = self.users();
        if parts.is_empty() && !users.known.contains_key(&user) {
            // Nothing here to correct, and the next change brings them back.
            if self.local.current(user).state == State::Offline {
                return;
            }
        }
        let known = users.known.entry(user).or_default();
        known.others = parts;
        known.seen_ms = known.seen_ms.max(seen);
        // Present nowhere and shown offline here already: nothing to keep (a list reads last
        // seen from Redis). The tracker still decides, to drop a push it had pending.
        if known.others.is_empty()
            && known.published.state == State::Offline
            && self.local.current(user).state == State::Offline
        {
            users.known.remove(&user);
        }
        if users.elsewhere.is_empty() {
            self.elsewhere_changed.notify_one();
        }
        users.elsewhere.insert(user);
    }

    /// After a (re)subscription: every user known here is read again.
    async fn reread_known(&self) {
        let users: Vec<UserId> = self.users().known.keys().copied().collect();
        if users.is_empty() {
            return;
        }
        match self.fetch(&users).await {
            Ok(fetched) => {
                for (user, (seen, parts)) in fetched {
                    self.update(user, seen, parts);
                }
            }
            Err(err) => {
                tracing::debug!(%err, "cluster: re-reading presence after subscribing failed")
            }
        }
    }

    /// A node that leaves the view (or comes back) changes what its users show: the users
    /// with a part there are decided again.
    async fn watch_view(self: Arc<Self>) {
        let mut last: HashSet<NodeLife> = HashSet::new();
        let mut tick = tokio::time::interval(VIEW_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now: HashSet<NodeLife> = self
                .view
                .load()
                .nodes
                .iter()
                .map(|n| NodeLife {
                    node_id: n.record.node_id.as_str().into(),
                    started_at_ms: n.record.started_at_ms,
                })
                .collect();
            if now == last {
                continue;
            }
            let moved: HashSet<&NodeLife> = now.symmetric_difference(&last).collect();
            let left_at = crate::time::now_ms();
            let mut users = self.users();
            let mut affected = Vec::new();
            for (user, known) in &mut users.known {
                let mut touched = false;
                for (life, state) in &known.others {
                    if moved.contains(life) {
                        touched = true;
                        // A node gone with the user present there: seen until about now.
                        if !now.contains(life) && *state != State::Offline {
                            known.seen_ms = known.seen_ms.max(left_at);
                        }
                    }
                }
                if touched {
                    affected.push(*user);
                }
            }
            if !affected.is_empty() {
                if users.elsewhere.is_empty() {
                    self.elsewhere_changed.notify_one();
                }
                users.elsewhere.extend(affected);
            }
            drop(users);
            last = now;
        }
    }
}

impl Subscriber for ClusterPresence {
    async fn subscribed(&self) {
        tracing::info!("cluster: subscribed to presence changes");
        // This node's parts go back at once (as its routes do): a part Redis lost is published
        // by the rewrite, which corrects a node that re-read the user without it.
        self.resubscribed.notify_one();
        // Changes published while this node was not listening are lost: read again what it
        // knows (users who came online meanwhile show with their next change, or when listed).
        // A part another node has not put back yet reads as absent; its publish follows.
        self.reread_known().await;
        self.subscribed.store(true, Relaxed);
    }

    fn message(&self, payload: &[u8]) {
        self.apply(payload);
    }

    fn lost(&self) {
        self.subscribed.store(false, Relaxed);
        tracing::warn!(
            "cluster: lost the presence subscription; other nodes' users show as last known until it is back"
        );
    }
}

fn part(field: &redis::Value, value: &redis::Value) -> Option<(NodeLife, State)> {
    match (field, value) {
        (redis::Value::BulkString(f), redis::Value::BulkString(v)) => wire::parse_part(f, v),
        _ => None,
    }
}

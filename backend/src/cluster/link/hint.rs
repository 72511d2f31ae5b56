//! "Pushes for this node were lost on the way": every logged-in session here is sent
//! `SyncNeeded` and catches up by seq (`Conversations`, then `Sync` where `max_seq` moved).
//! The node cannot tell which conversations the lost frames were in (a full queue drops whole
//! groups' frames, a link that breaks loses what was in flight), so it tells every session.
//!
//! Bounded: one hint per session per `cluster.sync_hint_interval_ms`. A request within the
//! interval after a hint is not dropped but folded into one hint at the interval's end (the
//! frames lost after the first hint need the second), so no loss goes unannounced and a storm
//! of `missed` batches costs one frame per session per interval.

use std::sync::Arc;
use std::time::Duration;

use ringchat_proto::Body;
use ringchat_proto::v1;
use tokio::sync::Notify;

use super::{Link, wire};
use crate::api::{ConnId, ShardEvent, encoded};

/// Requests for a hint, folded: a `Notify` keeps at most one permit while the task sleeps.
#[derive(Default)]
pub(crate) struct SyncHints {
    wake: Notify,
}

impl SyncHints {
    /// Asks for a hint to every session here; returns at once. `why` labels the metric.
    pub(crate) fn request(&self, why: &'static str) {
        metrics::counter!("ringchat_cluster_sync_hints_requested_total", "why" => why)
            .increment(1);
        self.wake.notify_one();
    }
}

/// The hint task (one per node, started by `Link::attach`): waits for a request, tells every
/// session, then waits out the interval (requests meanwhile become the next hint).
pub(crate) async fn run(link: Arc<Link>) {
    let interval = Duration::from_millis(link.config.sync_hint_interval_ms);
    let spread_ms = u32::try_from(link.config.sync_hint_interval_ms).unwrap_or(u32::MAX);
    let mut stop = link.stop.subscribe();
    loop {
        tokio::select! {
            () = link.hints.wake.notified() => {}
            _ = stop.changed() => break,
        }
        link.hint_every_session(spread_ms).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => break,
        }
    }
}

impl Link {
    /// One `SyncNeeded` frame, encoded once, to every logged-in session of this node: one
    /// fan-out event per shard. The session lock is held only to list the connections.
    async fn hint_every_session(&self, spread_ms: u32) {
        let mut per_shard: Vec<Vec<ConnId>> = vec![Vec::new(); self.shards.len()];
        for conn in self.sessions.read().conns() {
            if wire::is_remote(conn) {
                continue;
            }
            if let Some(list) = per_shard.get_mut(usize::from(conn.shard)) {
                list.push(conn.conn);
            }
        }
        let sessions: usize = per_shard.iter().map(Vec::len).sum();
        metrics::counter!("ringchat_cluster_sync_hints_total").increment(1);
        metrics::counter!("ringchat_cluster_sync_hint_sessions_total").increment(sessions as u64);
        tracing::info!(
            sessions,
            "cluster: pushes from a peer were lost on the way here; told every session to Sync"
        );
        let frame = encoded(0, Body::SyncNeeded(v1::SyncNeeded { spread_ms }));
        for (shard, conns) in per_shard.into_iter().enumerate() {
            if !conns.is_empty() {
                let event = ShardEvent::Fanout {
                    conns,
                    frame: frame.clone(),
                };
                // A shard that has stopped (shutdown) takes nothing more.
                let _ = self.shards[shard].send(event).await;
            }
        }
    }
}

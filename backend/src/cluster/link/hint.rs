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
        metrics::counter!("ringchat_cluster_sync_hints_requested_total", "why" => why).increment(1);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use ringchat_proto::v1::Platform;
    use tokio::sync::mpsc;

    use super::run;
    use crate::api::{ConnRef, ShardEvent};
    use crate::cluster::ClusterConfig;
    use crate::cluster::link::Link;
    use crate::groups::online::GroupOnline;
    use crate::sessions::{Session, Sessions, SharedSessions};

    fn session(shard: u16, conn: u64) -> Session {
        Session {
            conn: ConnRef { shard, conn },
            device_id: format!("d{conn}").into(),
            platform: Platform::Web,
            token_hash: [0; 32],
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            opened_at_ms: 0,
            token_expires_at_ms: u64::MAX,
        }
    }

    /// Connections a shard was sent `SyncNeeded`, per event.
    fn hinted(rx: &mut mpsc::Receiver<ShardEvent>) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                ShardEvent::Fanout { mut conns, frame } => {
                    let decoded = ringchat_proto::decode(&mut frame[..].into(), 1 << 20)
                        .expect("a frame")
                        .expect("whole");
                    assert!(matches!(
                        decoded.body,
                        Some(ringchat_proto::Body::SyncNeeded(_))
                    ));
                    conns.sort_unstable();
                    out.push(conns);
                }
                _ => panic!("only hints are sent"),
            }
        }
        out
    }

    /// The next hint event on `rx` (panics after 10 s), with when it came.
    async fn next(rx: &mut mpsc::Receiver<ShardEvent>) -> (Vec<Vec<u64>>, Instant) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = hinted(rx);
            if !got.is_empty() {
                return (got, Instant::now());
            }
            assert!(Instant::now() < deadline, "no hint");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn every_session_is_hinted_once_per_interval_and_a_later_loss_is_not_left_out() {
        let interval = Duration::from_millis(200);
        let config = ClusterConfig {
            sync_hint_interval_ms: interval.as_millis() as u64,
            ..ClusterConfig::default()
        };
        let (tx0, mut rx0) = mpsc::channel(16);
        let (tx1, mut rx1) = mpsc::channel(16);
        let sessions = SharedSessions::new(Sessions::new(4, vec![]));
        {
            let mut s = sessions.write();
            s.open(1, session(0, 10)).unwrap();
            s.open(2, session(1, 20)).unwrap();
            s.open(2, session(0, 11)).unwrap();
        }
        let link = Link::new(
            &config,
            vec![tx0, tx1],
            sessions,
            Arc::new(GroupOnline::new(2)),
            100,
            64 << 10,
        )
        .expect("two shards");
        tokio::spawn(run(Arc::clone(&link)));
        let asked = Instant::now();
        link.hints.request("missed");
        let (first, first_at) = next(&mut rx0).await;
        assert_eq!(first, vec![vec![10, 11]]);
        assert_eq!(next(&mut rx1).await.0, vec![vec![20]]);
        // Three more losses right after: one hint for them, an interval after the first.
        for _ in 0..3 {
            link.hints.request("missed");
        }
        let (second, second_at) = next(&mut rx0).await;
        assert_eq!(second, vec![vec![10, 11]], "folded into one");
        assert!(
            second_at.duration_since(asked) >= interval,
            "at most one per interval: {:?} apart",
            second_at.duration_since(first_at)
        );
        assert_eq!(next(&mut rx1).await.0, vec![vec![20]]);
        // Nothing asked since: nothing sent over the next intervals.
        tokio::time::sleep(3 * interval).await;
        assert!(hinted(&mut rx0).is_empty() && hinted(&mut rx1).is_empty());
        link.shutdown();
    }
}

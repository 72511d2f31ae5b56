//! Nodes that enter this node's view. Until then this node sent them nothing: a push for a
//! user whose device is there, a group's frames for its members there, a kick of a user's
//! sessions there, went to the nodes of the view only (a node that has just joined is missing
//! from the others' views for up to one of their heartbeats; a node away for `node_ttl_ms`
//! left them; before this node joined, its view had no node at all). So a node that enters
//! the view gets `missed` on its peer's first batch (the peer is made, and dialed, at once),
//! and tells its sessions to Sync (`hint.rs`); and its peer is handed the kicks of this
//! node's log (`kicks.rs` `KickLog`), every node of the first view after joining included.
//! Evidence, not a timer: however late this node's view catches up, the announcement follows
//! every frame it left out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Link;
use super::kicks::{Kick, KickLog};

pub(crate) struct Newcomers {
    look: Mutex<Look>,
    /// Frames were fanned out while this node had not joined (an owner taking forwarded writes
    /// in the moment between its record reaching Redis and its view being read): nobody got
    /// them, so every node of its first view is a newcomer.
    pub(crate) fanned_unjoined: AtomicBool,
}

/// What the sweep compares each view with, under one lock with the kick log: a kick logs
/// itself and reads the view under it (`Link::kick_every_peer`).
pub(crate) struct Look {
    /// The other nodes of the view as last looked at; `None` before this node joined.
    known: Option<HashSet<String>>,
    pub(crate) kicks: KickLog,
}

/// One look at a view: the nodes new in it, which of them may have missed frames, and the
/// kicks to hand them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Entered {
    /// (node id, advertise address) of every node new in the view.
    pub(crate) nodes: Vec<(String, String)>,
    /// Whether they are told they may have missed frames.
    pub(crate) missed: bool,
    /// The kick log as it is: each of `nodes` is handed all of it.
    pub(crate) kicks: Vec<(u64, Option<Box<str>>, Kick)>,
}

impl Newcomers {
    /// `kicks_max`: `cluster.peer_kicks_pending_max`; `window_ms`: `kicks::kick_log_window_ms`.
    pub(crate) fn new(kicks_max: usize, window_ms: u64) -> Self {
        Self {
            look: Mutex::new(Look {
                known: None,
                kicks: KickLog::new(kicks_max, window_ms),
            }),
            fanned_unjoined: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Look> {
        self.look.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Look {
    /// Compares the view's other nodes (`others`: id and address; `joined`, `fresh`: the
    /// view's) with the last look at `now`. `fanned_unjoined`: frames went out before this
    /// node joined. Returns the newcomers and how many nodes are known.
    pub(crate) fn look<'a>(
        &mut self,
        others: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        joined: bool,
        fresh: bool,
        now: Instant,
        fanned_unjoined: impl FnOnce() -> bool,
    ) -> (Entered, usize) {
        self.kicks.expire(now);
        if !joined {
            return (Entered::default(), 0);
        }
        let first = self.known.is_none();
        let known = self.known.get_or_insert_with(HashSet::new);
        known.retain(|id| others.clone().any(|(n, _)| n == id));
        let mut entered = Entered {
            missed: !first || fanned_unjoined(),
            ..Entered::default()
        };
        for (id, addr) in others {
            if known.insert(id.to_owned()) {
                entered.nodes.push((id.to_owned(), addr.to_owned()));
            }
        }
        if !entered.nodes.is_empty() {
            entered.kicks = self
                .kicks
                .entries()
                .map(|e| (e.user, e.device.clone(), e.kick))
                .collect();
        }
        // A fresh view holds every node whose record is in Redis (within a heartbeat): the
        // kicks that waited for one are handed out now, their window starts.
        if fresh {
            self.kicks.handed_out(now);
        }
        (entered, known.len())
    }
}

impl Link {
    /// Marks `missed` for every node new in the view since the last look, and hands it the
    /// kick log (run by the sweeper).
    pub(super) fn welcome_newcomers(self: &Arc<Self>) {
        let Some(view) = self.view_nodes() else {
            return;
        };
        let others = view
            .nodes
            .iter()
            .filter(|n| n.record.node_id != self.me)
            .map(|n| (n.record.node_id.as_str(), n.record.advertise_addr.as_str()));
        let (entered, welcomed) =
            self.newcomers
                .lock()
                .look(others, view.joined, view.fresh, Instant::now(), || {
                    self.newcomers.fanned_unjoined.swap(false, Relaxed)
                });
        if !view.joined {
            return;
        }
        for (id, addr) in entered.nodes {
            let Some(peer) = self.peer(&id, &addr) else {
                continue;
            };
            if !entered.kicks.is_empty() {
                metrics::counter!("ringchat_cluster_kicks_seeded_total", "peer" => id.clone())
                    .increment(entered.kicks.len() as u64);
                tracing::info!(peer = %id, kicks = entered.kicks.len(), "cluster: a node entered the view; it is handed the kicks issued lately");
                peer.seed_kicks(&entered.kicks);
            }
            if entered.missed {
                metrics::counter!("ringchat_cluster_peers_new_in_view_total", "peer" => id.clone())
                    .increment(1);
                tracing::info!(peer = %id, "cluster: a node entered the view; it is told it may have missed pushes");
                peer.missed();
            }
        }
        // After the announcements: a node that shows every other node here has told each
        // newcomer (tests wait on it before they count `missed` batches).
        metrics::gauge!("ringchat_cluster_peers_welcomed").set(welcomed as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::link::kicks;
    use crate::cluster::link::peer::Peer;
    use ringchat_proto::v1::{KickReason, node_item::Item};

    fn k(reason: KickReason, at: u64) -> Kick {
        Kick {
            reason: reason as i32,
            issued_at_ms: at,
        }
    }

    fn ids(entered: &Entered) -> Vec<&str> {
        entered.nodes.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Kicks issued before this node joined go to every node of its first view; a node that
    /// enters later within the window gets them too, past it not; a node back in the view
    /// after it left is handed them again.
    #[test]
    fn nodes_entering_the_view_are_handed_the_kick_log() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let newcomers = Newcomers::new(16, 1_000);
        let mut look = newcomers.lock();
        let changed = k(KickReason::PasswordChanged, 1);
        look.kicks.log(7, None, changed, ms(0), false);
        let nodes = |ids: &'static [&'static str]| ids.iter().map(|id| (*id, "addr"));
        // Not joined: nothing seen, nothing handed out (kept past any window).
        let (entered, _) = look.look(nodes(&[]), false, false, ms(10_000), || false);
        assert_eq!(entered, Entered::default());
        // The first view: every node is handed the log, none is told it missed frames.
        let (entered, known) = look.look(nodes(&["b", "c"]), true, true, ms(20_000), || false);
        assert_eq!((ids(&entered), known), (vec!["b", "c"], 2));
        assert_eq!(entered.kicks, vec![(7, None, changed)]);
        assert!(!entered.missed);
        // d enters within the window from the hand-out (20 000): handed it, and told.
        let revoked = k(KickReason::DeviceRevoked, 2);
        look.kicks.log(8, Some("phone"), revoked, ms(20_500), true);
        let (entered, _) = look.look(nodes(&["b", "c", "d"]), true, true, ms(20_900), || false);
        assert_eq!(ids(&entered), ["d"]);
        assert!(entered.missed);
        assert_eq!(
            entered.kicks,
            vec![(7, None, changed), (8, Some("phone".into()), revoked)]
        );
        // c leaves and comes back past the first kick's window: handed what is left.
        look.look(nodes(&["b", "d"]), true, true, ms(21_000), || false);
        let (entered, _) = look.look(nodes(&["b", "c", "d"]), true, true, ms(21_100), || false);
        assert_eq!(ids(&entered), ["c"]);
        assert_eq!(entered.kicks, vec![(8, Some("phone".into()), revoked)]);
        // No newcomer: nothing handed out.
        let (entered, _) = look.look(nodes(&["b", "c", "d"]), true, true, ms(21_200), || false);
        assert_eq!(
            entered,
            Entered {
                missed: true,
                ..Entered::default()
            }
        );
    }

    /// A stale view (Redis away) keeps a kick issued meanwhile until a fresh view hands it out.
    #[test]
    fn a_kick_issued_under_a_stale_view_waits_for_a_fresh_one() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let newcomers = Newcomers::new(16, 1_000);
        let mut look = newcomers.lock();
        let nodes = |ids: &'static [&'static str]| ids.iter().map(|id| (*id, "addr"));
        look.look(nodes(&["b"]), true, true, ms(0), || false);
        let changed = k(KickReason::PasswordChanged, 1);
        look.kicks.log(7, None, changed, ms(100), false);
        look.look(nodes(&["b"]), true, false, ms(50_000), || false);
        let (entered, _) = look.look(nodes(&["b", "c"]), true, true, ms(60_000), || false);
        assert_eq!(ids(&entered), ["c"]);
        assert_eq!(entered.kicks, vec![(7, None, changed)]);
    }

    /// A seeded peer remembers the log's kicks until confirmed and queues them now.
    #[test]
    fn a_seeded_peer_queues_and_remembers_the_logs_kicks() {
        let peer = Peer::new(
            "c".into(),
            0,
            "127.0.0.1:9".into(),
            64,
            64,
            Arc::new(crate::cluster::link::queue::Heartbeats::new(1_000)),
        );
        let changed = k(KickReason::PasswordChanged, 1);
        let log = vec![(7, None, changed), (8, Some("phone".into()), changed)];
        peer.seed_kicks(&log);
        let want = vec![
            kicks::item(7, None, changed),
            kicks::item(8, Some("phone"), changed),
        ];
        assert_eq!(peer.take_queued(), want);
        let mut remembered = peer.kicks_waiting();
        remembered.sort_by_key(|i| match &i.item {
            Some(Item::Kick(k)) => k.user_id,
            _ => 0,
        });
        assert_eq!(
            remembered, want,
            "sent again on the next stream until confirmed"
        );
    }
}

//! Which nodes other users are on, as this node last heard: a bounded map (CLOCK eviction: a
//! hit sets a bit, eviction sweeps and skips recently hit entries once), kept fresh by the
//! other nodes' published changes. A fill racing a published change must not put back what
//! the change replaced: users being fetched are tracked, and a change marks them dirty, which
//! makes the fill leave them out (the next lookup fetches them again).
//!
//! "On no node" is kept for a short while only (`empty_ttl_ms`): it is what a fill reads
//! while Redis has lost a key (a failover that lost writes, a flush) with the subscription
//! still up, and kept for good it would stop the user's pushes until they log in again. The
//! nodes rewrite their routes every `refresh_ms`, so one refresh later the key is back.
//!
//! A non-empty entry can be wrong the same way (a node's fields missing from what a fill
//! read: pruned while it was out of the view, or lost by Redis), and nothing published
//! repairs it (a node rewriting its fields publishes nothing). Two bounds: an entry that
//! lacks a node coming back into the view, filled since that node left it, is dropped
//! (`rejoined`); and every entry is read again once `nodes_ttl_ms` old, at its next lookup,
//! which still answers from the entry meanwhile (`Lookup::Refill`): the message path never
//! waits, and a busy user's pushes never go to every node while the entry is re-read.

use std::collections::{HashMap, HashSet};

use smallvec::SmallVec;

use super::wire::NodeLife;
use crate::store::UserId;

#[derive(Debug)]
struct Entry {
    nodes: SmallVec<[NodeLife; 2]>,
    hit: bool,
    /// When the fill that wrote `nodes` ended (a published change leaves it).
    filled_ms: u64,
    /// From when the entry is read again: an empty one is a miss from then on, a non-empty
    /// one answers and is refilled. `filled_ms` + `empty_ttl_ms` or `nodes_ttl_ms`; 0 when a
    /// published change emptied it (asked again).
    due_ms: u64,
    /// A refill was asked for (the fill takes the user although the entry is there).
    refilling: bool,
}

/// Stale ring slots tolerated beyond twice the entries, in slots, before the ring is compacted.
const RING_SLACK: usize = 1_024;

#[derive(Debug)]
pub struct Cache {
    entries: HashMap<UserId, Entry>,
    /// Users in insertion order for the CLOCK sweep (may name users since removed, or a user
    /// twice after a removal and a new fill): compacted once it is over twice the entries
    /// plus `RING_SLACK`, so lookups that drop expired entries cannot grow it without bound.
    ring: Vec<UserId>,
    hand: usize,
    max: usize,
    empty_ttl_ms: u64,
    nodes_ttl_ms: u64,
    /// Users being fetched: `true` once a published change about them arrived meanwhile.
    fetching: HashMap<UserId, bool>,
}

pub enum Lookup<'a> {
    Hit(&'a [NodeLife]),
    /// A hit on an entry due to be read again: use it, and have the fill fetch the user.
    Refill(&'a [NodeLife]),
    Miss,
}

impl Cache {
    /// `empty_ttl_ms`: how long "on no node" is believed, and the pause before a refill is
    /// asked again; `nodes_ttl_ms`: the age at which any entry is read again.
    pub fn new(max: usize, empty_ttl_ms: u64, nodes_ttl_ms: u64) -> Self {
        Self {
            entries: HashMap::new(),
            ring: Vec::new(),
            hand: 0,
            max: max.max(1),
            empty_ttl_ms,
            nodes_ttl_ms,
            fetching: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// One hash lookup, whatever the outcome (the message path asks for every recipient).
    pub fn get(&mut self, user: UserId, now_ms: u64) -> Lookup<'_> {
        let Some(e) = self.entries.get_mut(&user) else {
            return Lookup::Miss;
        };
        e.hit = true;
        if now_ms < e.due_ms {
            return Lookup::Hit(&e.nodes);
        }
        // Due: the fill takes the user again (and replaces the entry).
        e.refilling = true;
        if e.nodes.is_empty() {
            return Lookup::Miss;
        }
        // Asked once; again after a pause if this refill never lands (a full fill queue, a
        // failed read).
        e.due_ms = now_ms.saturating_add(self.empty_ttl_ms);
        Lookup::Refill(&e.nodes)
    }

    #[cfg(test)]
    pub fn contains(&self, user: UserId) -> bool {
        self.entries.contains_key(&user)
    }

    /// The fill is about to ask Redis for `users`: returns those not known (or due for a
    /// refill) nor being fetched.
    pub fn fetching(&mut self, users: &[UserId]) -> Vec<UserId> {
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            if self.entries.get(u).is_none_or(|e| e.refilling) && !self.fetching.contains_key(u) {
                self.fetching.insert(*u, false);
                out.push(*u);
            }
        }
        out
    }

    /// The fill's answer for `user` (`None`: the fetch failed). Left out when a change about
    /// the user arrived since the fetch began.
    pub fn filled(&mut self, user: UserId, nodes: Option<SmallVec<[NodeLife; 2]>>, now_ms: u64) {
        let dirty = self.fetching.remove(&user).unwrap_or(true);
        if let Some(nodes) = nodes
            && !dirty
        {
            self.insert(user, nodes, now_ms);
        }
    }

    /// Another node published that `user` has (or no longer has) a device on `node`.
    pub fn changed(&mut self, user: UserId, node: &NodeLife, here: bool) {
        if let Some(e) = self.entries.get_mut(&user) {
            // A newer life of the node replaces the older one's routes.
            e.nodes.retain(|n| n.node_id != node.node_id);
            if here {
                e.nodes.push(node.clone());
            }
            if e.nodes.is_empty() {
                e.due_ms = 0;
            }
        }
        // A fill (or refill) under way read Redis before this change: its answer is older.
        if let Some(dirty) = self.fetching.get_mut(&user) {
            *dirty = true;
        }
    }

    /// Nodes back in the view, each with when it left (ms): an entry filled since then that
    /// lacks the node may have been read while its fields were pruned, or before it rewrote
    /// them (it publishes nothing when it does), so it is dropped and asked again; fills
    /// under way are left out for the same reason. A scan of the cache, once per node that
    /// comes back, never on the message path.
    pub fn rejoined(&mut self, back: &[(std::sync::Arc<str>, u64)]) {
        self.entries.retain(|_, e| {
            !back.iter().any(|(node, left_ms)| {
                e.filled_ms >= *left_ms && !e.nodes.iter().any(|n| n.node_id == *node)
            })
        });
        for dirty in self.fetching.values_mut() {
            *dirty = true;
        }
    }

    /// Forgets everything (the published changes may have been missed).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.ring.clear();
        self.hand = 0;
        for dirty in self.fetching.values_mut() {
            *dirty = true;
        }
    }

    fn insert(&mut self, user: UserId, nodes: SmallVec<[NodeLife; 2]>, now_ms: u64) {
        let ttl_ms = if nodes.is_empty() {
            self.empty_ttl_ms
        } else {
            self.nodes_ttl_ms
        };
        let due_ms = now_ms.saturating_add(ttl_ms);
        if let Some(e) = self.entries.get_mut(&user) {
            e.nodes = nodes;
            e.filled_ms = now_ms;
            e.due_ms = due_ms;
            e.refilling = false;
            return;
        }
        while self.entries.len() >= self.max {
            self.evict_one();
        }
        self.entries.insert(
            user,
            Entry {
                nodes,
                hit: false,
                filled_ms: now_ms,
                due_ms,
                refilling: false,
            },
        );
        self.ring.push(user);
        if self.ring.len() > 2 * self.entries.len() + RING_SLACK {
            self.compact();
        }
    }

    /// Drops the ring's slots of removed users and repeated ones (amortised: done once the
    /// ring has doubled past the entries).
    fn compact(&mut self) {
        let entries = &self.entries;
        let mut seen = HashSet::with_capacity(entries.len());
        self.ring
            .retain(|u| entries.contains_key(u) && seen.insert(*u));
        self.hand = 0;
    }

    fn evict_one(&mut self) {
        // The ring holds every entry (and maybe removed users), so two sweeps always find one.
        loop {
            if self.ring.is_empty() {
                return;
            }
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let user = self.ring[self.hand];
            match self.entries.get_mut(&user) {
                Some(e) if e.hit => {
                    e.hit = false;
                    self.hand += 1;
                }
                Some(_) => {
                    self.entries.remove(&user);
                    self.ring.swap_remove(self.hand);
                    return;
                }
                None => {
                    self.ring.swap_remove(self.hand);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(id: &str) -> NodeLife {
        NodeLife {
            node_id: id.into(),
            started_at_ms: 1,
        }
    }

    fn nodes(c: &mut Cache, user: UserId) -> Option<Vec<String>> {
        match c.get(user, 0) {
            Lookup::Hit(n) | Lookup::Refill(n) => {
                Some(n.iter().map(|n| n.node_id.to_string()).collect())
            }
            Lookup::Miss => None,
        }
    }

    #[test]
    fn a_change_during_a_fill_wins_over_the_fill() {
        let mut c = Cache::new(10, 1_000, 100_000);
        c.fetching(&[1, 2]);
        c.changed(1, &life("b"), true);
        c.filled(1, Some([life("a")].into_iter().collect()), 0);
        c.filled(2, Some([life("a")].into_iter().collect()), 0);
        assert_eq!(nodes(&mut c, 1), None, "dirty: left for the next fetch");
        assert_eq!(nodes(&mut c, 2), Some(vec!["a".into()]));
        c.changed(2, &life("b"), true);
        c.changed(2, &life("a"), false);
        assert_eq!(nodes(&mut c, 2), Some(vec!["b".into()]));
    }

    #[test]
    fn bounded_and_recently_hit_entries_stay() {
        let mut c = Cache::new(3, 1_000, 100_000);
        for u in 1..=3 {
            c.fetching(&[u]);
            c.filled(u, Some(SmallVec::new()), 0);
        }
        assert!(nodes(&mut c, 1).is_some());
        c.fetching(&[4]);
        c.filled(4, Some(SmallVec::new()), 0);
        assert_eq!(c.len(), 3);
        assert!(c.contains(1), "hit since inserted: kept");
        assert!(c.contains(4));
        for u in 5..100 {
            c.fetching(&[u]);
            c.filled(u, Some(SmallVec::new()), 0);
            assert!(c.len() <= 3);
        }
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn entries_that_expire_and_are_filled_again_do_not_grow_the_ring() {
        let mut c = Cache::new(10, 1_000, 100_000);
        let mut now = 0;
        for i in 0..10_000u64 {
            let u = i % 3;
            c.fetching(&[u]);
            c.filled(u, Some(SmallVec::new()), now);
            now += 1_000;
            assert!(matches!(c.get(u, now), Lookup::Miss), "expired");
            // Compacted past twice the entries plus the slack: bounded by the cache's size.
            assert!(
                c.ring.len() <= 2 * c.max + RING_SLACK + 1,
                "ring of {} slots for {} entries",
                c.ring.len(),
                c.len()
            );
        }
        // The cache still works after compactions.
        c.fetching(&[7]);
        c.filled(7, Some([life("a")].into_iter().collect()), now);
        assert_eq!(nodes(&mut c, 7), Some(vec!["a".into()]));
    }

    #[test]
    fn on_no_node_is_believed_for_a_while_only() {
        let mut c = Cache::new(10, 1_000, 100_000);
        c.fetching(&[1, 2]);
        c.filled(1, Some(SmallVec::new()), 100);
        c.filled(2, Some([life("a")].into_iter().collect()), 100);
        assert!(matches!(c.get(1, 1_099), Lookup::Hit(n) if n.is_empty()));
        assert!(matches!(c.get(1, 1_100), Lookup::Miss), "asked again");
        assert!(matches!(c.get(2, 99_000), Lookup::Hit(n) if n.len() == 1));
        // Emptied by a published change: asked again at the next lookup.
        c.changed(2, &life("a"), false);
        assert!(matches!(c.get(2, 99_000), Lookup::Miss));
    }

    fn of(lives: &[&str]) -> Option<SmallVec<[NodeLife; 2]>> {
        Some(lives.iter().map(|id| life(id)).collect())
    }

    #[test]
    fn every_entry_is_read_again_once_old_and_answers_meanwhile() {
        let mut c = Cache::new(10, 1_000, 5_000);
        c.fetching(&[1]);
        c.filled(1, of(&["a"]), 0);
        assert!(matches!(c.get(1, 4_999), Lookup::Hit(n) if n.len() == 1));
        assert!(c.fetching(&[1]).is_empty(), "not due: not fetched again");
        assert!(matches!(c.get(1, 5_000), Lookup::Refill(n) if n.len() == 1));
        assert!(
            matches!(c.get(1, 5_001), Lookup::Hit(_)),
            "asked for once, not at every lookup"
        );
        assert_eq!(
            c.fetching(&[1]),
            vec![1],
            "the fill takes it although cached"
        );
        c.filled(1, of(&["a", "b"]), 5_100);
        assert!(matches!(c.get(1, 5_200), Lookup::Hit(n) if n.len() == 2));
        assert!(c.fetching(&[1]).is_empty());
        // A refill that never lands (a full queue, a failed read) is asked for again.
        assert!(matches!(c.get(1, 10_100), Lookup::Refill(_)));
        c.fetching(&[1]);
        c.filled(1, None, 10_150);
        assert!(matches!(c.get(1, 11_000), Lookup::Hit(_)));
        assert!(matches!(c.get(1, 11_100), Lookup::Refill(_)));
    }

    #[test]
    fn a_change_during_a_refill_wins_over_the_refill() {
        let mut c = Cache::new(10, 1_000, 5_000);
        c.fetching(&[1]);
        c.filled(1, of(&["a"]), 0);
        assert!(matches!(c.get(1, 5_000), Lookup::Refill(_)));
        assert_eq!(c.fetching(&[1]), vec![1]);
        c.changed(1, &life("b"), true);
        c.filled(1, of(&["a"]), 5_100);
        assert_eq!(nodes(&mut c, 1), Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn entries_filled_while_a_node_was_away_and_lacking_it_go_when_it_is_back() {
        let mut c = Cache::new(10, 1_000, 100_000);
        c.fetching(&[1, 2, 3, 4]);
        c.filled(1, of(&["a"]), 100);
        c.filled(2, of(&["a"]), 300);
        c.filled(3, of(&["a", "b"]), 300);
        // b left the view at 200 and is back: user 2's entry may lack it for good.
        c.rejoined(&[("b".into(), 200)]);
        assert_eq!(
            nodes(&mut c, 1),
            Some(vec!["a".into()]),
            "filled before b left"
        );
        assert_eq!(nodes(&mut c, 2), None, "asked again");
        assert_eq!(nodes(&mut c, 3), Some(vec!["a".into(), "b".into()]));
        c.filled(4, of(&["a"]), 400);
        assert_eq!(nodes(&mut c, 4), None, "a fill under way is left out");
    }
}

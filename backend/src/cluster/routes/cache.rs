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

use std::collections::{HashMap, HashSet};

use smallvec::SmallVec;

use super::wire::NodeLife;
use crate::store::UserId;

#[derive(Debug)]
struct Entry {
    nodes: SmallVec<[NodeLife; 2]>,
    hit: bool,
    /// When the fill that wrote `nodes` ended: an empty entry is a miss from
    /// `filled_ms + empty_ttl_ms` on. 0 when a published change emptied it (asked again).
    filled_ms: u64,
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
    /// Users being fetched: `true` once a published change about them arrived meanwhile.
    fetching: HashMap<UserId, bool>,
}

pub enum Lookup<'a> {
    Hit(&'a [NodeLife]),
    Miss,
}

impl Cache {
    pub fn new(max: usize, empty_ttl_ms: u64) -> Self {
        Self {
            entries: HashMap::new(),
            ring: Vec::new(),
            hand: 0,
            max: max.max(1),
            empty_ttl_ms,
            fetching: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&mut self, user: UserId, now_ms: u64) -> Lookup<'_> {
        let expired = self.entries.get(&user).is_some_and(|e| {
            e.nodes.is_empty() && now_ms >= e.filled_ms.saturating_add(self.empty_ttl_ms)
        });
        if expired {
            self.entries.remove(&user);
        }
        match self.entries.get_mut(&user) {
            Some(e) => {
                e.hit = true;
                Lookup::Hit(&e.nodes)
            }
            None => Lookup::Miss,
        }
    }

    #[cfg(test)]
    pub fn contains(&self, user: UserId) -> bool {
        self.entries.contains_key(&user)
    }

    /// The fill is about to ask Redis for `users`: returns those not known nor being fetched.
    pub fn fetching(&mut self, users: &[UserId]) -> Vec<UserId> {
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            if !self.entries.contains_key(u) && !self.fetching.contains_key(u) {
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
            e.filled_ms = 0;
        } else if let Some(dirty) = self.fetching.get_mut(&user) {
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
        if let Some(e) = self.entries.get_mut(&user) {
            e.nodes = nodes;
            e.filled_ms = now_ms;
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
            Lookup::Hit(n) => Some(n.iter().map(|n| n.node_id.to_string()).collect()),
            Lookup::Miss => None,
        }
    }

    #[test]
    fn a_change_during_a_fill_wins_over_the_fill() {
        let mut c = Cache::new(10, 1_000);
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
        let mut c = Cache::new(3, 1_000);
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
        let mut c = Cache::new(10, 1_000);
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
        let mut c = Cache::new(10, 1_000);
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
}

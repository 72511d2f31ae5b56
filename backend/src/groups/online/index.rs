//! Which connections of each group are online, per shard, kept so that delivering a group
//! message costs the shards, not the members: resolving a group's audience clones one shared
//! list per shard (an `Arc`), and each shard walks its own list. The total member count appears
//! nowhere on this path.
//!
//! A list is changed in place while nobody else holds it; a shard still walking the previous
//! snapshot makes the change copy it once (`Arc::make_mut`), so a login never waits for a
//! delivery and a delivery never sees a half-changed list.
//!
//! The index knows connections, not users or sessions: [`super::GroupOnline`] decides when a
//! connection enters or leaves a group (at login, close, join, leave, in commit order) and
//! remembers a user's groups so that closing a session needs no search.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;

use crate::api::{ConnId, ConnRef};
use crate::store::ConvId;

/// Independent locks, so that logins and deliveries of different groups rarely meet.
const STRIPES: usize = 64;

type Map<K, V> = HashMap<K, V, RandomState>;

/// One shard's online connections of one group, shared with the shards while they deliver.
pub(crate) type ShardConns = Arc<Vec<ConnId>>;

/// One group's online connections.
#[derive(Debug)]
struct Entry {
    /// Indexed by shard.
    per_shard: Box<[ShardConns]>,
    /// Where each connection sits in its shard's list, for O(1) removal.
    pos: Map<ConnRef, u32>,
    /// The first seq each connection may be pushed, where it is above 0 (the member's
    /// `visible_from_seq` as its login read it): a frame of an earlier seq still on its way
    /// from the owner node is not for it.
    floors: Map<ConnRef, u64>,
    /// The highest floor ever set here (never lowered: only frames below it, late ones, take
    /// the filtered path).
    floor_max: u64,
}

pub(crate) struct OnlineIndex {
    shards: usize,
    stripes: Box<[RwLock<Map<ConvId, Entry>>]>,
    hasher: RandomState,
    /// (connection, group) entries, exported as `ringchat_group_online_entries`.
    entries: metrics::Gauge,
}

impl OnlineIndex {
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            stripes: (0..STRIPES).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
            entries: metrics::gauge!("ringchat_group_online_entries"),
        }
    }

    fn stripe(&self, conv: ConvId) -> &RwLock<Map<ConvId, Entry>> {
        &self.stripes[(self.hasher.hash_one(conv) as usize) % STRIPES]
    }

    /// A stripe's lock, taken over if a panic poisoned it (its maps stay consistent: nothing
    /// under it panics half-way through a change).
    fn read(&self, conv: ConvId) -> RwLockReadGuard<'_, Map<ConvId, Entry>> {
        self.stripe(conv)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, conv: ConvId) -> RwLockWriteGuard<'_, Map<ConvId, Entry>> {
        self.stripe(conv)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a connection in a group's audience from seq `floor` on (0: every frame); a repeat
    /// only sets the floor.
    pub fn add(&self, conv: ConvId, conn: ConnRef, floor: u64) {
        let shard = usize::from(conn.shard);
        assert!(shard < self.shards, "connection of an unknown shard");
        let mut groups = self.write(conv);
        let entry = groups.entry(conv).or_insert_with(|| Entry {
            per_shard: (0..self.shards).map(|_| Arc::default()).collect(),
            pos: Map::default(),
            floors: Map::default(),
            floor_max: 0,
        });
        if floor > 0 {
            entry.floors.insert(conn, floor);
            entry.floor_max = entry.floor_max.max(floor);
        } else {
            entry.floors.remove(&conn);
        }
        if entry.pos.contains_key(&conn) {
            return;
        }
        let list = Arc::make_mut(&mut entry.per_shard[shard]);
        let at = u32::try_from(list.len()).expect("fewer than 2^32 connections per shard");
        list.push(conn.conn);
        entry.pos.insert(conn, at);
        self.entries.increment(1.0);
    }

    /// Takes a connection out of a group's audience; an absent one changes nothing.
    pub fn remove(&self, conv: ConvId, conn: ConnRef) {
        let mut groups = self.write(conv);
        let Some(entry) = groups.get_mut(&conv) else {
            return;
        };
        let Some(at) = entry.pos.remove(&conn) else {
            return;
        };
        self.entries.decrement(1.0);
        entry.floors.remove(&conn);
        let shard = usize::from(conn.shard);
        let list = Arc::make_mut(&mut entry.per_shard[shard]);
        let at = at as usize;
        list.swap_remove(at);
        if let Some(&moved) = list.get(at) {
            let moved = ConnRef {
                shard: conn.shard,
                conn: moved,
            };
            *entry
                .pos
                .get_mut(&moved)
                .expect("every listed connection has a position") = at as u32;
        }
        if entry.pos.is_empty() {
            groups.remove(&conv);
        }
    }

    /// Calls `f(shard, connections)` for each shard with someone of the group online: O(shards)
    /// under one read lock, whatever the group's size.
    pub fn audience(&self, conv: ConvId, mut f: impl FnMut(usize, &ShardConns)) {
        let groups = self.read(conv);
        if let Some(entry) = groups.get(&conv) {
            for (shard, conns) in entry.per_shard.iter().enumerate() {
                if !conns.is_empty() {
                    f(shard, conns);
                }
            }
        }
    }

    /// As [`Self::audience`], for a frame of message `seq` (0: not a message): connections whose
    /// floor is above it are left out (a fresh list, only for frames older than a floor).
    pub fn audience_at(&self, conv: ConvId, seq: u64, mut f: impl FnMut(usize, &ShardConns)) {
        let groups = self.read(conv);
        let Some(entry) = groups.get(&conv) else {
            return;
        };
        let late = seq > 0 && seq < entry.floor_max;
        for (shard, conns) in entry.per_shard.iter().enumerate() {
            if conns.is_empty() {
                continue;
            }
            if !late {
                f(shard, conns);
                continue;
            }
            let shard_id = crate::api::ShardId::try_from(shard).expect("a shard index fits its id");
            let visible: Vec<ConnId> = conns
                .iter()
                .copied()
                .filter(|c| {
                    let at = ConnRef {
                        shard: shard_id,
                        conn: *c,
                    };
                    entry.floors.get(&at).is_none_or(|floor| seq >= *floor)
                })
                .collect();
            if !visible.is_empty() {
                f(shard, &Arc::new(visible));
            }
        }
    }

    /// Online connections of one group (for limits and tests).
    pub fn online(&self, conv: ConvId) -> usize {
        let groups = self.read(conv);
        groups.get(&conv).map_or(0, |e| e.pos.len())
    }

    /// Groups with someone online, and (connection, group) entries: the index's size.
    #[cfg(test)]
    pub fn size(&self) -> (usize, usize) {
        self.stripes.iter().fold((0, 0), |(groups, entries), s| {
            let s = s.read().unwrap_or_else(PoisonError::into_inner);
            (
                groups + s.len(),
                entries + s.values().map(|e| e.pos.len()).sum::<usize>(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(shard: u16, conn: u64) -> ConnRef {
        ConnRef { shard, conn }
    }

    fn audience(index: &OnlineIndex, conv: ConvId) -> Vec<(usize, Vec<ConnId>)> {
        let mut out = Vec::new();
        index.audience(conv, |shard, conns| {
            let mut conns = conns.to_vec();
            conns.sort_unstable();
            out.push((shard, conns));
        });
        out
    }

    fn group(n: u64) -> ConvId {
        ConvId::group(n + 1).unwrap()
    }

    #[test]
    fn connections_are_listed_per_shard_once() {
        let index = OnlineIndex::new(2);
        let g = group(1);
        index.add(g, conn(0, 7), 0);
        index.add(g, conn(1, 3), 0);
        index.add(g, conn(0, 9), 0);
        index.add(g, conn(0, 7), 0);
        assert_eq!(audience(&index, g), [(0, vec![7, 9]), (1, vec![3])]);
        assert_eq!(index.online(g), 3);
        assert!(audience(&index, group(2)).is_empty());
    }

    #[test]
    fn removal_keeps_the_others_and_drops_an_empty_group() {
        let index = OnlineIndex::new(2);
        let g = group(1);
        for c in 1..=5 {
            index.add(g, conn(0, c), 0);
        }
        index.remove(g, conn(0, 2));
        index.remove(g, conn(0, 2));
        index.remove(g, conn(1, 2));
        assert_eq!(audience(&index, g), [(0, vec![1, 3, 4, 5])]);
        // Removing the last element, then the one moved into a hole, keeps positions right.
        index.remove(g, conn(0, 5));
        index.remove(g, conn(0, 1));
        assert_eq!(audience(&index, g), [(0, vec![3, 4])]);
        index.remove(g, conn(0, 3));
        index.remove(g, conn(0, 4));
        assert_eq!(index.size(), (0, 0));
    }

    #[test]
    fn a_frame_below_a_connections_floor_leaves_it_out() {
        let index = OnlineIndex::new(2);
        let g = group(1);
        index.add(g, conn(0, 1), 0);
        index.add(g, conn(0, 2), 11);
        index.add(g, conn(1, 3), 5);
        let at = |seq| {
            let mut out = Vec::new();
            index.audience_at(g, seq, |shard, conns| {
                let mut conns = conns.to_vec();
                conns.sort_unstable();
                out.push((shard, conns));
            });
            out
        };
        assert_eq!(at(10), [(0, vec![1]), (1, vec![3])]);
        assert_eq!(at(4), [(0, vec![1])]);
        assert_eq!(at(11), [(0, vec![1, 2]), (1, vec![3])]);
        assert_eq!(at(0), [(0, vec![1, 2]), (1, vec![3])], "not a message: all");
        // Added again with no floor (a change in commit order): every frame from now on.
        index.add(g, conn(0, 2), 0);
        assert_eq!(at(10), [(0, vec![1, 2]), (1, vec![3])]);
    }

    #[test]
    fn a_snapshot_being_delivered_is_not_changed_under_it() {
        let index = OnlineIndex::new(1);
        let g = group(1);
        index.add(g, conn(0, 1), 0);
        let mut held = None;
        index.audience(g, |_, conns| held = Some(Arc::clone(conns)));
        index.add(g, conn(0, 2), 0);
        index.remove(g, conn(0, 1));
        assert_eq!(*held.unwrap(), vec![1]);
        assert_eq!(audience(&index, g), [(0, vec![2])]);
    }

    #[test]
    fn many_groups_and_connections_stay_consistent() {
        let index = OnlineIndex::new(3);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut model: std::collections::BTreeSet<(u64, u16, u64)> = Default::default();
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let (g, s, c) = (rng % 7, ((rng >> 8) % 3) as u16, (rng >> 16) % 20);
            if rng >> 60 < 9 {
                index.add(group(g), conn(s, c), 0);
                model.insert((g, s, c));
            } else {
                index.remove(group(g), conn(s, c));
                model.remove(&(g, s, c));
            }
        }
        for g in 0..7 {
            let mut want: Vec<(usize, Vec<ConnId>)> = Vec::new();
            for s in 0..3u16 {
                let conns: Vec<u64> = model
                    .iter()
                    .filter(|(mg, ms, _)| *mg == g && *ms == s)
                    .map(|(_, _, c)| *c)
                    .collect();
                if !conns.is_empty() {
                    want.push((usize::from(s), conns));
                }
            }
            assert_eq!(audience(&index, group(g)), want, "group {g}");
        }
    }
}

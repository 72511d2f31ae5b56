//! The group state the sequencer owns: what it checks a group send against (the group record and
//! the sender's member row) and the overlay of the commit group being built.
//!
//! Groups, members, a user's groups and applications are written only by the sequencer, in its
//! commit groups, so a removal and a send are ordered by one thread: a send applied after a
//! removal in the sequencer's order finds no member row and is refused. Reads go through the
//! overlay, then a bounded cache of committed rows, then the store (one point get); a member
//! list is never loaded whole.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::GroupsConfig;
use crate::store::{
    ApplicationRecord, ConvId, GroupRecord, GroupStore, GroupWrites, MENTION_ALL_USER,
    MemberRecord, Mentions, ReadHistogram, StoreError, UserGroupRecord, UserId,
};

/// Cached groups and member rows, each at most; past it the cache starts over.
const ENTRIES_MAX: usize = 1 << 20;
/// Cached read histograms (each up to `groups.read_count_window` entries), at most.
const READS_CACHED_MAX: usize = 1 << 14;

type Map<K, V> = HashMap<K, V, RandomState>;

/// What a message, a receipt or a recall checks of its group: a copy of three fields, so that
/// the hot path never copies the record's strings (`intro` alone may be 16 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupGate {
    pub member_count: u32,
    pub mute_all: bool,
    /// Seq of the DISSOLVED event; 0 while the group lives.
    pub dissolved_seq: u64,
}

impl GroupGate {
    pub(crate) fn of(r: &GroupRecord) -> Self {
        Self {
            member_count: r.member_count,
            mute_all: r.mute_all,
            dissolved_seq: r.dissolved_seq,
        }
    }
}

/// A user's row of one group and how many rows the user has, as read before a change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserSlot {
    pub record: Option<UserGroupRecord>,
    pub count: u32,
}

pub(crate) struct Groups {
    store: Arc<dyn GroupStore>,
    /// Only to build the read histogram of a group stored before they were kept.
    pub(crate) limits: GroupsConfig,
    /// Committed state (and, once drained, what the group being committed applied: cleared
    /// whole if that commit fails).
    groups: Map<ConvId, GroupRecord>,
    /// `None`: known not to be a member.
    members: Map<(ConvId, UserId), Option<MemberRecord>>,
    reads: Map<ConvId, ReadHistogram>,
    next_group_id: u64,
    /// The commit group being built.
    pending_groups: Map<ConvId, GroupRecord>,
    pending_members: Map<(ConvId, UserId), Option<MemberRecord>>,
    pending_user_groups: Map<(UserId, ConvId), Option<UserGroupRecord>>,
    /// Rows each user's list gained or lost in this commit group (`GroupWrites`).
    pending_count_changes: Map<UserId, i32>,
    pending_applications: Map<(ConvId, UserId), Option<ApplicationRecord>>,
    pending_mentions: Vec<(ConvId, UserId, u64)>,
    pending_mentions_removed: Vec<(ConvId, UserId, u64)>,
    pending_reads: Map<ConvId, ReadHistogram>,
    pending_next_group_id: u64,
}

impl Groups {
    pub(crate) fn new(
        store: Arc<dyn GroupStore>,
        limits: GroupsConfig,
    ) -> Result<Self, StoreError> {
        let next = store.next_group_id()?;
        Ok(Self {
            store,
            limits,
            groups: Map::default(),
            members: Map::default(),
            reads: Map::default(),
            next_group_id: next,
            pending_groups: Map::default(),
            pending_members: Map::default(),
            pending_user_groups: Map::default(),
            pending_count_changes: Map::default(),
            pending_applications: Map::default(),
            pending_mentions: Vec::new(),
            pending_mentions_removed: Vec::new(),
            pending_reads: Map::default(),
            pending_next_group_id: next,
        })
    }

    /// The group as this commit group leaves it so far (a copy: for a change to the group).
    pub(crate) fn group(&mut self, g: ConvId) -> Result<Option<GroupRecord>, StoreError> {
        self.with_group(g, GroupRecord::clone)
    }

    /// [`Self::group`]'s [`GroupGate`]: what sends and receipts check, nothing copied.
    pub(crate) fn gate(&mut self, g: ConvId) -> Result<Option<GroupGate>, StoreError> {
        self.with_group(g, GroupGate::of)
    }

    fn with_group<T>(
        &mut self,
        g: ConvId,
        f: impl FnOnce(&GroupRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        if let Some(r) = self.pending_groups.get(&g).or_else(|| self.groups.get(&g)) {
            return Ok(Some(f(r)));
        }
        let Some(record) = self.store.group(g)? else {
            // Not cached: ids a client merely names must not fill the cache.
            return Ok(None);
        };
        let out = f(&record);
        if self.groups.len() >= ENTRIES_MAX {
            self.groups.clear();
        }
        self.groups.insert(g, record);
        Ok(Some(out))
    }

    /// The hot path of a group send: the sender's member row, one lookup when cached.
    pub(crate) fn member(
        &mut self,
        g: ConvId,
        user: UserId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        let key = (g, user);
        if let Some(m) = self
            .pending_members
            .get(&key)
            .or_else(|| self.members.get(&key))
        {
            return Ok(*m);
        }
        let record = self.store.group_member(g, user)?;
        if record.is_none()
            && !self.groups.contains_key(&g)
            && !self.pending_groups.contains_key(&g)
        {
            // Not a member of a group not cached: maybe an id a client merely names, which
            // must not fill the cache (a known group's non-members are kept: they are cheap
            // to refuse again).
            return Ok(None);
        }
        if self.members.len() >= ENTRIES_MAX {
            self.members.clear();
        }
        self.members.insert(key, record);
        Ok(record)
    }

    pub(crate) fn user_group(
        &self,
        user: UserId,
        g: ConvId,
    ) -> Result<Option<UserGroupRecord>, StoreError> {
        match self.pending_user_groups.get(&(user, g)) {
            Some(r) => Ok(*r),
            None => self.store.user_group(user, g),
        }
    }

    /// The user's rows as stored, with this commit group's changes.
    pub(crate) fn user_group_count(&self, user: UserId) -> Result<u32, StoreError> {
        let stored = self.store.user_group_count(user)?;
        let change = self.pending_count_changes.get(&user).copied().unwrap_or(0);
        Ok(u32::try_from((i64::from(stored) + i64::from(change)).max(0)).unwrap_or(u32::MAX))
    }

    pub(crate) fn application(
        &self,
        g: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        match self.pending_applications.get(&(g, user)) {
            Some(r) => Ok(r.clone()),
            None => self.store.application(g, user),
        }
    }

    pub(crate) fn take_group_id(&mut self) -> Option<ConvId> {
        let g = ConvId::group(self.pending_next_group_id)?;
        self.pending_next_group_id += 1;
        Some(g)
    }

    pub(crate) fn put_group(&mut self, g: ConvId, record: GroupRecord) {
        self.pending_groups.insert(g, record);
    }

    pub(crate) fn put_member(&mut self, g: ConvId, user: UserId, record: Option<MemberRecord>) {
        self.pending_members.insert((g, user), record);
    }

    /// The user's row of group `g` and the count of the user's rows, read before a change
    /// (the only step that reads: [`Self::put_user_group`] then cannot fail).
    pub(crate) fn user_slot(&self, user: UserId, g: ConvId) -> Result<UserSlot, StoreError> {
        Ok(UserSlot {
            record: self.user_group(user, g)?,
            count: self.user_group_count(user)?,
        })
    }

    /// [`Self::user_slot`] of a group being created (the user has no row of it yet).
    pub(crate) fn new_slot(&self, user: UserId) -> Result<UserSlot, StoreError> {
        Ok(UserSlot {
            record: None,
            count: self.user_group_count(user)?,
        })
    }

    /// Puts (or, with `None`, removes) a row of the user's groups, counting the change to the
    /// user's rows (a change, not the count `slot` read: see `GroupWrites`).
    pub(crate) fn put_user_group(
        &mut self,
        user: UserId,
        g: ConvId,
        slot: &UserSlot,
        record: Option<UserGroupRecord>,
    ) {
        let had = self
            .pending_user_groups
            .get(&(user, g))
            .map_or(slot.record.is_some(), Option::is_some);
        let change = i32::from(record.is_some()) - i32::from(had);
        if change != 0 {
            *self.pending_count_changes.entry(user).or_default() += change;
        }
        self.pending_user_groups.insert((user, g), record);
    }

    pub(crate) fn put_application(
        &mut self,
        g: ConvId,
        user: UserId,
        record: Option<ApplicationRecord>,
    ) {
        self.pending_applications.insert((g, user), record);
    }

    pub(crate) fn put_mention(&mut self, g: ConvId, user: UserId, seq: u64) {
        self.pending_mentions.push((g, user, seq));
    }

    /// The message at `seq` was recalled: its mention rows (`mentions`, as it was sent) go, so
    /// that it is no unread mention any more. Rows this group put are dropped before they are
    /// written, so that a group never puts and removes one key.
    pub(crate) fn remove_mentions(&mut self, g: ConvId, seq: u64, mentions: &Mentions) {
        let pending = self.pending_mentions.len();
        self.pending_mentions
            .retain(|(pg, _, ps)| (*pg, *ps) != (g, seq));
        if self.pending_mentions.len() != pending {
            return;
        }
        let users = mentions.user_ids.iter().copied();
        let all = mentions.all.then_some(MENTION_ALL_USER);
        self.pending_mentions_removed
            .extend(users.chain(all).map(|user| (g, user, seq)));
    }

    /// Makes the group's read histogram available to [`Self::reads_mut`] until the operation
    /// ends: the only step that reads (and so can fail).
    pub(crate) fn load_reads(&mut self, g: ConvId) -> Result<(), StoreError> {
        if self.pending_reads.contains_key(&g) || self.reads.contains_key(&g) {
            return Ok(());
        }
        let histogram = self
            .store
            .read_histogram(g)?
            .ok_or_else(|| super::read_counts::missing_histogram(g))?;
        if self.reads.len() >= READS_CACHED_MAX {
            self.reads.clear();
        }
        self.reads.insert(g, histogram);
        Ok(())
    }

    /// The histogram to change, in the overlay ([`Self::load_reads`] came first).
    pub(crate) fn reads_mut(&mut self, g: ConvId) -> &mut ReadHistogram {
        if !self.pending_reads.contains_key(&g) {
            let h = self.reads.remove(&g).expect("load_reads comes first");
            self.pending_reads.insert(g, h);
        }
        self.pending_reads.get_mut(&g).expect("just inserted")
    }

    /// A new group's histogram: `members` who have read nothing.
    pub(crate) fn new_reads(&mut self, g: ConvId, members: u32) {
        let mut h = ReadHistogram::default();
        if members > 0 {
            h.counts.insert(0, members);
        }
        self.pending_reads.insert(g, h);
    }

    pub(crate) fn read_window(&self) -> u64 {
        self.limits.read_count_window
    }

    /// A member's read cursor moved ([`Self::load_reads`] came first).
    pub(crate) fn read_moved(&mut self, g: ConvId, from: u64, to: u64) {
        if from != to {
            let window = self.read_window();
            self.reads_mut(g).moved(from, to, window);
        }
    }

    /// Moves the group's changes into its write, and into the committed caches (which
    /// [`Self::discard`] drops if the write fails; the read histograms return with
    /// [`Self::promote`]).
    pub(crate) fn drain_into(&mut self, writes: &mut GroupWrites) {
        for (g, h) in &self.pending_reads {
            if let Some(r) = self.pending_groups.get(g).or_else(|| self.groups.get(g)) {
                debug_assert_eq!(h.total(), r.member_count, "{g:?}: counted != members");
            }
        }
        if self.pending_next_group_id != self.next_group_id {
            writes.next_group_id = Some(self.pending_next_group_id);
            self.next_group_id = self.pending_next_group_id;
        }
        if self.groups.len() + self.pending_groups.len() > ENTRIES_MAX {
            self.groups.clear();
        }
        if self.members.len() + self.pending_members.len() > ENTRIES_MAX {
            self.members.clear();
        }
        for (g, record) in self.pending_groups.drain() {
            writes.groups.push((g, record.clone()));
            self.groups.insert(g, record);
        }
        for ((g, user), record) in self.pending_members.drain() {
            writes.members.push((g, user, record));
            self.members.insert((g, user), record);
        }
        writes.user_groups.extend(
            self.pending_user_groups
                .drain()
                .map(|((user, g), record)| (user, g, record)),
        );
        writes.user_group_count_changes.extend(
            self.pending_count_changes
                .drain()
                .filter(|(_, change)| *change != 0),
        );
        writes.applications.extend(
            self.pending_applications
                .drain()
                .map(|((g, user), record)| (g, user, record)),
        );
        writes.mentions.append(&mut self.pending_mentions);
        writes
            .mentions_removed
            .append(&mut self.pending_mentions_removed);
        // Moved, not copied (a histogram holds up to `groups.read_count_window` entries): they
        // return to the cache once durable (`promote`).
        writes.read_histograms.extend(self.pending_reads.drain());
    }

    /// After the commit group is durable: its histograms go back to the cache.
    pub(crate) fn promote(&mut self, writes: &mut GroupWrites) {
        if self.reads.len() + writes.read_histograms.len() > READS_CACHED_MAX {
            self.reads.clear();
        }
        self.reads.extend(writes.read_histograms.drain(..));
    }

    /// After a failed commit: the store may hold all or nothing of it; read again from it.
    pub(crate) fn discard(&mut self) {
        self.pending_groups.clear();
        self.pending_members.clear();
        self.pending_user_groups.clear();
        self.pending_count_changes.clear();
        self.pending_applications.clear();
        self.pending_mentions.clear();
        self.pending_mentions_removed.clear();
        self.pending_reads.clear();
        self.groups.clear();
        self.members.clear();
        self.reads.clear();
        // Group ids are never reused: the writer re-reads the counter (`reload_next_id`)
        // before its next group, once the store answers.
        self.pending_next_group_id = self.next_group_id;
    }

    /// Reads the group id counter again after a failed commit (it may have landed).
    pub(crate) fn reload_next_id(&mut self) -> Result<(), StoreError> {
        let next = self.store.next_group_id()?;
        self.next_group_id = next;
        self.pending_next_group_id = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::FjallStore;

    #[test]
    fn ids_a_client_merely_names_fill_no_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let mut groups = Groups::new(store, GroupsConfig::default()).unwrap();
        for id in 1..=1_000u64 {
            let g = ConvId::group(id).unwrap();
            assert_eq!(groups.member(g, 7).unwrap(), None);
            assert_eq!(groups.group(g).unwrap(), None);
        }
        assert!(groups.members.is_empty() && groups.groups.is_empty());
        assert_eq!(groups.gate(ConvId::group(1).unwrap()).unwrap(), None);
        assert!(groups.groups.is_empty());
    }

    fn record(member_count: u32) -> GroupRecord {
        GroupRecord {
            name: "g".into(),
            avatar_url: String::new(),
            intro: "i".repeat(16 * 1024),
            owner: 1,
            join_policy: crate::store::JoinPolicy::Open,
            history_visible: false,
            mute_all: true,
            member_count,
            admin_count: 0,
            application_count: 0,
            created_ms: 1,
            dissolved_seq: 0,
        }
    }

    #[test]
    fn the_gate_reads_the_overlay_then_the_cache_then_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let g = ConvId::group(1).unwrap();
        let mut stored = crate::store::CommitGroup::default();
        stored.groups.groups.push((g, record(2)));
        crate::store::ConversationLog::append(&*store, &stored).unwrap();
        let mut groups = Groups::new(store, GroupsConfig::default()).unwrap();
        let gate = |member_count, dissolved_seq| GroupGate {
            member_count,
            mute_all: true,
            dissolved_seq,
        };
        assert_eq!(groups.gate(g).unwrap(), Some(gate(2, 0)));
        assert!(groups.groups.contains_key(&g), "read once, then cached");
        let mut dissolved = record(3);
        dissolved.dissolved_seq = 9;
        groups.put_group(g, dissolved);
        assert_eq!(
            groups.gate(g).unwrap(),
            Some(gate(3, 9)),
            "the overlay first"
        );
        groups.discard();
        assert_eq!(groups.gate(g).unwrap(), Some(gate(2, 0)), "the store again");
        // A change to the group still gets the whole record.
        assert_eq!(groups.group(g).unwrap(), Some(record(2)));
    }

    /// A histogram holds up to `groups.read_count_window` entries: a commit moves it into the
    /// write and back into the cache, never copies it.
    #[test]
    fn a_committed_histogram_is_moved_into_the_write_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let mut groups = Groups::new(store, GroupsConfig::default()).unwrap();
        let g = ConvId::group(1).unwrap();
        groups.new_reads(g, 3);
        // Where a count lives: a copy of the map would put it elsewhere.
        let at = |h: &ReadHistogram| std::ptr::from_ref(&h.counts[&0]);
        let before = at(groups.reads_mut(g));
        let mut writes = GroupWrites::default();
        groups.drain_into(&mut writes);
        assert_eq!(writes.read_histograms.len(), 1);
        assert_eq!(
            at(&writes.read_histograms[0].1),
            before,
            "moved into the write"
        );
        groups.promote(&mut writes);
        assert!(writes.read_histograms.is_empty());
        groups.load_reads(g).unwrap();
        assert_eq!(at(groups.reads_mut(g)), before, "back in the cache");
    }
}

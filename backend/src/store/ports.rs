//! The storage ports: what the backend needs from a store, split along what is stored. One
//! adapter (the embedded fjall store; PostgreSQL and ScyllaDB later) implements them all, and
//! the backend holds them as [`Ports`], never as a concrete store.
//!
//! The shape is synchronous with an explicit batching contract (ARCHITECTURE.md says why):
//! - every write comes from the sequencer as one [`CommitGroup`] per call, so a networked store
//!   waits once per group, never once per message;
//! - a request that needs many rows asks for them in one call (`heads`, `cursor_rows`,
//!   `messages_at`, `relations_at`);
//! - calls come only from the sequencer's thread and from the bounded read pool, so the threads
//!   a slow store can park are bounded by configuration, not by the requests in flight.

use std::sync::Arc;

use super::tail_cache::TailCached;
use super::{
    AccountFlags, ApplicationRecord, AuditRecord, Claim, CommitGroup, ContactSummary, ConvId,
    ConvRecord, CursorRow, GroupRecord, IdKind, InviteRecord, InviteTake, MemberRecord,
    MessageRecord, OwnerRecord, ProfileRecord, PushTokenRecord, ReadHistogram, RelationKey,
    RelationKind, RelationRecord, StoreError, StoreHealth, TokenHash, TokenRecord, UserGroupRecord,
    UserId, UserRecord,
};

/// Keys one batched point read ([`ConversationLog::messages_at`], [`ContactStore::relations_at`])
/// sends to the store at once: an adapter splits a longer list with [`in_batches`], so that one
/// statement (PostgreSQL), one snapshot walk (fjall) or the requests in flight at once
/// (ScyllaDB) stay bounded whatever the caller asks.
pub const POINT_READS_MAX: usize = 1_000;

/// `read` over `keys` in slices of at most [`POINT_READS_MAX`], the answers in the order asked.
pub fn in_batches<K, V>(
    keys: &[K],
    mut read: impl FnMut(&[K]) -> Result<Vec<V>, StoreError>,
) -> Result<Vec<V>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(POINT_READS_MAX) {
        out.extend(read(batch)?);
    }
    Ok(out)
}

/// Accounts and login tokens. A token is indexed under its user (one token per signed-in
/// device), so that a password change can revoke them all and a user can list them.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user with the next unused id; `UsernameTaken` if the (case-folded) name exists,
    /// `EmailTaken` if a non-empty e-mail address is another user's ([`super::email_key`]).
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        email: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError>;
    fn user_by_id(&self, user_id: UserId) -> Result<Option<UserRecord>, StoreError>;
    fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>, StoreError>;
    /// The user with this e-mail address, case-folded ([`super::email_key`]); unique.
    fn user_id_by_email(&self, email: &str) -> Result<Option<UserId>, StoreError>;
    /// Puts a token and indexes it under `token.user_id`.
    fn put_token(&self, hash: &TokenHash, token: &TokenRecord) -> Result<(), StoreError>;
    fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;
    /// Removes a token and its index entry; an absent token is not an error.
    fn remove_token(&self, hash: &TokenHash) -> Result<(), StoreError>;
    /// Up to `limit` of the user's tokens, expired ones included, in token-hash order.
    fn tokens_of_user(
        &self,
        user_id: UserId,
        limit: usize,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError>;
    /// In one atomic write: removes those of `revoke` that are `user_id`'s tokens (others are
    /// left alone) and puts `put` (a token of `user_id`). With `held`, nothing is written
    /// unless `held` is still a token of `user_id` at that moment, checked in the same atomic
    /// step: a refreshed token must not outlive a revocation of the token it was made from.
    /// `Ok(false)`: nothing written for that reason.
    fn replace_tokens(
        &self,
        user_id: UserId,
        revoke: &[TokenHash],
        put: Option<(&TokenHash, &TokenRecord)>,
        held: Option<&TokenHash>,
    ) -> Result<bool, StoreError>;
    /// In one atomic write: sets the user's password hash, removes every token of the user, and
    /// puts `put` (a token of `user_id`). Returns how many tokens were removed; `Ok(None)` when
    /// the user does not exist, or when `current` is given and the user's password hash is no
    /// longer it (a change that verified the old password must not overwrite one made since):
    /// nothing is written then.
    fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        put: Option<(&TokenHash, &TokenRecord)>,
        current: Option<&str>,
    ) -> Result<Option<usize>, StoreError>;
    /// Replaces the user's password hash with `password_hash`, a hash of the same password
    /// made with other argon2 parameters, only while the stored hash is still `current`,
    /// checked in the same atomic step (a password change or reset made since wins). Tokens
    /// are left alone. `Ok(false)`: nothing written (no such user, or the hash is no longer
    /// `current`).
    fn rehash_password(
        &self,
        user_id: UserId,
        current: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError>;
    /// Moves tokens' `last_seen_ms` forward (never back), in one write; absent tokens are
    /// skipped, never recreated.
    fn touch_tokens(&self, seen: &[(TokenHash, u64)]) -> Result<(), StoreError>;
    /// Up to `limit` user ids above `after`, ascending: every user, a page at a time (a
    /// notification to everyone walks them so, never holding them all).
    fn user_ids_after(&self, after: UserId, limit: usize) -> Result<Vec<UserId>, StoreError>;
    /// How many users exist (ids are never reused, users never removed).
    fn user_count(&self) -> Result<u64, StoreError>;
}

/// Devices' push tokens for offline push, one per (user, device id), each replaced whole.
pub trait PushTokenStore: Send + Sync + 'static {
    /// Puts (or replaces) the device's token, durably.
    fn put_push_token(
        &self,
        user: UserId,
        device_id: &str,
        token: &PushTokenRecord,
    ) -> Result<(), StoreError>;
    /// Removes the device's token; `Ok(false)` when it had none.
    fn remove_push_token(&self, user: UserId, device_id: &str) -> Result<bool, StoreError>;
    /// Removes the device's token only while it is `expected` (compare and delete: one the
    /// device registered since stays); `Ok(false)` when it is not.
    fn remove_push_token_if(
        &self,
        user: UserId,
        device_id: &str,
        expected: &PushTokenRecord,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` of the user's tokens `(device id, token)`, in device id order.
    fn push_tokens(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<(String, PushTokenRecord)>, StoreError>;
}

/// The conversation log: the sequencer's commit groups, and messages read back by seq.
pub trait ConversationLog: Send + Sync + 'static {
    /// Writes a group atomically and durably (per the configured durability). Nothing of it is
    /// visible to readers before all of it is durable. A group with [`CommitGroup::fences`]
    /// is written only if every fenced conversation's stored epoch is the one named; otherwise
    /// nothing is written and the error is [`StoreError::Fenced`].
    ///
    /// The sequencer's contract, which the tail cache relies on: a conversation's first message
    /// has seq 1, each group's messages of a conversation come after its stored head, and a
    /// recall names a stored (or same-group) message.
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError>;
    /// The next message id to hand out (1 on an empty store).
    fn next_msg_id(&self) -> Result<u64, StoreError>;
    /// The conversation's newest message: its seq is the conversation's `max_seq`.
    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError>;
    /// [`Self::last_message`] of many conversations, in the order asked.
    fn last_messages(&self, convs: &[ConvId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        convs.iter().map(|c| self.last_message(*c)).collect()
    }
    fn conversation(&self, conv: ConvId) -> Result<Option<ConvRecord>, StoreError> {
        Ok(self.last_message(conv)?.map(|m| ConvRecord {
            max_seq: m.seq,
            last_time_ms: m.server_time_ms,
        }))
    }
    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError>;
    /// [`Self::message`] of many `(conversation, seq)`, in the order asked (`None` where there
    /// is none), read in batches of [`POINT_READS_MAX`].
    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        keys.iter().map(|(c, s)| self.message(*c, *s)).collect()
    }
    /// Up to `limit` messages with seq > `after_seq`, ascending.
    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Up to `limit` messages with seq < `before_seq`, newest first.
    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError>;
}

/// Per (conversation, member): cursors, device cursors and the dedup window, as [`CursorRow`]s
/// written by [`ConversationLog::append`].
pub trait CursorStore: Send + Sync + 'static {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError>;
    /// [`Self::cursor_row`] of many, in the order asked.
    fn cursor_rows(&self, keys: &[(ConvId, UserId)]) -> Result<Vec<Option<CursorRow>>, StoreError> {
        keys.iter().map(|(c, u)| self.cursor_row(*c, *u)).collect()
    }
}

/// Which conversations a user is in, by recency. (Stored members of groups come with the
/// groups issue.)
pub trait MembershipStore: Send + Sync + 'static {
    /// Up to `limit` entries `(bucket, conversation)` of the user's recency index with a bucket in
    /// `buckets` (`0..=u64::MAX`: all): newest bucket first, and within a bucket by
    /// conversation, descending. The lower bound lets a reader take one whole bucket without
    /// running on into older ones. Entries are moved by [`CommitGroup::recency`]; an entry
    /// whose conversation has since moved on may linger, and readers check it against the
    /// conversation's head.
    fn recent_conversations(
        &self,
        user: UserId,
        buckets: std::ops::RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError>;
}

/// Contacts: relations between users and contact summaries (written by
/// [`ConversationLog::append`] from [`CommitGroup::contacts`]), profiles (written on their own),
/// and the username index read by prefix for search.
pub trait ContactStore: Send + Sync + 'static {
    fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError>;
    /// [`Self::relation`] of many keys, in the order asked, read in batches of
    /// [`POINT_READS_MAX`].
    fn relations_at(
        &self,
        keys: &[RelationKey],
    ) -> Result<Vec<Option<RelationRecord>>, StoreError> {
        keys.iter().map(|k| self.relation(*k)).collect()
    }
    /// Up to `limit` of `owner`'s relations of `kind` with a user id above `after`, ascending.
    fn relations(
        &self,
        owner: UserId,
        kind: RelationKind,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, RelationRecord)>, StoreError>;
    fn contact_summary(&self, user: UserId) -> Result<Option<ContactSummary>, StoreError>;
    fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError>;
    /// Replaces a profile, durably, in a write of its own, whatever is stored (a restore, a
    /// test). A profile update goes through [`Self::put_profile_if`].
    fn put_profile(&self, user: UserId, profile: &ProfileRecord) -> Result<(), StoreError>;
    /// Replaces a profile, durably, only if the stored one is still `expected` (`None`: no
    /// profile is stored), as one atomic step; `Ok(false)` and nothing written if it is not.
    /// An update reads the row, changes the fields it sets and writes the whole row back: in a
    /// cluster another node may have written the row in between, and a plain write would put
    /// back what that one changed (a `searchable: false` undone by a bio edit).
    fn put_profile_if(
        &self,
        user: UserId,
        expected: Option<&ProfileRecord>,
        profile: &ProfileRecord,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` entries `(case-folded username, user)` of the username index that start
    /// with `prefix` (case-folded by the caller) and sort after `after`, ascending.
    fn usernames_with_prefix(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, UserId)>, StoreError>;
}

/// Groups: written by [`ConversationLog::append`] from [`CommitGroup::groups`]. Member lists
/// are read by point gets and pages, never whole.
pub trait GroupStore: Send + Sync + 'static {
    fn group(&self, group: ConvId) -> Result<Option<GroupRecord>, StoreError>;
    fn group_member(&self, group: ConvId, user: UserId)
    -> Result<Option<MemberRecord>, StoreError>;
    /// Up to `limit` members with a user id above `after`, ascending.
    fn group_members(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError>;
    fn user_group(
        &self,
        user: UserId,
        group: ConvId,
    ) -> Result<Option<UserGroupRecord>, StoreError>;
    /// Up to `limit` of the user's groups with an id above `after` (wire form), ascending.
    fn groups_of_user(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, UserGroupRecord)>, StoreError>;
    /// Rows in the user's groups list (members or not).
    fn user_group_count(&self, user: UserId) -> Result<u32, StoreError>;
    fn application(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError>;
    /// Up to `limit` pending applications with a user id above `after`, ascending.
    fn applications(
        &self,
        group: ConvId,
        after: UserId,
        limit: usize,
    ) -> Result<Vec<(UserId, ApplicationRecord)>, StoreError>;
    /// Messages of the group with a seq in `after_seq + 1 ..= last_seq` that mention `user` or
    /// everyone, at most `cap` (each counted once).
    fn unread_mentions(
        &self,
        group: ConvId,
        user: UserId,
        after_seq: u64,
        last_seq: u64,
        cap: u32,
    ) -> Result<u32, StoreError>;
    /// The group's members counted by read cursor (`None`: a group from before they were kept).
    fn read_histogram(&self, group: ConvId) -> Result<Option<ReadHistogram>, StoreError>;
    /// The next group number to hand out (1 on an empty store).
    fn next_group_id(&self) -> Result<u64, StoreError>;
    /// Up to `limit` groups with a wire id above `after`, ascending.
    fn groups_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(ConvId, GroupRecord)>, StoreError>;
    /// Up to `limit` entries `(folded name, group)` of the group name index
    /// ([`super::group_name_key`]) starting with `prefix` (folded by the caller) and sorting
    /// after `after` (a previous entry; `None`: from the start), ascending. Kept by `append`.
    fn groups_by_name(
        &self,
        prefix: &str,
        after: Option<(&str, ConvId)>,
        limit: usize,
    ) -> Result<Vec<(String, ConvId)>, StoreError>;
}

/// What operators keep about accounts besides [`UserRecord`]: flags (disabled), the list of
/// users by id, and registration invites (only their codes' hashes). Each write is durable on
/// its own.
pub trait AccountAdminStore: Send + Sync + 'static {
    fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError>;
    /// Sets (`Some`) or clears (`None`) the user's flags; `Ok(false)` when there is no such
    /// user (nothing is written).
    fn set_user_flags(
        &self,
        user: UserId,
        flags: Option<&AccountFlags>,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` users with an id above `after`, ascending.
    fn users_after(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>, StoreError>;
    /// Stores an invite under the next id (the record's `id` is ignored) and returns the id;
    /// `Ok(None)` when `invites_max` invites are stored even after dropping the ones no
    /// longer usable at `now_ms`.
    fn put_invite(
        &self,
        invite: &InviteRecord,
        invites_max: usize,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Takes one use of the invite whose code hashes to `code_hash`, if it is usable at
    /// `now_ms`, atomically (two registrations never share the last use).
    fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError>;
    /// Gives back a use taken by [`Self::take_invite`] (the registration it was for failed).
    fn return_invite(&self, id: u64) -> Result<(), StoreError>;
    /// Up to `limit` invites with an id below `before`, newest first.
    fn invites_before(&self, before: u64, limit: usize) -> Result<Vec<InviteRecord>, StoreError>;
    /// Up to `limit` invites of `issuer` with an id below `before`, newest first: read through
    /// an index by (issuer, id), so a page costs the issuer's invites, not every stored one.
    fn invites_of_issuer_before(
        &self,
        issuer: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<InviteRecord>, StoreError>;
    /// Removes an invite (revoked); `Ok(false)` when there is none with this id.
    fn remove_invite(&self, id: u64) -> Result<bool, StoreError>;
}

/// The audit log: appended in batches by one writer per process, read newest first.
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `records` with ids `first_id`, `first_id + 1`, …, durably (per the configured
    /// durability) and all or none. A store that several processes share (PostgreSQL in a
    /// cluster) numbers them after its last entry instead, so that no id is taken twice.
    /// (The ScyllaDB adapter does not yet: nodes sharing it can overwrite each other's
    /// entries; README, ScyllaDB as the store.)
    fn append_audit(&self, first_id: u64, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// The highest id stored (0 when empty): the writer continues after it.
    fn last_audit_id(&self) -> Result<u64, StoreError>;
    /// Up to `limit` entries with ids below `before`, newest first.
    fn audit_page(&self, before: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError>;
    /// Removes up to `limit` of the oldest entries, in id order, stopping at the first one at
    /// or after `before_ms`; returns how many went. One write. The newest entry always stays,
    /// so that ids continue after it.
    fn prune_audit(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError>;
}

/// Conversation ownership for cluster mode (`store/owners.rs`): each conversation is
/// sequenced by one node at a time, fenced by an epoch that only a conditional write advances.
pub trait OwnerStore: Send + Sync + 'static {
    /// The conversation's owner; `None` before anyone claimed it (epoch 0).
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError>;
    /// Takes the conversation for `node` if its stored epoch is still `seen_epoch` (0: never
    /// claimed), advancing it by one, atomically and durably: of two claims that saw the same
    /// epoch, exactly one wins.
    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError>;
    // Batched ownership and id leases (cluster mode, `store/owners.rs`).
    /// [`Self::owner`] of many conversations, in one round trip; one answer per conversation.
    fn owners(&self, convs: &[ConvId]) -> Result<Vec<Option<OwnerRecord>>, StoreError>;
    /// [`Self::claim`] of many `(conversation, seen epoch)`, in one round trip; one answer
    /// each, in order, each claim atomic on its own.
    fn claim_many(&self, node: u64, claims: &[(ConvId, u64)]) -> Result<Vec<Claim>, StoreError>;
    /// Reserves the next `count` ids of `kind` (count > 0): advances the stored counter by
    /// `count` atomically and durably; of two leases, each gets its own range.
    fn lease_ids(&self, kind: IdKind, count: u64) -> Result<std::ops::Range<u64>, StoreError>;
}

/// The engine under the ports: its health, and making everything durable at shutdown.
pub trait StoreEngine: Send + Sync + 'static {
    fn health(&self) -> Arc<StoreHealth>;
    /// Makes every committed write durable under the configured durability.
    fn flush(&self) -> Result<(), StoreError>;
    /// Export and import of the whole store (`dump.rs`: backup, restore, migration), when
    /// the adapter has them.
    fn dump(&self) -> Option<&dyn super::dump::DumpStore> {
        None
    }
    /// Whether a networked store answers now (`/readyz`): `Unavailable` while it is away,
    /// `ReadOnly` while it answers but would refuse every write.
    fn reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An adapter: every port at once.
pub trait Store:
    AccountStore
    + AccountAdminStore
    + ConversationLog
    + CursorStore
    + MembershipStore
    + ContactStore
    + GroupStore
    + AuditStore
    + PushTokenStore
    + OwnerStore
    + StoreEngine
{
}

impl<T> Store for T where
    T: AccountStore
        + AccountAdminStore
        + ConversationLog
        + CursorStore
        + MembershipStore
        + ContactStore
        + GroupStore
        + AuditStore
        + PushTokenStore
        + OwnerStore
        + StoreEngine
{
}

/// The ports the backend holds.
#[derive(Clone)]
pub struct Ports {
    pub accounts: Arc<dyn AccountStore>,
    pub account_admin: Arc<dyn AccountAdminStore>,
    pub log: Arc<dyn ConversationLog>,
    pub cursors: Arc<dyn CursorStore>,
    pub memberships: Arc<dyn MembershipStore>,
    pub contacts: Arc<dyn ContactStore>,
    pub groups: Arc<dyn GroupStore>,
    pub audit: Arc<dyn AuditStore>,
    pub push_tokens: Arc<dyn PushTokenStore>,
    pub owners: Arc<dyn OwnerStore>,
    pub engine: Arc<dyn StoreEngine>,
}

impl Ports {
    pub fn of<S: Store>(store: Arc<S>) -> Self {
        Self {
            accounts: Arc::clone(&store) as _,
            account_admin: Arc::clone(&store) as _,
            log: Arc::clone(&store) as _,
            cursors: Arc::clone(&store) as _,
            memberships: Arc::clone(&store) as _,
            contacts: Arc::clone(&store) as _,
            groups: Arc::clone(&store) as _,
            audit: Arc::clone(&store) as _,
            push_tokens: Arc::clone(&store) as _,
            owners: Arc::clone(&store) as _,
            engine: store,
        }
    }

    /// [`Self::of`], with the conversation log behind a [`TailCached`] of `tail_cache_bytes`
    /// (0: no cache). Only the log is decorated; the other ports go straight to the store.
    pub fn with_tail_cache<S: Store>(store: Arc<S>, tail_cache_bytes: usize) -> Self {
        let ports = Self::of(Arc::clone(&store));
        if tail_cache_bytes == 0 {
            return ports;
        }
        Self {
            log: Arc::new(TailCached::new(store, tail_cache_bytes)),
            ..ports
        }
    }
}

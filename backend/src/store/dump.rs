//! A store's whole content in a store-neutral, typed form, a page at a time: what migration
//! between stores, backup and restore read and write. Not part of [`super::Store`]: an adapter
//! implements [`DumpStore`] when it can be a source or a destination.
//!
//! Every part is exported in the adapter's key order with an opaque [`ResumeKey`], so a copy can
//! stop anywhere and continue; [`DumpStore::import`] is idempotent (the same batch twice leaves
//! the same store), so a resumed copy may import the last batch again.
//! [`Tally`] counts and checksums a part independently of order and of how an adapter groups
//! records (a run of messages counts as its messages), so two different stores compare.

use serde::{Deserialize, Serialize};

use super::{
    AccountFlags, ApplicationRecord, AuditRecord, ContactSummary, ConvId, CursorRow, GroupRecord,
    InviteRecord, MemberRecord, MessageRecord, OwnerRecord, ProfileRecord, PushTokenRecord,
    ReadHistogram, RelationKind, RelationRecord, StoreError, TokenHash, TokenRecord,
    UserGroupRecord, UserId, UserRecord,
};

/// The parts of a store, in the order a copy moves them.
/// A copy's checkpoint in an embedded destination's data dir, there until the copy finished
/// (`backup/copy.rs`). The server does not open a data dir that holds one.
pub const COPY_CHECKPOINT_FILE: &str = "ringchat-copy-checkpoint.json";

/// Refuses the embedded store in `data_dir` while a copy into it has not finished: it is part
/// of a store, without the counters (its last part). What the server, `migrate --from` and
/// `backup` all check before reading it.
pub fn refuse_unfinished_copy(data_dir: &std::path::Path) -> Result<(), StoreError> {
    let checkpoint = data_dir.join(COPY_CHECKPOINT_FILE);
    if checkpoint.exists() {
        return Err(StoreError::UnfinishedCopy(checkpoint));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Part {
    Users,
    Tokens,
    AccountFlags,
    Invites,
    Messages,
    Recalls,
    CursorRows,
    Recency,
    Relations,
    ContactSummaries,
    Profiles,
    Groups,
    Members,
    UserGroups,
    Applications,
    Mentions,
    ReadHistograms,
    Audit,
    PushTokens,
    Owners,
    Counters,
}

impl Part {
    pub const ALL: [Part; 21] = [
        Part::Users,
        Part::Tokens,
        Part::AccountFlags,
        Part::Invites,
        Part::Messages,
        Part::Recalls,
        Part::CursorRows,
        Part::Recency,
        Part::Relations,
        Part::ContactSummaries,
        Part::Profiles,
        Part::Groups,
        Part::Members,
        Part::UserGroups,
        Part::Applications,
        Part::Mentions,
        Part::ReadHistograms,
        Part::Audit,
        Part::PushTokens,
        Part::Owners,
        Part::Counters,
    ];

    /// A stable name (file names, checkpoints, manifests, progress lines).
    pub fn name(self) -> &'static str {
        match self {
            Part::Users => "users",
            Part::Tokens => "tokens",
            Part::AccountFlags => "account_flags",
            Part::Invites => "invites",
            Part::Messages => "messages",
            Part::Recalls => "recalls",
            Part::CursorRows => "cursor_rows",
            Part::Recency => "recency",
            Part::Relations => "relations",
            Part::ContactSummaries => "contact_summaries",
            Part::Profiles => "profiles",
            Part::Groups => "groups",
            Part::Members => "members",
            Part::UserGroups => "user_groups",
            Part::Applications => "applications",
            Part::Mentions => "mentions",
            Part::ReadHistograms => "read_histograms",
            Part::Audit => "audit",
            Part::PushTokens => "push_tokens",
            Part::Owners => "owners",
            Part::Counters => "counters",
        }
    }

    pub fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A store-wide counter; its value is the next id the store hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counter {
    /// Message ids.
    Message,
    /// Group numbers.
    Group,
    /// Audit entry ids.
    Audit,
    /// User ids.
    User,
    /// Invite ids.
    Invite,
}

/// One exported record (or, for messages, one run of a conversation's consecutive messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DumpItem {
    User(UserRecord),
    Token {
        hash: TokenHash,
        token: TokenRecord,
    },
    AccountFlags {
        user: UserId,
        flags: AccountFlags,
    },
    Invite(InviteRecord),
    /// Consecutive messages of one conversation, ascending by seq, as stored: recalls are
    /// their own part (`recalled` is false here), and a recalled message's content is empty
    /// (gone, as it reads), whether or not the store kept it.
    Messages(Vec<MessageRecord>),
    Recall {
        conv: ConvId,
        seq: u64,
        event_seq: u64,
    },
    CursorRow {
        conv: ConvId,
        user: UserId,
        row: CursorRow,
    },
    Recency {
        user: UserId,
        bucket: u64,
        conv: ConvId,
    },
    Relation {
        owner: UserId,
        kind: RelationKind,
        other: UserId,
        record: RelationRecord,
    },
    ContactSummary {
        user: UserId,
        summary: ContactSummary,
    },
    Profile {
        user: UserId,
        profile: ProfileRecord,
    },
    Group {
        group: ConvId,
        record: GroupRecord,
    },
    Member {
        group: ConvId,
        user: UserId,
        record: MemberRecord,
    },
    UserGroup {
        user: UserId,
        group: ConvId,
        record: UserGroupRecord,
    },
    Application {
        group: ConvId,
        user: UserId,
        record: ApplicationRecord,
    },
    Mention {
        group: ConvId,
        user: UserId,
        seq: u64,
    },
    ReadHistogram {
        group: ConvId,
        histogram: ReadHistogram,
    },
    Audit {
        id: u64,
        record: AuditRecord,
    },
    PushToken {
        user: UserId,
        device_id: String,
        token: PushTokenRecord,
    },
    Owner {
        conv: ConvId,
        record: OwnerRecord,
    },
    Counter {
        counter: Counter,
        next: u64,
    },
}

impl DumpItem {
    /// Records it holds: a run's messages, else 1. Page limits and tallies count these.
    pub fn records(&self) -> usize {
        match self {
            DumpItem::Messages(run) => run.len(),
            _ => 1,
        }
    }
}

/// Where a part's export continues: the adapter's last key, opaque to everyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeKey(pub Vec<u8>);

/// One page of a part.
#[derive(Debug, Default)]
pub struct DumpPage {
    pub items: Vec<DumpItem>,
    /// Where the next page starts; `None`: the part is done.
    pub resume: Option<ResumeKey>,
}

/// A consistent view of a store to export from: every page of every part comes from the same
/// point in time.
pub trait DumpView: Send {
    /// Up to about `records_max` records of `part` after `after` (from the start when `None`),
    /// in key order. A page may pass `records_max` by less than one item (a run of messages).
    fn export(
        &self,
        part: Part,
        after: Option<&ResumeKey>,
        records_max: usize,
    ) -> Result<DumpPage, StoreError>;
}

/// Export and import of a whole store.
pub trait DumpStore: Send + Sync {
    /// A view of what is durable now; writes after this call are not in it.
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError>;

    /// Writes `items` (of any parts), durably, as they are: idempotent, and no id, seq or
    /// counter is assigned anew.
    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError>;

    /// After the last import: rebuilds what the adapter derives from imported records (counts,
    /// indexes the items do not carry). Idempotent.
    fn finish_import(&self) -> Result<(), StoreError>;

    /// Whether the store holds nothing of any part (counters at their start values count as
    /// nothing).
    fn is_empty(&self) -> Result<bool, StoreError>;

    /// Marks a copy from `Some(source)` in progress in the store itself, durably, before its
    /// first batch; `None` removes the mark once the copy is verified. A server refuses to
    /// open a store so marked where the copy's checkpoint is not beside the store (PostgreSQL:
    /// the checkpoint is in `ringchat migrate`'s working directory). Idempotent.
    fn mark_import(&self, source: Option<&str>) -> Result<(), StoreError>;
}

/// A part's count of records and order-independent checksum: the wrapping sum of each record's
/// 64-bit hash (xxh3 of its postcard form; a message is hashed alone, so run boundaries do not
/// matter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub records: u64,
    pub checksum: u64,
}

impl Tally {
    pub fn add(&mut self, item: &DumpItem) {
        match item {
            DumpItem::Messages(run) => {
                for m in run {
                    self.add_hash(&postcard::to_stdvec(m).expect("records serialise"));
                }
            }
            _ => self.add_hash(&postcard::to_stdvec(item).expect("records serialise")),
        }
    }

    /// Adds `item` as a backup holds it, `body` being the bytes it was decoded from: the hash
    /// is of those bytes, not of `item` encoded again, so that a record written by an older
    /// build (an older form this build still reads and writes anew) still matches the
    /// manifest that build wrote. `Err`: `body` is not `item`'s encoding.
    pub fn add_stored(&mut self, item: &DumpItem, body: &[u8]) -> Result<(), postcard::Error> {
        let DumpItem::Messages(run) = item else {
            self.add_hash(body);
            return Ok(());
        };
        // A run is the variant's tag, the run's length, then each message's bytes: each
        // message is hashed alone, as `add` does.
        let (_tag, rest) = postcard::take_from_bytes::<u32>(body)?;
        let (len, mut rest) = postcard::take_from_bytes::<usize>(rest)?;
        if len != run.len() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        for _ in 0..len {
            let (_, next) = postcard::take_from_bytes::<MessageRecord>(rest)?;
            self.add_hash(&rest[..rest.len() - next.len()]);
            rest = next;
        }
        Ok(())
    }

    fn add_hash(&mut self, bytes: &[u8]) {
        self.records += 1;
        self.checksum = self
            .checksum
            .wrapping_add(xxhash_rust::xxh3::xxh3_64(bytes));
    }
}

/// Counts every part of `view`, `records_max` records per page.
pub fn tally_all(
    view: &dyn DumpView,
    records_max: usize,
) -> Result<Vec<(Part, Tally)>, StoreError> {
    Part::ALL
        .into_iter()
        .map(|part| Ok((part, tally_part(view, part, records_max)?)))
        .collect()
}

/// Counts one part of `view`.
pub fn tally_part(
    view: &dyn DumpView,
    part: Part,
    records_max: usize,
) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    let mut after = None;
    loop {
        let page = view.export(part, after.as_ref(), records_max)?;
        page.items.iter().for_each(|item| tally.add(item));
        match page.resume {
            Some(next) => after = Some(next),
            None => return Ok(tally),
        }
    }
}

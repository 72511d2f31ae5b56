//! [`DumpStore`] on fjall: each part is one keyspace read from one snapshot (the one published
//! after the last persist, so it holds exactly what was acknowledged), the keyspace's key is
//! the resume key. Indexes that a part's records imply (`usernames`, `emails`, `user_tokens`,
//! `invite_codes`, `invite_issuers`, `group_names`, `user_group_counts`) are not exported: import writes them
//! beside their records, and `finish_import` counts `user_group_counts`.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use fjall::{Keyspace, Readable, Snapshot};

use super::accounts::{META_NEXT_USER_ID, decode_token, user_token_key};
use super::groups::{META_NEXT_GROUP_ID, mention_key};
use super::log::{META_NEXT_MSG_ID, decode_run};
use super::rebuild::RebuildBatch;
use super::{FjallStore, be_u64, decode, encode, key_u64, pair_key};
use crate::store::dump::{Counter, DumpItem, DumpPage, DumpStore, DumpView, Part, ResumeKey};
use crate::store::{
    AuditStore, ConvId, MessageRecord, RelationKind, StoreError, UserId, email_key, group_name_key,
    keeps_email, log_email_not_indexed, username_key,
};

/// The counters kept in `meta`, by key. The next audit id is not kept: it follows the log.
const META_COUNTERS: [(Counter, &[u8]); 4] = [
    (Counter::Message, META_NEXT_MSG_ID),
    (Counter::Group, META_NEXT_GROUP_ID),
    (Counter::User, META_NEXT_USER_ID),
    (Counter::Invite, super::account_admin::META_NEXT_INVITE_ID),
];

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("dump: {what}").into())
}

fn conv_at(key: &[u8], at: usize) -> Result<ConvId, StoreError> {
    Ok(ConvId::from_stored(key_u64(key, at)?))
}

struct FjallDumpView<'a> {
    store: &'a FjallStore,
    view: Arc<Snapshot>,
}

type Decoder = fn(&[u8], &[u8]) -> Result<DumpItem, StoreError>;

impl FjallDumpView<'_> {
    fn keyspace_of(&self, part: Part) -> Option<(&Keyspace, Decoder)> {
        let s = self.store;
        Some(match part {
            Part::Users => (&s.users, |_, v| Ok(DumpItem::User(decode(v)?))),
            Part::Tokens => (&s.tokens, |k, v| {
                let hash = k.try_into().map_err(|_| corrupt("token key"))?;
                Ok(DumpItem::Token {
                    hash,
                    token: decode_token(v)?,
                })
            }),
            Part::AccountFlags => (&s.user_flags, |k, v| {
                Ok(DumpItem::AccountFlags {
                    user: key_u64(k, 0)?,
                    flags: decode(v)?,
                })
            }),
            Part::Invites => (&s.invites, |_, v| Ok(DumpItem::Invite(decode(v)?))),
            Part::Messages => (&s.runs, |k, v| Ok(DumpItem::Messages(decode_run(k, v)?))),
            Part::Recalls => (&s.recalls, |k, v| {
                Ok(DumpItem::Recall {
                    conv: conv_at(k, 0)?,
                    seq: key_u64(k, 8)?,
                    event_seq: be_u64(v)?,
                })
            }),
            Part::CursorRows => (&s.cursor_rows, |k, v| {
                Ok(DumpItem::CursorRow {
                    conv: conv_at(k, 0)?,
                    user: key_u64(k, 8)?,
                    row: decode(v)?,
                })
            }),
            Part::Recency => (&s.recent, |k, _| {
                Ok(DumpItem::Recency {
                    user: key_u64(k, 0)?,
                    bucket: u64::MAX - key_u64(k, 8)?,
                    conv: ConvId::from_stored(u64::MAX - key_u64(k, 16)?),
                })
            }),
            Part::Relations => (&s.relations, |k, v| {
                let kind = k
                    .get(8)
                    .and_then(|b| RelationKind::from_u8(*b))
                    .ok_or_else(|| corrupt("relation kind"))?;
                Ok(DumpItem::Relation {
                    owner: key_u64(k, 0)?,
                    kind,
                    other: key_u64(k, 9)?,
                    record: decode(v)?,
                })
            }),
            Part::ContactSummaries => (&s.contact_summaries, |k, v| {
                Ok(DumpItem::ContactSummary {
                    user: key_u64(k, 0)?,
                    summary: decode(v)?,
                })
            }),
            Part::Profiles => (&s.profiles, |k, v| {
                Ok(DumpItem::Profile {
                    user: key_u64(k, 0)?,
                    profile: decode(v)?,
                })
            }),
            Part::Groups => (&s.groups, |k, v| {
                Ok(DumpItem::Group {
                    group: conv_at(k, 0)?,
                    record: decode(v)?,
                })
            }),
            Part::Members => (&s.group_members, |k, v| {
                Ok(DumpItem::Member {
                    group: conv_at(k, 0)?,
                    user: key_u64(k, 8)?,
                    record: decode(v)?,
                })
            }),
            Part::UserGroups => (&s.user_groups, |k, v| {
                Ok(DumpItem::UserGroup {
                    user: key_u64(k, 0)?,
                    group: conv_at(k, 8)?,
                    record: decode(v)?,
                })
            }),
            Part::Applications => (&s.group_applications, |k, v| {
                Ok(DumpItem::Application {
                    group: conv_at(k, 0)?,
                    user: key_u64(k, 8)?,
                    record: decode(v)?,
                })
            }),
            Part::Mentions => (&s.mentions, |k, _| {
                Ok(DumpItem::Mention {
                    group: conv_at(k, 0)?,
                    user: key_u64(k, 8)?,
                    seq: key_u64(k, 16)?,
                })
            }),
            Part::ReadHistograms => (&s.group_reads, |k, v| {
                Ok(DumpItem::ReadHistogram {
                    group: conv_at(k, 0)?,
                    histogram: decode(v)?,
                })
            }),
            Part::Audit => (&s.audit, |k, v| {
                Ok(DumpItem::Audit {
                    id: key_u64(k, 0)?,
                    record: decode(v)?,
                })
            }),
            Part::PushTokens => (&s.push_tokens, |k, v| {
                let device_id = k
                    .get(8..)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .ok_or_else(|| corrupt("push token key"))?;
                Ok(DumpItem::PushToken {
                    user: key_u64(k, 0)?,
                    device_id: device_id.to_owned(),
                    token: decode(v)?,
                })
            }),
            Part::Owners => (&s.owners, |k, v| {
                Ok(DumpItem::Owner {
                    conv: conv_at(k, 0)?,
                    record: decode(v)?,
                })
            }),
            Part::Counters => return None,
        })
    }

    /// The counters the store keeps, in one page.
    fn counters(&self) -> Result<DumpPage, StoreError> {
        let mut items = Vec::new();
        for (counter, key) in META_COUNTERS {
            if let Some(v) = self.view.get(&self.store.meta, key)? {
                items.push(DumpItem::Counter {
                    counter,
                    next: be_u64(&v)?,
                });
            }
        }
        if let Some(guard) = self.view.iter(&self.store.audit).next_back() {
            items.push(DumpItem::Counter {
                counter: Counter::Audit,
                next: key_u64(&guard.key()?, 0)? + 1,
            });
        }
        Ok(DumpPage {
            items,
            resume: None,
        })
    }
}

impl FjallDumpView<'_> {
    /// A recalled message's content, which fjall keeps in its run, is exported empty, as it
    /// reads and as a store that empties it on recall (PostgreSQL) exports it; its recall
    /// marks stay off (recalls are their own part).
    fn empty_recalled(&self, run: &mut [crate::store::MessageRecord]) -> Result<(), StoreError> {
        let Some(conv) = run.first().map(|m| m.conv_id) else {
            return Ok(());
        };
        self.store.apply_recalls(&self.view, conv, run)?;
        for m in run.iter_mut() {
            m.recalled = false;
            m.recall_event_seq = 0;
        }
        Ok(())
    }
}

impl DumpView for FjallDumpView<'_> {
    fn export(
        &self,
        part: Part,
        after: Option<&ResumeKey>,
        records_max: usize,
    ) -> Result<DumpPage, StoreError> {
        let Some((keyspace, decode_item)) = self.keyspace_of(part) else {
            return self.counters();
        };
        let from = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.0.clone()));
        let mut page = DumpPage::default();
        let mut records = 0usize;
        for guard in self
            .view
            .range::<Vec<u8>, _>(keyspace, (from, Bound::Unbounded))
        {
            let (key, value) = guard.into_inner()?;
            let mut item = decode_item(&key, &value)?;
            if let DumpItem::Messages(run) = &mut item {
                self.empty_recalled(run)?;
            }
            records += item.records();
            page.items.push(item);
            if records >= records_max.max(1) {
                page.resume = Some(ResumeKey(key.to_vec()));
                break;
            }
        }
        Ok(page)
    }
}

/// What one import batch has written so far that its later items depend on.
struct Importing<'a> {
    /// The store before the batch (the import holds the write lock).
    view: Arc<Snapshot>,
    /// Runs of messages, written last (`import_runs.rs`).
    runs: Vec<&'a [MessageRecord]>,
    /// Addresses indexed by this batch, and for whom.
    emails: HashMap<String, UserId>,
}

impl FjallStore {
    /// Adds one imported item, and the index entries its record implies, to `batch`.
    fn import_into<'a>(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        item: &'a DumpItem,
        importing: &mut Importing<'a>,
    ) -> Result<(), StoreError> {
        match item {
            DumpItem::User(u) => {
                batch.insert(&self.users, u.user_id.to_be_bytes(), encode(u));
                batch.insert(
                    &self.usernames,
                    username_key(&u.username),
                    u.user_id.to_be_bytes(),
                );
                let mail = email_key(&u.email);
                if mail.is_empty() {
                    return Ok(());
                }
                let holder = match importing.emails.get(&mail) {
                    Some(holder) => Some(*holder),
                    None => importing
                        .view
                        .get(&self.emails, &mail)?
                        .map(|v| be_u64(&v))
                        .transpose()?,
                };
                if keeps_email(u.user_id, holder) {
                    batch.insert(&self.emails, &mail, u.user_id.to_be_bytes());
                    importing.emails.insert(mail, u.user_id);
                } else {
                    log_email_not_indexed(u.user_id, holder);
                }
            }
            DumpItem::Token { hash, token } => {
                batch.insert(&self.tokens, hash, encode(token));
                batch.insert(&self.user_tokens, user_token_key(token.user_id, hash), []);
            }
            DumpItem::AccountFlags { user, flags } => {
                batch.insert(&self.user_flags, user.to_be_bytes(), encode(flags));
            }
            DumpItem::Invite(i) => {
                batch.insert(&self.invites, i.id.to_be_bytes(), encode(i));
                batch.insert(&self.invite_codes, i.code_hash, i.id.to_be_bytes());
                batch.insert(
                    &self.invite_issuers,
                    super::invite_issuers::issuer_key(&i.issuer, i.id),
                    [],
                );
            }
            DumpItem::Messages(run) => {
                if run.is_empty() {
                    return Err(corrupt("an empty run"));
                }
                let consecutive = run
                    .windows(2)
                    .all(|w| w[1].conv_id == w[0].conv_id && w[1].seq == w[0].seq + 1);
                if !consecutive {
                    return Err(corrupt("a run that is not one conversation's next seqs"));
                }
                importing.runs.push(run);
            }
            DumpItem::Recall {
                conv,
                seq,
                event_seq,
            } => batch.insert(
                &self.recalls,
                pair_key(conv.to_wire(), *seq),
                event_seq.to_be_bytes(),
            ),
            DumpItem::CursorRow { conv, user, row } => {
                batch.insert(
                    &self.cursor_rows,
                    pair_key(conv.to_wire(), *user),
                    encode(row),
                );
            }
            DumpItem::Recency { user, bucket, conv } => {
                batch.insert(
                    &self.recent,
                    super::cursors::recent_key(*user, *bucket, *conv),
                    [],
                );
            }
            DumpItem::Relation {
                owner,
                kind,
                other,
                record,
            } => batch.insert(
                &self.relations,
                super::contacts::relation_key(*owner, *kind, *other),
                encode(record),
            ),
            DumpItem::ContactSummary { user, summary } => {
                batch.insert(&self.contact_summaries, user.to_be_bytes(), encode(summary));
            }
            DumpItem::Profile { user, profile } => {
                batch.insert(&self.profiles, user.to_be_bytes(), encode(profile));
            }
            DumpItem::Group { group, record } => {
                batch.insert(&self.groups, group.to_wire().to_be_bytes(), encode(record));
                let name = super::group_names::name_key(&group_name_key(&record.name), *group);
                batch.insert(&self.group_names, name, []);
            }
            DumpItem::Member {
                group,
                user,
                record,
            } => batch.insert(
                &self.group_members,
                pair_key(group.to_wire(), *user),
                encode(record),
            ),
            DumpItem::UserGroup {
                user,
                group,
                record,
            } => batch.insert(
                &self.user_groups,
                pair_key(*user, group.to_wire()),
                encode(record),
            ),
            DumpItem::Application {
                group,
                user,
                record,
            } => batch.insert(
                &self.group_applications,
                pair_key(group.to_wire(), *user),
                encode(record),
            ),
            DumpItem::Mention { group, user, seq } => {
                batch.insert(&self.mentions, mention_key(*group, *user, *seq), []);
            }
            DumpItem::ReadHistogram { group, histogram } => {
                batch.insert(
                    &self.group_reads,
                    group.to_wire().to_be_bytes(),
                    encode(histogram),
                );
            }
            DumpItem::Audit { id, record } => {
                batch.insert(&self.audit, id.to_be_bytes(), encode(record));
            }
            DumpItem::PushToken {
                user,
                device_id,
                token,
            } => batch.insert(
                &self.push_tokens,
                super::push_tokens::key(*user, device_id),
                encode(token),
            ),
            DumpItem::Owner { conv, record } => {
                batch.insert(&self.owners, conv.to_wire().to_be_bytes(), encode(record));
            }
            DumpItem::Counter { counter, next } => {
                // The next audit id follows the imported log; nothing to keep.
                if let Some((_, key)) = META_COUNTERS.iter().find(|(c, _)| c == counter) {
                    batch.insert(&self.meta, *key, next.to_be_bytes());
                }
            }
        }
        Ok(())
    }
}

impl DumpStore for FjallStore {
    fn dump_view(&self) -> Result<Box<dyn DumpView + '_>, StoreError> {
        Ok(Box::new(FjallDumpView {
            store: self,
            view: self.view(),
        }))
    }

    fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let _writing = self.write_lock();
        self.writable()?;
        let mut batch = self.batch();
        let mut importing = Importing {
            view: self.view(),
            runs: Vec::new(),
            emails: HashMap::new(),
        };
        for item in items {
            self.import_into(&mut batch, item, &mut importing)?;
        }
        self.import_runs(&mut batch, &importing.runs)?;
        // Synced batch by batch whatever `durability` says, as `rebuild.rs` explains: of
        // batches committed unsynced, a power cut can tear one that later ones follow whole,
        // and the store would then refuse to open. One fdatasync per `--batch-records`.
        self.commit_synced(batch)
    }

    fn finish_import(&self) -> Result<(), StoreError> {
        let _writing = self.write_lock();
        self.writable()?;
        // `user_groups` is keyed (user, group): one user's rows are contiguous.
        let mut batch = RebuildBatch::new(self);
        let mut current: Option<(UserId, u64)> = None;
        let put = |batch: &mut RebuildBatch, (user, count): (UserId, u64)| {
            batch.insert(
                &self.user_group_counts,
                user.to_be_bytes(),
                super::groups::count_bytes(i64::try_from(count).unwrap_or(i64::MAX)),
            )
        };
        for guard in self.view().iter(&self.user_groups) {
            let user = key_u64(&guard.key()?, 0)?;
            current = match current {
                Some((u, n)) if u == user => Some((u, n + 1)),
                Some(done) => {
                    put(&mut batch, done)?;
                    Some((user, 1))
                }
                None => Some((user, 1)),
            };
        }
        if let Some(done) = current {
            put(&mut batch, done)?;
        }
        batch.finish()?;
        self.persist()
    }

    /// The copy's checkpoint in the data dir is the mark: a server refuses a data dir that
    /// holds one (`store/open.rs`).
    fn mark_import(&self, _source: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let view = self.view();
        for part in Part::ALL {
            let dump = FjallDumpView {
                store: self,
                view: Arc::clone(&view),
            };
            if !dump.export(part, None, 1)?.items.is_empty() {
                return Ok(false);
            }
        }
        Ok(self.last_audit_id()? == 0)
    }
}

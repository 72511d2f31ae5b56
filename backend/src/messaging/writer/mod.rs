//! The commit thread (the sequencer): the only writer of messages, conversations and cursors.
//!
//! It takes what is queued (up to `storage.commit_group_max` operations), applies them to an
//! overlay of pending state, writes the whole group in one atomic batch with one fsync, and only
//! then hands the outcomes (acks, pushes, receipts) to delivery. Because one thread assigns every
//! seq and a seq only becomes visible once its group is durable, seqs are gap-free and no ack
//! ever precedes durability. A failed commit discards the overlay: nothing it assigned is kept.
//!
//! Dedup needs no write of its own: each (conversation, member) row keeps the member's newest
//! `storage.dedup_window_messages` sends (a hash of the `client_msg_id` and the seq), and a
//! resend is recognised while its original is among them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use foldhash::fast::RandomState;

use bytes::Bytes;
use ringchat_proto::v1::{ContentType, ErrorCode};
use tokio::sync::mpsc;

use super::delivery::{Delivery, ToDeliver};
use super::members_with;
use crate::accounts::Refusal;
use crate::api::ConnRef;
use crate::contacts::ContactLimits;
use crate::contacts::ops::{ContactDone, ContactOp};
use crate::contacts::sequencer::{Relations, SendCheck};
use crate::groups::GroupsConfig;
use crate::groups::sequencer::Groups;
use crate::groups::{GroupDone, GroupOp, send::GroupMessage};
use crate::observe::otlp::MsgSpan;
use crate::store::{
    AccountStore, CommitGroup, ConvId, ConvRecord, ConversationLog, CursorRecord, CursorRow,
    CursorStore, DedupRecord, Members, Mentions, MessageRecord, Ports, RecencyMove, StoreError,
    UserId, recency_bucket,
};
use crate::time::now_ms;

mod apply;
mod ids;
mod ownership;
mod reload;

pub(crate) use ownership::first_conv_of;

/// Cached conversation heads and known users, each at most; past it the cache starts over
/// (the store has everything, the cache only saves reads).
const CACHE_ENTRIES_MAX: usize = 1 << 20;
/// Cached cursor rows (each up to about 1 KiB with a full dedup window), at most.
/// Small in tests, so that they run through the trimming.
const CURSOR_ROWS_CACHED_MAX: usize = if cfg!(test) { 16 } else { 1 << 17 };

/// The sequencer's maps: keyed by ids (and client-chosen strings) per message, so the hasher is
/// a fast one with a per-process random seed.
type Map<K, V> = HashMap<K, V, RandomState>;
type Set<K> = HashSet<K, RandomState>;

/// How the sequencer keeps rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowPolicy {
    /// Sends remembered per (conversation, sender) for dedup.
    pub dedup_window: usize,
    /// A device cursor not moved for this long is dropped at the row's next write.
    pub device_cursor_ttl_ms: u64,
}

/// One write for the commit thread, and where its answer goes.
#[derive(Debug)]
pub(crate) struct WriteOp {
    pub conn: ConnRef,
    pub request_id: u64,
    pub write: Write,
    /// When the shard queued a send (for send-to-ack latency); `None` for other writes.
    pub queued_at: Option<Instant>,
    /// Cluster mode with `[observe.otlp]`: the span of a traced write on this node, ended by
    /// delivery once its answer and frames have been handed on.
    pub trace: Option<MsgSpan>,
}

#[derive(Debug)]
pub(crate) enum Write {
    Send(NewMessage),
    Cursor(CursorMove),
    Recall {
        user: UserId,
        conv: ConvId,
        seq: u64,
    },
    /// Friendship, blocks, the DM policy (`contacts/ops.rs`).
    Contact(ContactOp),
    /// A send addressed to a group (`groups/send.rs`).
    GroupSend(GroupMessage),
    /// Group lifecycle and membership (`groups/ops.rs`).
    Group(GroupOp),
    /// An operator's notification for a batch of users' system conversations
    /// (`notifications/write.rs`).
    System(crate::notifications::SystemBatch),
}

/// A message to append, before it has a seq ([`Writer::push_message`]).
pub(crate) struct Draft {
    pub from: UserId,
    pub client_msg_id: String,
    pub content_type: i32,
    pub content: Bytes,
    pub mentions: Option<Box<Mentions>>,
}

/// Who gets a receipt or a recall: a direct conversation's members, or a group's online members
/// (resolved by delivery through `GroupOnline`, in commit order).
#[derive(Debug)]
pub(crate) enum Audience {
    Members(Members),
    Group(ConvId),
}

#[derive(Debug)]
pub(crate) struct NewMessage {
    pub from: UserId,
    pub to: UserId,
    pub client_msg_id: String,
    pub content_type: i32,
    pub content: Bytes,
    /// The media check refused it: the answer, unless it is a resend of a stored message.
    pub refused: Option<Box<Refusal>>,
}

#[derive(Debug)]
pub(crate) struct CursorMove {
    pub user: UserId,
    /// The device of the connection it came on (shared with the connection's state).
    pub device_id: Arc<str>,
    pub conv: ConvId,
    pub kind: CursorKind,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    Delivered,
    Read,
}

/// A commit group's outcomes, one per operation in order, and the messages it stored (which
/// outcomes name by index: each message is built once and moved, never copied, to delivery).
#[derive(Debug, Default)]
pub(crate) struct Committed {
    pub outcomes: Vec<Outcome>,
    pub messages: Vec<MessageRecord>,
    /// When each send of the group was queued (`WriteOp::queued_at`), for its latency.
    pub send_started: Vec<Instant>,
    /// The spans of traced writes (`WriteOp::trace`), by index in `outcomes`; empty (never
    /// allocated) when nothing of the group is traced.
    pub traces: Vec<(usize, MsgSpan)>,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    /// A new message is durable.
    Sent {
        conn: ConnRef,
        request_id: u64,
        /// Index in [`Committed::messages`].
        message: usize,
        /// Who gets the push (the sender's other sessions too).
        members: Members,
    },
    /// A resend of a stored message: ack again, push nothing.
    Duplicate {
        conn: ConnRef,
        request_id: u64,
        original: DedupRecord,
    },
    Cursor {
        conn: ConnRef,
        request_id: u64,
        conv: ConvId,
        user: UserId,
        /// Who gets the receipt.
        audience: Audience,
        cursor: CursorRecord,
        moved: bool,
    },
    Recalled {
        conn: ConnRef,
        request_id: u64,
        conv: ConvId,
        audience: Audience,
        seq: u64,
        event_seq: u64,
        /// Index of the recall event in [`Committed::messages`]; `None` when it was recalled
        /// before (the event went out then).
        event: Option<usize>,
    },
    Refused {
        conn: ConnRef,
        request_id: u64,
        refusal: Refusal,
    },
    /// A contacts write: its reply, and events for both users' other sessions.
    Contact {
        conn: ConnRef,
        request_id: u64,
        done: ContactDone,
    },
    /// A group message is durable: pushed to the group's online members.
    GroupSent {
        conn: ConnRef,
        request_id: u64,
        /// Index in [`Committed::messages`].
        message: usize,
        group: ConvId,
        /// The group's size when it was sent (offline push pushes every message of small
        /// groups only).
        member_count: u32,
    },
    /// A group write: its reply, its events, and the membership changes around them.
    Group {
        conn: ConnRef,
        request_id: u64,
        done: GroupDone,
    },
    /// A notification batch: pushed to each recipient's sessions, answered to its job.
    System(crate::notifications::SystemOutcome),
}

impl Outcome {
    fn into_unavailable(self) -> Outcome {
        if let Outcome::System(system) = self {
            return Outcome::System(system.failed());
        }
        let (conn, request_id) = match &self {
            Outcome::Sent {
                conn, request_id, ..
            }
            | Outcome::Duplicate {
                conn, request_id, ..
            }
            | Outcome::Cursor {
                conn, request_id, ..
            }
            | Outcome::Recalled {
                conn, request_id, ..
            }
            | Outcome::Contact {
                conn, request_id, ..
            }
            | Outcome::GroupSent {
                conn, request_id, ..
            }
            | Outcome::Group {
                conn, request_id, ..
            } => (*conn, *request_id),
            Outcome::Refused { .. } | Outcome::System(_) => return self,
        };
        Outcome::Refused {
            conn,
            request_id,
            // The group's failure is logged once, not once per operation.
            refusal: Refusal::store_away("commit failed"),
        }
    }
}

pub(crate) struct Writer {
    log: Arc<dyn ConversationLog>,
    rows: Arc<dyn CursorStore>,
    accounts: Arc<dyn AccountStore>,
    recall_window_ms: u64,
    group_max: usize,
    /// See [`Writer::set_commit_delay`].
    commit_delay: std::time::Duration,
    commit_delay_min_ops: usize,
    pub(crate) policy: RowPolicy,
    /// Committed state.
    next_msg_id: u64,
    convs: Map<ConvId, ConvRecord>,
    cursors: Map<(ConvId, UserId), CursorRow>,
    known_users: Set<UserId>,
    /// Relations a send is checked against, and the contacts writes of the group.
    pub(crate) contacts: Relations,
    /// Groups and members a group send is checked against, and the groups writes.
    pub(crate) groups: Groups,
    /// The group being built and its overlay.
    pub(crate) group: CommitGroup,
    pending_next_msg_id: u64,
    pending_convs: Map<ConvId, ConvRecord>,
    pending_cursors: Map<(ConvId, UserId), CursorRow>,
    /// A commit failed: the counters are read again before the next group (`reload.rs`).
    reload: bool,
    /// Cluster mode: the conversations this node holds (`ownership.rs`); `None` on one box.
    pub(crate) ownership: Option<ownership::Ownership>,
}

impl Writer {
    pub fn new(
        ports: &Ports,
        recall_window_ms: u64,
        group_max: usize,
        policy: RowPolicy,
        contact_limits: ContactLimits,
        group_limits: GroupsConfig,
    ) -> Result<Self, StoreError> {
        let next_msg_id = ports.log.next_msg_id()?;
        Ok(Self {
            log: Arc::clone(&ports.log),
            rows: Arc::clone(&ports.cursors),
            accounts: Arc::clone(&ports.accounts),
            recall_window_ms,
            group_max,
            commit_delay: std::time::Duration::ZERO,
            commit_delay_min_ops: usize::MAX,
            policy,
            next_msg_id,
            convs: Map::default(),
            cursors: Map::default(),
            known_users: Set::default(),
            contacts: Relations::new(
                Arc::clone(&ports.contacts),
                Arc::clone(&ports.accounts),
                contact_limits,
            ),
            groups: Groups::new(Arc::clone(&ports.groups), group_limits)?,
            group: CommitGroup::default(),
            pending_next_msg_id: next_msg_id,
            pending_convs: Map::default(),
            pending_cursors: Map::default(),
            reload: false,
            ownership: None,
        })
    }

    /// A group that has at least `min_ops` writes but room for more waits `delay` for them
    /// before it commits (`storage.commit_delay_us`, like PostgreSQL's `commit_delay`): when
    /// writes trickle in, fewer and fuller groups, each one fsync and one wake-up per shard.
    /// A lone write (fewer than `min_ops`) never waits.
    pub fn set_commit_delay(&mut self, delay: std::time::Duration, min_ops: usize) {
        self.commit_delay = delay;
        self.commit_delay_min_ops = min_ops.max(1);
    }

    /// Runs until every sender of `ops` is gone, then returns after the last group is durable.
    pub fn run(
        mut self,
        mut ops: mpsc::Receiver<WriteOp>,
        delivery: &Delivery,
        task: mpsc::Sender<ToDeliver>,
    ) {
        let group_max = self.group_max.max(1);
        let mut batch = Vec::with_capacity(group_max);
        // Waits for the first write, then takes it and what is queued behind it (up to
        // `group_max`) at once: the queue's permits go back in one release, not one per write.
        while ops.blocking_recv_many(&mut batch, group_max) > 0 {
            if !self.commit_delay.is_zero()
                && batch.len() >= self.commit_delay_min_ops
                && batch.len() < group_max
            {
                std::thread::sleep(self.commit_delay);
                take_queued(&mut ops, &mut batch, group_max);
            }
            // Every message of the group is stamped at or after this.
            delivery.in_flight.begin(crate::time::now_ms());
            let results = self.commit(&mut batch);
            if delivery.pass_on(results, &task).is_err() {
                break;
            }
        }
        tracing::info!("commit thread stopped");
    }

    /// Applies and commits one group; returns one outcome per operation, in order.
    pub fn commit(&mut self, batch: &mut Vec<WriteOp>) -> Committed {
        // Between commit groups no loaded row is referenced: the one place the cache may be
        // dropped besides `promote` (a group of refused ops never gets there).
        if self.cursors.len() > CURSOR_ROWS_CACHED_MAX {
            self.cursors.clear();
        }
        // One allocation per group, none per message.
        let mut send_started = Vec::with_capacity(batch.len());
        let mut traces = Vec::new();
        if let Err(err) = self.reload_after_failure() {
            return Committed {
                outcomes: batch
                    .drain(..)
                    .map(|op| reload::refused_unapplied(op, &err))
                    .collect(),
                messages: Vec::new(),
                send_started,
                traces,
            };
        }
        // Cluster mode: claims and fences (empty, no allocation, on one box).
        let mut refusals = self.fence_group(batch).into_iter();
        let mut results: Vec<Outcome> = batch
            .drain(..)
            .enumerate()
            .map(|(i, mut op)| {
                send_started.extend(op.queued_at);
                if let Some(span) = op.trace.take() {
                    traces.push((i, span));
                }
                match refusals.next().flatten() {
                    Some(refusal) => reload::refused(op, refusal),
                    None => self.apply(op),
                }
            })
            .collect();
        if let Some(err) = self.ownership.as_mut().and_then(|o| o.ids_failed.take()) {
            tracing::warn!(%err, "cluster: no message ids could be leased; the group is refused");
            self.discard();
            self.group.clear();
            return Committed {
                outcomes: results.into_iter().map(Outcome::into_unavailable).collect(),
                messages: Vec::new(),
                send_started,
                traces,
            };
        }
        if self.pending_next_msg_id != self.next_msg_id {
            self.group.next_msg_id = Some(self.pending_next_msg_id);
        }
        self.move_recency();
        self.contacts.drain_into(&mut self.group.contacts);
        self.groups.drain_into(&mut self.group.groups);
        // Moved, not copied: they return to the cache once durable.
        self.group.cursor_rows.extend(
            self.pending_cursors
                .drain()
                .map(|((conv, user), row)| (conv, user, row)),
        );
        let appended = if self.group.is_empty() {
            // Answered from this node's caches: in cluster mode only while its conversations
            // are still this node's (a group that writes has the append check its fences).
            match self.fences_held() {
                Ok(()) => {
                    return Committed {
                        outcomes: results,
                        messages: Vec::new(),
                        send_started,
                        traces,
                    };
                }
                Err(err) => Err(err),
            }
        } else {
            self.log.append(&self.group)
        };
        let mut messages = Vec::new();
        match appended {
            Ok(()) => {
                messages = self.group.messages.drain(..).collect();
                self.promote();
            }
            // A failed write or fsync of the embedded store stops every later write (the store
            // refuses them: see `StoreHealth`), and the server stops: nothing is acknowledged
            // on top of a failure, and senders resend by client_msg_id after the restart. A
            // networked store that was away takes the next group (`reload.rs`).
            Err(err) => {
                if let StoreError::Fenced { stale } = &err {
                    self.lost(stale);
                } else {
                    tracing::error!(%err, "group commit failed; its writes are refused");
                }
                self.discard();
                results = results.into_iter().map(Outcome::into_unavailable).collect();
            }
        }
        // Cleared, not dropped: the next group reuses its buffers.
        self.group.clear();
        Committed {
            outcomes: results,
            messages,
            send_started,
            traces,
        }
    }

    /// Moves the members' recency entries of every conversation whose last activity entered a
    /// new hour in this group. The bucket left is read from the committed head in the cache; if
    /// the cache lost it, the old entry lingers (readers skip it: it no longer matches the head).
    fn move_recency(&mut self) {
        for (conv, head) in &self.pending_convs {
            let to = recency_bucket(head.last_time_ms);
            let from = self
                .convs
                .get(conv)
                .filter(|c| c.max_seq > 0)
                .map(|c| recency_bucket(c.last_time_ms));
            if from == Some(to) {
                continue;
            }
            // Stored members (groups) come with the groups issue.
            let Some(members) = conv.implied_members() else {
                continue;
            };
            for &user in members.all() {
                self.group.recency.push(RecencyMove {
                    user,
                    conv: *conv,
                    from,
                    to,
                });
            }
        }
    }

    fn promote(&mut self) {
        self.next_msg_id = self.pending_next_msg_id;
        self.groups.promote(&mut self.group.groups);
        if self.convs.len() + self.pending_convs.len() > CACHE_ENTRIES_MAX {
            self.convs.clear();
        }
        if self.cursors.len() + self.group.cursor_rows.len() > CURSOR_ROWS_CACHED_MAX {
            self.cursors.clear();
        }
        self.convs.extend(self.pending_convs.drain());
        // A notification to everyone writes every user's system row once: kept out of the
        // cache, so that it does not push out the rows of the conversations people write in.
        self.cursors.extend(
            self.group
                .cursor_rows
                .drain(..)
                .filter(|(conv, _, _)| conv.kind() != crate::store::ConvKind::System)
                .map(|(conv, user, row)| ((conv, user), row)),
        );
    }

    fn discard(&mut self) {
        self.pending_next_msg_id = self.next_msg_id;
        self.reload = true;
        self.pending_convs.clear();
        self.pending_cursors.clear();
        self.contacts.discard();
        self.groups.discard();
        // The store may hold part of nothing or all of the group; reload from it.
        self.convs.clear();
        self.cursors.clear();
    }

    pub(crate) fn take_msg_id(&mut self) -> u64 {
        // Cluster mode: from this node's leased block (`ids.rs`); the counter is never written
        // by a commit group. An id that cannot be leased refuses the whole group.
        if let Some(own) = self.ownership.as_mut() {
            return match own.ids.take(crate::store::IdKind::Message) {
                Ok(id) => id,
                Err(err) => {
                    own.ids_failed.get_or_insert(err);
                    0
                }
            };
        }
        let id = self.pending_next_msg_id;
        self.pending_next_msg_id += 1;
        id
    }

    /// A new group's id: from this node's leased block in cluster mode (its conversation was
    /// claimed by `fence_group`), else the next of the counter the commit group advances.
    pub(crate) fn take_group_id(&mut self) -> Result<ConvId, Refusal> {
        let id = match self.ownership.as_mut() {
            Some(own) => Some(own.ids.take(crate::store::IdKind::Group)?),
            None => None,
        };
        id.map_or_else(|| self.groups.take_group_id(), ConvId::group)
            .ok_or_else(|| Refusal::unavailable("group ids are exhausted"))
    }

    pub(crate) fn user_exists(&mut self, user: UserId) -> Result<bool, StoreError> {
        if self.known_users.contains(&user) {
            return Ok(true);
        }
        let exists = self.accounts.user_by_id(user)?.is_some();
        if exists {
            if self.known_users.len() >= CACHE_ENTRIES_MAX {
                self.known_users.clear();
            }
            self.known_users.insert(user);
        }
        Ok(exists)
    }

    pub(crate) fn conv(&mut self, conv: ConvId) -> Result<ConvRecord, StoreError> {
        if let Some(c) = self
            .pending_convs
            .get(&conv)
            .or_else(|| self.convs.get(&conv))
        {
            return Ok(*c);
        }
        let Some(record) = self.log.conversation(conv)? else {
            // Not cached: ids a client merely names must not fill the cache.
            return Ok(ConvRecord::default());
        };
        if self.convs.len() >= CACHE_ENTRIES_MAX {
            self.convs.clear();
        }
        self.convs.insert(conv, record);
        Ok(record)
    }

    /// A message of the commit group being built, or else a stored one.
    pub(crate) fn message_at(
        &self,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let pending =
            (self.group.messages.iter().rev()).find(|m| m.conv_id == conv && m.seq == seq);
        match pending {
            Some(m) => Ok(Some(m.clone())),
            None => self.log.message(conv, seq),
        }
    }

    pub(crate) fn put_conv(&mut self, conv: ConvId, record: ConvRecord) {
        self.pending_convs.insert(conv, record);
    }

    /// Appends a message with the next seq of a conversation whose head the caller read (and
    /// keeps the head moving); returns its index in the group's messages.
    pub(crate) fn push_message(
        &mut self,
        conv: ConvId,
        head: &mut ConvRecord,
        draft: Draft,
    ) -> usize {
        let Draft {
            from,
            client_msg_id,
            content_type,
            content,
            mentions,
        } = draft;
        let message = MessageRecord {
            conv_id: conv,
            seq: head.max_seq + 1,
            msg_id: self.take_msg_id(),
            from,
            to: 0,
            client_msg_id,
            content_type,
            content,
            server_time_ms: now_ms().max(head.last_time_ms),
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions,
        };
        head.max_seq = message.seq;
        head.last_time_ms = message.server_time_ms;
        self.put_conv(conv, *head);
        self.group.messages.push(message);
        self.group.messages.len() - 1
    }

    /// Makes the (conversation, user) row available to [`Self::row`] and [`Self::row_mut`]
    /// until the operation ends: the only step that reads the store (and so can fail).
    pub(crate) fn load_row(&mut self, conv: ConvId, user: UserId) -> Result<(), StoreError> {
        let key = (conv, user);
        if self.pending_cursors.contains_key(&key) || self.cursors.contains_key(&key) {
            return Ok(());
        }
        let row = self.rows.cursor_row(conv, user)?.unwrap_or_default();
        // Never cleared here: an operation that loads several rows (a group invite) relies on
        // the ones it loaded first. The cache is trimmed between commit groups (`commit`,
        // `promote`), so it exceeds its bound by at most one group's rows.
        self.cursors.insert(key, row);
        Ok(())
    }

    /// [`Self::load_row`] of many rows, with one store read for those not in memory.
    pub(crate) fn load_rows(&mut self, keys: &[(ConvId, UserId)]) -> Result<(), StoreError> {
        let missing: Vec<(ConvId, UserId)> = keys
            .iter()
            .filter(|k| !self.pending_cursors.contains_key(k) && !self.cursors.contains_key(k))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let rows = self.rows.cursor_rows(&missing)?;
        for (key, row) in missing.into_iter().zip(rows) {
            self.cursors.insert(key, row.unwrap_or_default());
        }
        Ok(())
    }

    /// [`Self::conv`] of many conversations, with one store read for those not in memory.
    pub(crate) fn heads(&mut self, convs: &[ConvId]) -> Result<Vec<ConvRecord>, StoreError> {
        let known =
            |w: &Self, c: &ConvId| w.pending_convs.get(c).or_else(|| w.convs.get(c)).copied();
        let missing: Vec<ConvId> = convs
            .iter()
            .filter(|c| known(self, c).is_none())
            .copied()
            .collect();
        if !missing.is_empty() {
            let stored = self.log.last_messages(&missing)?;
            if self.convs.len() + missing.len() > CACHE_ENTRIES_MAX {
                self.convs.clear();
            }
            // Cached like `conv` does (the recency move reads the head it replaces); ids
            // without a message are not (they are the default).
            for (conv, last) in missing.into_iter().zip(stored) {
                if let Some(m) = last {
                    let head = ConvRecord {
                        max_seq: m.seq,
                        last_time_ms: m.server_time_ms,
                    };
                    self.convs.insert(conv, head);
                }
            }
        }
        Ok(convs
            .iter()
            .map(|c| known(self, c).unwrap_or_default())
            .collect())
    }

    /// The row as this group leaves it so far; [`Self::load_row`] came first.
    pub(crate) fn row(&self, conv: ConvId, user: UserId) -> &CursorRow {
        let key = (conv, user);
        self.pending_cursors
            .get(&key)
            .or_else(|| self.cursors.get(&key))
            .expect("load_row comes first")
    }

    /// The row to change: moved into the group's overlay (and back to the cache once durable),
    /// written whole.
    pub(crate) fn row_mut(&mut self, conv: ConvId, user: UserId) -> &mut CursorRow {
        let key = (conv, user);
        if !self.pending_cursors.contains_key(&key) {
            let row = self.cursors.remove(&key).expect("load_row comes first");
            self.pending_cursors.insert(key, row);
        }
        self.pending_cursors.get_mut(&key).expect("just inserted")
    }
}

/// Moves what is queued into `batch`, up to `max`, without waiting for more: in one take, so
/// that the queue's permits go back in one release, not one per write.
fn take_queued<T>(ops: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) {
    let room = max.saturating_sub(batch.len());
    // Not empty: returns at once (a send half done is waited for, as `try_recv` waits for it).
    if room > 0 && !ops.is_empty() {
        ops.blocking_recv_many(batch, room);
    }
}

#[cfg(test)]
#[path = "take_tests.rs"]
mod take_tests;

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => {
                Refusal::new(ErrorCode::UsernameTaken, "username is taken")
            }
            StoreError::EmailTaken => Refusal::new(
                ErrorCode::EmailTaken,
                "another account has this e-mail address",
            ),
            e @ StoreError::Unavailable(_) => Refusal::store_away(e),
            other => Refusal::unavailable(other),
        }
    }
}

//! The sequencer's operations, each applied to the overlay of the group being built: a send
//! (dedup, seq, the block and DM-policy check), a cursor move, a recall, a contacts write. A
//! refusal leaves the overlay as it was.

use super::*;
use crate::groups::roles::{Action, Verdict, verdict};
use crate::messaging::reads::within;
use crate::store::{ConvKind, DEDUP_CANDIDATES_MAX, GroupRole};

fn not_found() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such conversation")
}

/// Unread messages of a direct conversation a recall across a block looks at, at most, to
/// tell whether the other user has anything left to read (`Writer::nothing_to_read`): point
/// reads on the sequencer's thread, so few.
const UNREAD_CHECKED_MAX: u64 = 8;

/// What a cursor move may do (`Writer::cursor_scope`).
struct CursorScope {
    /// Who gets the receipt.
    audience: Audience,
    /// The cursors move at most this far (a former group member's: the seq it left at).
    last_seq: u64,
    /// The group's read histogram counts the user (a current member).
    counted: bool,
}

impl Writer {
    pub(super) fn apply(&mut self, op: WriteOp) -> Outcome {
        let WriteOp {
            conn,
            request_id,
            write,
            ..
        } = op;
        let result = match write {
            Write::Send(message) => self.send(conn, request_id, message),
            Write::Cursor(cursor) => self.cursor_op(conn, request_id, cursor),
            Write::Recall { user, conv, seq } => self.recall(conn, request_id, user, conv, seq),
            Write::Contact(op) => self.contact(conn, request_id, op),
            Write::GroupSend(message) => self.group_send(conn, request_id, message),
            Write::Group(op) => self.group_write(op).map(|done| Outcome::Group {
                conn,
                request_id,
                done,
            }),
            Write::System(batch) => Ok(self.system_batch(batch)),
        };
        result.unwrap_or_else(|refusal| Outcome::Refused {
            conn,
            request_id,
            refusal,
        })
    }

    fn send(
        &mut self,
        conn: ConnRef,
        request_id: u64,
        new: NewMessage,
    ) -> Result<Outcome, Refusal> {
        let NewMessage {
            from,
            to,
            client_msg_id,
            content_type,
            content,
            refused,
        } = new;
        let conv_id = ConvId::direct(from, to)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "not a conversation"))?;
        // Every read that can fail comes before the first change to the group: a refusal must
        // leave nothing behind (no dedup record, no seq taken).
        self.load_row(conv_id, from)?;
        if let Some(original) = self.sent_before(conv_id, from, &client_msg_id)? {
            return Ok(Outcome::Duplicate {
                conn,
                request_id,
                original,
            });
        }
        if let Some(refusal) = refused {
            return Err(*refusal);
        }
        // One lookup when the pair is cached; a cached pair's recipient exists.
        let check = match self.contacts.cached_send_check(conv_id, from) {
            Some(check) => check,
            None => {
                if !self.user_exists(to)? {
                    return Err(Refusal::new(
                        ErrorCode::UserNotFound,
                        format!("no user {to}"),
                    ));
                }
                self.contacts.load_send_check(conv_id, from)?
            }
        };
        // A cluster node's cached policies may predate a change made on another node: the
        // send that opens a conversation reads them again.
        let check = if self.ownership.is_some()
            && !matches!(check, SendCheck::Refused(_))
            && self.conv(conv_id)?.max_seq == 0
        {
            self.contacts.fresh_send_check(conv_id, from)?
        } else {
            check
        };
        if let Some(refusal) =
            check.refusal(|| Ok::<_, StoreError>(self.conv(conv_id)?.max_seq > 0))?
        {
            return Err(refusal);
        }
        let members = conv_id
            .implied_members()
            .expect("a direct conversation's members are implied");
        let mut conv = self.conv(conv_id)?;
        let message = MessageRecord {
            conv_id,
            seq: conv.max_seq + 1,
            msg_id: self.take_msg_id(),
            from,
            to,
            client_msg_id,
            content_type,
            content,
            server_time_ms: now_ms().max(conv.last_time_ms),
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        };
        conv.max_seq = message.seq;
        conv.last_time_ms = message.server_time_ms;
        self.put_conv(conv_id, conv);
        let window = self.policy.dedup_window;
        self.row_mut(conv_id, from)
            .remember_send(&message.client_msg_id, message.seq, window);
        self.mark_own_message_read(conv_id, from, message.seq);
        self.group.messages.push(message);
        Ok(Outcome::Sent {
            conn,
            request_id,
            message: self.group.messages.len() - 1,
            members,
        })
    }

    /// The stored send of `(from, client_msg_id)` into `conv`, if it is in the sender's dedup
    /// window. A hash match is confirmed against the stored message.
    pub(crate) fn sent_before(
        &self,
        conv: ConvId,
        from: UserId,
        client_msg_id: &str,
    ) -> Result<Option<DedupRecord>, StoreError> {
        self.sent_before_in(conv, from, from, client_msg_id)
    }

    /// [`Self::sent_before`], with the window kept in `row_of`'s row (a system conversation's
    /// sends, by the server, are remembered in its one user's row).
    pub(crate) fn sent_before_in(
        &self,
        conv: ConvId,
        row_of: UserId,
        from: UserId,
        client_msg_id: &str,
    ) -> Result<Option<DedupRecord>, StoreError> {
        let same = |m: &MessageRecord| m.from == from && m.client_msg_id == client_msg_id;
        // Newest first: this group's sends (not durable yet: they are acked together after
        // the commit) come before the stored ones.
        let mut stored = [(conv, 0); DEDUP_CANDIDATES_MAX];
        let mut n = 0;
        let row = self.row(conv, row_of);
        for seq in row.maybe_sent(client_msg_id).take(DEDUP_CANDIDATES_MAX) {
            let pending = self
                .group
                .messages
                .iter()
                .find(|m| m.conv_id == conv && m.seq == seq);
            match pending {
                Some(m) if same(m) => return Ok(Some(DedupRecord::from(m))),
                Some(_) => {}
                None => {
                    stored[n].1 = seq;
                    n += 1;
                }
            }
        }
        if n == 0 {
            return Ok(None);
        }
        // One read for every stored candidate (one round trip on a networked store).
        let found = self.log.messages_at(&stored[..n])?;
        Ok(found
            .iter()
            .flatten()
            .find(|m| same(m))
            .map(DedupRecord::from))
    }

    /// A sender has read everything up to its own message.
    pub(crate) fn mark_own_message_read(&mut self, conv: ConvId, user: UserId, seq: u64) {
        let cursor = &mut self.row_mut(conv, user).cursor;
        cursor.read_seq = cursor.read_seq.max(seq);
        cursor.delivered_seq = cursor.delivered_seq.max(seq);
    }

    fn cursor_op(
        &mut self,
        conn: ConnRef,
        request_id: u64,
        cursor_move: CursorMove,
    ) -> Result<Outcome, Refusal> {
        let CursorMove {
            user,
            device_id,
            conv: conv_id,
            kind,
            seq,
        } = cursor_move;
        let CursorScope {
            audience,
            last_seq,
            counted,
        } = self.cursor_scope(conv_id, user)?;
        let conv = self.conv(conv_id)?;
        let seq = seq.min(conv.max_seq).min(last_seq);
        self.load_row(conv_id, user)?;
        let row = self.row(conv_id, user);
        let before = row.cursor;
        let mut cursor = before;
        let device_moves =
            kind == CursorKind::Delivered && seq > row.device_cursor(&device_id).unwrap_or(0);
        match kind {
            CursorKind::Delivered => cursor.delivered_seq = cursor.delivered_seq.max(seq),
            CursorKind::Read => {
                cursor.read_seq = cursor.read_seq.max(seq);
                cursor.delivered_seq = cursor.delivered_seq.max(cursor.read_seq);
            }
        }
        let moved = cursor != before;
        if moved || device_moves {
            let ttl = self.policy.device_cursor_ttl_ms;
            let row = self.row_mut(conv_id, user);
            row.cursor = cursor;
            if device_moves {
                // A device's own cursor only moves forward too.
                let now = now_ms();
                row.move_device(&device_id, seq, now, now.saturating_sub(ttl));
            }
        }
        if cursor.read_seq != before.read_seq && counted {
            self.groups
                .read_moved(conv_id, before.read_seq, cursor.read_seq);
        }
        Ok(Outcome::Cursor {
            conn,
            request_id,
            conv: conv_id,
            user,
            audience,
            cursor,
            moved,
        })
    }

    fn recall(
        &mut self,
        conn: ConnRef,
        request_id: u64,
        user: UserId,
        conv_id: ConvId,
        seq: u64,
    ) -> Result<Outcome, Refusal> {
        let no_such_message = || Refusal::new(ErrorCode::NotFound, "no such message");
        // A direct conversation's members, or the recaller's role in a group.
        let (members, role) = match conv_id.kind() {
            ConvKind::Group => {
                let me = self.groups.member(conv_id, user)?.ok_or_else(not_found)?;
                // What the member may not read is not there for it: the same answer as for a
                // seq never sent, so that a recall cannot probe hidden history.
                if !within(me.visible_seqs(), seq) {
                    return Err(no_such_message());
                }
                self.groups.load_reads(conv_id)?;
                (None, Some(me.role))
            }
            _ => (Some(members_with(conv_id, user)?), None),
        };
        let mut original = self.message_at(conv_id, seq)?.ok_or_else(no_such_message)?;
        if let Some((_, _, event_seq)) = self
            .group
            .recalls
            .iter()
            .find(|(c, s, _)| *c == conv_id && *s == seq)
        {
            original.recalled = true;
            original.recall_event_seq = *event_seq;
        }
        let mut window_ms = self.recall_window_ms;
        if original.from != user {
            // In groups the owner and admins recall others' messages (roles.rs).
            let author = match role {
                Some(_) => self.groups.member(conv_id, original.from)?,
                None => None,
            };
            let author_role = author.map_or(GroupRole::Member, |m| m.role);
            match role.map(|r| verdict(r, Action::RecallOthers(author_role))) {
                Some(Verdict::Allowed) => {
                    window_ms = self
                        .groups
                        .limits
                        .admin_recall_window_s
                        .saturating_mul(1000);
                }
                _ => {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only the sender can recall a message",
                    ));
                }
            }
        }
        if role.is_some()
            && self
                .groups
                .gate(conv_id)?
                .is_some_and(|g| g.dissolved_seq != 0)
        {
            return Err(Refusal::new(
                ErrorCode::GroupDissolved,
                "the group was dissolved: nothing new is accepted",
            ));
        }
        if original.content_type == ContentType::GroupEvent as i32 {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "a group event cannot be recalled",
            ));
        }
        if original.content_type == ContentType::Recall as i32 {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "a recall event cannot be recalled",
            ));
        }
        // Across a block the recall is stored (the sender may hide its own message) but is
        // not the other user's news: only the recaller's sessions hear of it, as a reader's
        // receipts across a block stay with the reader (`cursor_scope`). The pair's owner
        // writes its blocks, so its cache is current.
        // The wire's `to_user_id`: a direct conversation's other member, taken from the
        // conversation before a block narrows who is told (it is stored for good).
        let peer = members.as_ref().and_then(|m| m.others(user).next());
        let blocked_peer = match peer {
            Some(peer)
                if conv_id.kind() == ConvKind::Direct
                    && self.contacts.blocked_either_way(conv_id)? =>
            {
                Some(peer)
            }
            _ => None,
        };
        let audience = match members {
            Some(_) if blocked_peer.is_some() => Audience::Members(Members::one(user)),
            Some(members) => Audience::Members(members),
            None => Audience::Group(conv_id),
        };
        if original.recalled {
            return Ok(Outcome::Recalled {
                conn,
                request_id,
                conv: conv_id,
                audience,
                seq,
                event_seq: original.recall_event_seq,
                event: None,
            });
        }
        let now = now_ms();
        if now.saturating_sub(original.server_time_ms) > window_ms {
            return Err(Refusal::new(
                ErrorCode::RecallWindowPassed,
                format!(
                    "messages can be recalled within {} s of sending",
                    window_ms / 1000
                ),
            ));
        }
        let mut conv = self.conv(conv_id)?;
        self.load_row(conv_id, user)?;
        // Across a block the event is no activity for the other user: it keeps the
        // conversation's last activity (neither list moves), and when the other user had
        // nothing left to read before it, their read cursor moves over it (no unread badge).
        let (server_time_ms, peer_reads_to) = match blocked_peer {
            Some(peer) => {
                self.load_row(conv_id, peer)?;
                let read_seq = self.row(conv_id, peer).cursor.read_seq;
                let caught_up = self.nothing_to_read(conv_id, read_seq, conv.max_seq, seq)?;
                (conv.last_time_ms, caught_up.then_some(peer))
            }
            None => (now.max(conv.last_time_ms), None),
        };
        if role.is_some()
            && let Some(mentions) = &original.mentions
        {
            // A recalled message mentions nobody any more (no unread mention badge).
            self.groups.remove_mentions(conv_id, seq, mentions);
        }
        let event = MessageRecord {
            conv_id,
            seq: conv.max_seq + 1,
            msg_id: self.take_msg_id(),
            from: user,
            to: peer.unwrap_or(0),
            client_msg_id: String::new(),
            content_type: ContentType::Recall as i32,
            content: Bytes::new(),
            server_time_ms,
            recalled: false,
            recall_of_seq: seq,
            recall_event_seq: 0,
            mentions: None,
        };
        conv.max_seq = event.seq;
        conv.last_time_ms = event.server_time_ms;
        self.put_conv(conv_id, conv);
        let event_seq = event.seq;
        self.group.recalls.push((conv_id, seq, event_seq));
        self.group.messages.push(event);
        if role.is_some() {
            self.mark_own_group_message_read(conv_id, user, event_seq);
        } else {
            self.mark_own_message_read(conv_id, user, event_seq);
        }
        if let Some(peer) = peer_reads_to {
            self.mark_own_message_read(conv_id, peer, event_seq);
        }
        Ok(Outcome::Recalled {
            conn,
            request_id,
            conv: conv_id,
            audience,
            seq,
            event_seq,
            event: Some(self.group.messages.len() - 1),
        })
    }

    /// Whether the messages of `conv` after `read_seq` up to `max_seq` leave nothing to read
    /// once `recalling` is recalled: each is recalled or a recall event. Reads at most
    /// [`UNREAD_CHECKED_MAX`] messages (more unread: not looked at, `false`).
    fn nothing_to_read(
        &self,
        conv: ConvId,
        read_seq: u64,
        max_seq: u64,
        recalling: u64,
    ) -> Result<bool, StoreError> {
        if max_seq.saturating_sub(read_seq) > UNREAD_CHECKED_MAX {
            return Ok(false);
        }
        for seq in read_seq + 1..=max_seq {
            if seq == recalling
                || self
                    .group
                    .recalls
                    .iter()
                    .any(|(c, s, _)| *c == conv && *s == seq)
            {
                continue;
            }
            let empty = self
                .message_at(conv, seq)?
                .is_none_or(|m| m.recalled || m.content_type == ContentType::Recall as i32);
            if !empty {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Who gets a cursor move's receipt, how far the cursors may move, and whether the group's
    /// read histogram counts the user: the other member of a direct conversation; a group's
    /// online members up to `groups.receipts_members_max` members, else only the user's own
    /// other sessions (larger groups ask GroupReadCount), counted (its histogram loaded). A
    /// former member (removed, or left, and not hidden the group) still moves its own cursors,
    /// up to the seq it left at, so that its unread count can clear: only its own sessions
    /// hear of it, and it is not counted (the histogram counts current members).
    fn cursor_scope(&mut self, conv: ConvId, user: UserId) -> Result<CursorScope, Refusal> {
        if conv.kind() != ConvKind::Group {
            let mut members = members_with(conv, user)?;
            // Across a block the reader's receipts stay with the reader (they would tell the
            // blocked side when the reader is active). The pair's owner writes its blocks, so
            // its cache is current (no fresh read).
            if conv.kind() == ConvKind::Direct && self.contacts.blocked_either_way(conv)? {
                members = Members::one(user);
            }
            return Ok(CursorScope {
                audience: Audience::Members(members),
                last_seq: u64::MAX,
                counted: false,
            });
        }
        if self.groups.member(conv, user)?.is_none() {
            let row = self
                .groups
                .user_group(user, conv)?
                .filter(|r| !r.is_member())
                .ok_or_else(not_found)?;
            return Ok(CursorScope {
                audience: Audience::Members(Members::one(user)),
                last_seq: row.last_visible_seq(),
                counted: false,
            });
        }
        self.groups.load_reads(conv)?;
        let group = self.groups.gate(conv)?.ok_or_else(not_found)?;
        let audience = if group.member_count <= self.groups.limits.receipts_members_max {
            Audience::Group(conv)
        } else {
            Audience::Members(Members::one(user))
        };
        Ok(CursorScope {
            audience,
            last_seq: u64::MAX,
            counted: true,
        })
    }

    fn contact(
        &mut self,
        conn: ConnRef,
        request_id: u64,
        op: ContactOp,
    ) -> Result<Outcome, Refusal> {
        if let Some(other) = op.must_exist()
            && !self.user_exists(other)?
        {
            return Err(Refusal::new(
                ErrorCode::UserNotFound,
                format!("no user {other}"),
            ));
        }
        let done = self.contacts.apply(op, now_ms())?;
        Ok(Outcome::Contact {
            conn,
            request_id,
            done,
        })
    }
}

#[cfg(test)]
#[path = "dedup_tests.rs"]
mod dedup_tests;

//! A message into a group: the sender's member row (one lookup when cached), dedup (a former
//! member's too), then the group's rules (dissolved, mutes, mentions), then the next seq. Stored once for the group;
//! nothing is written per member.

use bytes::Bytes;
use ringchat_proto::v1::ErrorCode;

use super::ops::{dissolved, not_found};
use super::roles::{Action, Verdict, may_send_under_mute_all, verdict};
use super::sequencer::GroupGate;
use crate::accounts::Refusal;
use crate::api::ConnRef;
use crate::messaging::writer::{Draft, Outcome, Writer};
use crate::store::{ConvId, MENTION_ALL_USER, MemberRecord, Mentions, UserId};
use crate::time::now_ms;

/// A send addressed to a group.
#[derive(Debug)]
pub(crate) struct GroupMessage {
    pub from: UserId,
    pub g: ConvId,
    pub client_msg_id: String,
    pub content_type: i32,
    pub content: Bytes,
    pub mention_user_ids: Vec<UserId>,
    pub mention_all: bool,
    /// As `NewMessage::refused`.
    pub refused: Option<Box<Refusal>>,
}

/// Why `me` may not speak in `group` at `now` (ms), if it may not: the group was dissolved
/// (GROUP_DISSOLVED), the member is muted, or mute-all holds for its role (MUTED). The one
/// check a send (on the sequencer) and typing (on the read pool) go through.
pub(crate) fn may_not_speak(group: GroupGate, me: &MemberRecord, now: u64) -> Option<Refusal> {
    if group.dissolved_seq != 0 {
        return Some(dissolved());
    }
    if me.muted_until_ms > now {
        return Some(Refusal {
            code: ErrorCode::Muted,
            message: "you are muted in this group".into(),
            retry_after_ms: me.muted_until_ms - now,
        });
    }
    if group.mute_all && !may_send_under_mute_all(me.role) {
        return Some(Refusal::new(
            ErrorCode::Muted,
            "only the owner and admins may send in this group now",
        ));
    }
    None
}

impl Writer {
    pub(crate) fn group_send(
        &mut self,
        conn: ConnRef,
        request_id: u64,
        m: GroupMessage,
    ) -> Result<Outcome, Refusal> {
        let g = m.g;
        // Every read that can fail comes before the first change.
        let me = self.groups.member(g, m.from)?;
        // Dedup before the rules: a resend of an acked message is answered even after a mute,
        // or once the sender left or was removed (its dedup window is in its cursor row, which
        // leaving keeps). Not for a user with no row of the group (never in it, or hid it):
        // an id a client merely names must not load rows into the cache.
        let listed = me.is_some() || self.groups.user_group(m.from, g)?.is_some();
        if listed {
            self.load_row(g, m.from)?;
            if let Some(original) = self.sent_before(g, m.from, &m.client_msg_id)? {
                return Ok(Outcome::Duplicate {
                    conn,
                    request_id,
                    original,
                });
            }
        }
        let me = me.ok_or_else(not_found)?;
        debug_assert_eq!(verdict(me.role, Action::Send), Verdict::Allowed);
        self.groups.load_reads(g)?;
        if let Some(refusal) = m.refused {
            return Err(*refusal);
        }
        let group = self.groups.gate(g)?.ok_or_else(not_found)?;
        if let Some(refusal) = may_not_speak(group, &me, now_ms()) {
            return Err(refusal);
        }
        let mentions = self.mentions(g, m.from, me.role, m.mention_user_ids, m.mention_all)?;
        let mut head = self.conv(g)?;
        let seq = head.max_seq + 1;
        if let Some(x) = &mentions {
            for user in &x.user_ids {
                self.groups.put_mention(g, *user, seq);
            }
            if x.all {
                self.groups.put_mention(g, MENTION_ALL_USER, seq);
            }
        }
        let window = self.policy.dedup_window;
        self.row_mut(g, m.from)
            .remember_send(&m.client_msg_id, seq, window);
        self.mark_own_group_message_read(g, m.from, seq);
        let draft = Draft {
            from: m.from,
            client_msg_id: m.client_msg_id,
            content_type: m.content_type,
            content: m.content,
            mentions,
        };
        let index = self.push_message(g, &mut head, draft);
        Ok(Outcome::GroupSent {
            conn,
            request_id,
            message: index,
            group: g,
            member_count: group.member_count,
        })
    }

    /// The mentions a send keeps: at most `groups.mentions_max`, members who do not block the
    /// sender only (others are dropped, so a sender never learns who left or who blocks them:
    /// a mention pierces a muted group, a block must not be pierced), `mention_all` from
    /// owners and admins.
    fn mentions(
        &mut self,
        g: ConvId,
        from: UserId,
        role: crate::store::GroupRole,
        mut ids: Vec<UserId>,
        all: bool,
    ) -> Result<Option<Box<Mentions>>, Refusal> {
        let max = self.groups.limits.mentions_max as usize;
        if ids.len() > max {
            return Err(Refusal::new(
                ErrorCode::TooManyMentions,
                format!("at most {max} mentions per message"),
            ));
        }
        if all && verdict(role, Action::MentionAll) != Verdict::Allowed {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only the owner and admins may mention everyone",
            ));
        }
        ids.sort_unstable();
        ids.dedup();
        let mut kept = Vec::with_capacity(ids.len());
        for user in ids {
            // From the pair cache, never a fresh read per mention (up to `mentions_max` store
            // reads on the sequencer per message). A cluster node's cache may miss a block made
            // on another node: the mention is then kept, but the push resolver reads blocks
            // from the store and sends the blocker nothing.
            if user != from
                && self.groups.member(g, user)?.is_some()
                && !self.contacts.blocks(user, from)?
            {
                kept.push(user);
            }
        }
        Ok((!kept.is_empty() || all).then(|| {
            Box::new(Mentions {
                user_ids: kept,
                all,
            })
        }))
    }
}

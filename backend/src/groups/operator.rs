//! Group writes an operator makes (admin API), applied by the sequencer like a member's: the
//! event is appended to the group's log in the same commit, members online get it pushed,
//! offline ones by Sync. The event's actor is [`OPERATOR_ACTOR`] (no user has id 0).

use ringchat_proto::v1::{self, GroupEventKind as Kind};

use super::GroupDone;
use super::ops::{Acting, dissolved, not_found};
use crate::accounts::Refusal;
use crate::messaging::writer::Writer;
use crate::store::{ConvId, GroupRole, MemberRecord, UserId};

/// The actor of an operator's group event: not a user (ids start at 100000000).
pub(crate) const OPERATOR_ACTOR: UserId = 0;

impl Writer {
    /// Dissolves a live group whatever its members' roles: the DISSOLVED event, as when its
    /// owner dissolves it.
    pub(super) fn operator_dissolve(&mut self, g: ConvId) -> Result<GroupDone, Refusal> {
        let record = self.groups.group(g)?.ok_or_else(not_found)?;
        if record.dissolved_seq != 0 {
            return Err(dissolved());
        }
        let head = self.conv(g)?;
        let mut a = Acting {
            g,
            record,
            // Stands for the operator; never stored.
            me: MemberRecord {
                role: GroupRole::Owner,
                joined_ms: 0,
                visible_from_seq: 0,
                muted_until_ms: 0,
            },
            head,
        };
        let mut done = GroupDone::new(g);
        let ev = super::event(Kind::Dissolved, OPERATOR_ACTOR, Vec::new());
        let seq = self.append_event(&mut a, &mut done, OPERATOR_ACTOR, &ev);
        a.record.dissolved_seq = seq;
        self.groups.put_group(g, a.record);
        Ok(done.ok(seq, v1::GroupJoinState::Joined, Vec::new()))
    }
}

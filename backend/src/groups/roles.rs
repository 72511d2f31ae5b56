//! Who may do what in a group: one pure table (docs/PROTOCOL.md "Groups" prints it), which the
//! sequencer consults for every group operation and the tests walk whole.

use ringchat_proto::v1::ErrorCode;

use crate::store::{GroupRole, JoinPolicy};

/// What an actor wants to do; where the answer depends on whom it is done to, that member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send a message (mutes are checked apart: [`may_send_under_mute_all`]).
    Send,
    /// Change name, avatar, intro, join policy, history setting, mute-all.
    Update,
    /// Add users, under the group's join policy.
    Invite(JoinPolicy),
    /// Approve or reject applications; list them.
    Approve,
    Remove(GroupRole),
    Mute(GroupRole),
    /// Make a member an admin or an admin a member.
    SetRole(GroupRole),
    /// Recall another member's message (own messages: anyone, within `recall_window_s`).
    RecallOthers(GroupRole),
    MentionAll,
    Transfer,
    Dissolve,
    /// The owner leaves only as the last member (the caller checks that).
    Leave,
}

/// The table's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// An invite by a member under APPROVAL: it becomes an application for each user.
    AsApplication,
    Refused(ErrorCode),
}

/// The roles table.
pub(crate) fn verdict(actor: GroupRole, action: Action) -> Verdict {
    use Action::*;
    use GroupRole::{Admin, Member, Owner};
    use Verdict::{Allowed, AsApplication, Refused};
    let forbidden = Refused(ErrorCode::Forbidden);
    let manager = matches!(actor, Owner | Admin);
    match action {
        Send => Allowed,
        Update | Approve | MentionAll => {
            if manager {
                Allowed
            } else {
                forbidden
            }
        }
        Invite(policy) => match (actor, policy) {
            (Owner | Admin, _) | (Member, JoinPolicy::Open) => Allowed,
            (Member, JoinPolicy::Approval) => AsApplication,
            (Member, JoinPolicy::InviteOnly) => forbidden,
        },
        // The owner acts on anyone but an owner; an admin on members only.
        Remove(target) | Mute(target) | RecallOthers(target) => match (actor, target) {
            (Owner, Admin | Member) | (Admin, Member) => Allowed,
            _ => forbidden,
        },
        SetRole(target) => match (actor, target) {
            (Owner, Admin | Member) => Allowed,
            _ => forbidden,
        },
        Transfer | Dissolve => {
            if actor == Owner {
                Allowed
            } else {
                forbidden
            }
        }
        Leave => {
            if actor == Owner {
                Refused(ErrorCode::OwnerMustTransfer)
            } else {
                Allowed
            }
        }
    }
}

/// Under mute-all only the owner and admins send.
pub(crate) fn may_send_under_mute_all(role: GroupRole) -> bool {
    role != GroupRole::Member
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use GroupRole::{Admin, Member, Owner};
    use Verdict::{Allowed, AsApplication, Refused};

    const F: Verdict = Refused(ErrorCode::Forbidden);

    #[test]
    fn the_whole_table() {
        let roles = [Owner, Admin, Member];
        // (action, [owner, admin, member])
        let rows: Vec<(Action, [Verdict; 3])> = vec![
            (Send, [Allowed, Allowed, Allowed]),
            (Update, [Allowed, Allowed, F]),
            (Invite(JoinPolicy::Open), [Allowed, Allowed, Allowed]),
            (
                Invite(JoinPolicy::Approval),
                [Allowed, Allowed, AsApplication],
            ),
            (Invite(JoinPolicy::InviteOnly), [Allowed, Allowed, F]),
            (Approve, [Allowed, Allowed, F]),
            (Remove(Owner), [F, F, F]),
            (Remove(Admin), [Allowed, F, F]),
            (Remove(Member), [Allowed, Allowed, F]),
            (Mute(Owner), [F, F, F]),
            (Mute(Admin), [Allowed, F, F]),
            (Mute(Member), [Allowed, Allowed, F]),
            (SetRole(Owner), [F, F, F]),
            (SetRole(Admin), [Allowed, F, F]),
            (SetRole(Member), [Allowed, F, F]),
            (RecallOthers(Owner), [F, F, F]),
            (RecallOthers(Admin), [Allowed, F, F]),
            (RecallOthers(Member), [Allowed, Allowed, F]),
            (MentionAll, [Allowed, Allowed, F]),
            (Transfer, [Allowed, F, F]),
            (Dissolve, [Allowed, F, F]),
            (
                Leave,
                [Refused(ErrorCode::OwnerMustTransfer), Allowed, Allowed],
            ),
        ];
        for (action, expected) in rows {
            for (role, want) in roles.iter().zip(expected) {
                assert_eq!(verdict(*role, action), want, "{role:?} {action:?}");
            }
        }
        assert!(may_send_under_mute_all(Owner));
        assert!(may_send_under_mute_all(Admin));
        assert!(!may_send_under_mute_all(Member));
    }
}

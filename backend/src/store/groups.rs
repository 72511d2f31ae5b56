//! What the store keeps about groups: the group itself, its members (one row per member, read
//! by point gets and paged scans, never whole), each user's groups, pending applications and
//! mentions. All of it is written by the sequencer in its commit groups ([`GroupWrites`]), in
//! the same atomic write as the group's messages and events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConvId, UserId};

/// Bytes of a group's folded name kept in the name index (a search prefix is cut the same).
pub const GROUP_NAME_KEY_BYTES_MAX: usize = 64;

/// A group name as the name index keeps it: lower-cased, cut to
/// [`GROUP_NAME_KEY_BYTES_MAX`] bytes on a character boundary. Searches fold their prefix
/// the same way.
pub fn group_name_key(name: &str) -> String {
    let mut folded = name.trim().to_lowercase();
    if folded.len() > GROUP_NAME_KEY_BYTES_MAX {
        let mut end = GROUP_NAME_KEY_BYTES_MAX;
        while !folded.is_char_boundary(end) {
            end -= 1;
        }
        folded.truncate(end);
    }
    folded
}

/// A member's role. Ordered: an owner outranks an admin, who outranks a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

/// Who may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinPolicy {
    Open,
    Approval,
    InviteOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub avatar_url: String,
    pub intro: String,
    pub owner: UserId,
    pub join_policy: JoinPolicy,
    /// New members see the history from before they joined.
    pub history_visible: bool,
    /// Only the owner and admins may send.
    pub mute_all: bool,
    pub member_count: u32,
    /// Admins, the owner not counted.
    pub admin_count: u32,
    pub application_count: u32,
    pub created_ms: u64,
    /// Seq of the DISSOLVED event; 0 while the group lives.
    pub dissolved_seq: u64,
}

/// One member of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub role: GroupRole,
    pub joined_ms: u64,
    /// First seq the member may read: its JOINED event, or 1 under `history_visible`.
    pub visible_from_seq: u64,
    /// Muted until then (ms since the epoch); 0: not muted.
    pub muted_until_ms: u64,
}

impl MemberRecord {
    /// The seqs this member may read, both inclusive (`u64::MAX`: no end while a member).
    pub fn visible_seqs(&self) -> (u64, u64) {
        (self.visible_from_seq.max(1), u64::MAX)
    }
}

/// One of a user's groups, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct UserGroupRecord {
    pub visible_from_seq: u64,
    /// Seq of the LEFT / REMOVED event once the user is no longer a member (the history up to
    /// it stays readable); 0 while a member.
    pub left_seq: u64,
    /// The user muted notifications for this group.
    pub notify_muted: bool,
    /// Someone else put the user in (its last time in): the group's creator, an invitation,
    /// or an approved invitation by a member. The user never asked, so it may hide the group
    /// once out even while the mute it left under runs. False: it joined or applied itself.
    /// Put back in while the mute it left under runs, the user keeps the value it had.
    pub added: bool,
}

/// Field by field, so that a row stored before `added` was kept (postcard, which ends such a
/// row's bytes after `notify_muted`) reads as one the user joined itself (`added` false).
impl<'de> Deserialize<'de> for UserGroupRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = UserGroupRecord;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user's group row")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<UserGroupRecord, A::Error> {
                use serde::de::Error;
                let visible_from_seq = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let left_seq = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let notify_muted = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(2, &self))?;
                // An older row: no more input (an error in postcard, `None` elsewhere).
                let added = seq.next_element().ok().flatten().unwrap_or(false);
                Ok(UserGroupRecord {
                    visible_from_seq,
                    left_seq,
                    notify_muted,
                    added,
                })
            }
        }
        d.deserialize_struct(
            "UserGroupRecord",
            &["visible_from_seq", "left_seq", "notify_muted", "added"],
            Fields,
        )
    }
}

impl UserGroupRecord {
    pub fn is_member(&self) -> bool {
        self.left_seq == 0
    }

    /// The seqs this user may read: `visible_from_seq ..= last` (`u64::MAX` while a member).
    pub fn last_visible_seq(&self) -> u64 {
        if self.is_member() {
            u64::MAX
        } else {
            self.left_seq
        }
    }

    /// The seqs this user may read, both inclusive (the first at least 1).
    pub fn visible_seqs(&self) -> (u64, u64) {
        (self.visible_from_seq.max(1), self.last_visible_seq())
    }
}

/// A pending application to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplicationRecord {
    pub message: String,
    pub sent_ms: u64,
    /// The member whose GroupInvite filed it (under APPROVAL); 0: the user asked itself. An
    /// approval checks the invitee's blocks and policy against the inviter again.
    pub inviter: UserId,
}

/// Field by field, so that a record stored before `inviter` was kept (postcard, which ends
/// such a record's bytes after `sent_ms`) reads as the user's own application (`inviter` 0).
impl<'de> Deserialize<'de> for ApplicationRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ApplicationRecord;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an application record")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ApplicationRecord, A::Error> {
                use serde::de::Error;
                let message = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let sent_ms = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                // An older record: no more input (an error in postcard, `None` elsewhere).
                let inviter = seq.next_element().ok().flatten().unwrap_or(0);
                Ok(ApplicationRecord {
                    message,
                    sent_ms,
                    inviter,
                })
            }
        }
        d.deserialize_struct(
            "ApplicationRecord",
            &["message", "sent_ms", "inviter"],
            Fields,
        )
    }
}

/// A group's members counted by read cursor (`groups/read_counts.rs` keeps it): each current
/// member is counted once, at its `read_seq` when that is at or above `base_seq`, else in
/// `below`. The window `[base_seq, base_seq + groups.read_count_window)` slides up as cursors
/// pass it, folding the oldest counts into `below`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadHistogram {
    pub base_seq: u64,
    pub below: u32,
    /// read seq → members at it (no zero counts).
    pub counts: BTreeMap<u64, u32>,
}

/// Mention rows name this user for `@everyone`.
pub const MENTION_ALL_USER: UserId = 0;

/// The groups section of a commit group. At most one entry per key per group; `None` removes.
#[derive(Debug, Default)]
pub struct GroupWrites {
    pub groups: Vec<(ConvId, GroupRecord)>,
    pub members: Vec<(ConvId, UserId, Option<MemberRecord>)>,
    pub user_groups: Vec<(UserId, ConvId, Option<UserGroupRecord>)>,
    /// Rows each user's `user_groups` gained (+) or lost (−) in this group, at most one entry
    /// per user: an adapter adds it to the count it stores (what `groups.per_user_max` is
    /// checked against), in the same write. Not a whole value: in a cluster the owners of a
    /// user's several groups change the user's rows at once, and every change must count. A
    /// count is read as at least 0.
    pub user_group_count_changes: Vec<(UserId, i32)>,
    pub applications: Vec<(ConvId, UserId, Option<ApplicationRecord>)>,
    /// `(group, mentioned user or MENTION_ALL_USER, seq)`.
    pub mentions: Vec<(ConvId, UserId, u64)>,
    /// Mention rows to delete (a recalled message's), same keys; never one `mentions` puts in
    /// the same group.
    pub mentions_removed: Vec<(ConvId, UserId, u64)>,
    /// Whole histograms, one per group touched.
    pub read_histograms: Vec<(ConvId, ReadHistogram)>,
    pub next_group_id: Option<u64>,
}

impl GroupWrites {
    pub fn clear(&mut self) {
        self.groups.clear();
        self.members.clear();
        self.user_groups.clear();
        self.user_group_count_changes.clear();
        self.applications.clear();
        self.mentions.clear();
        self.mentions_removed.clear();
        self.read_histograms.clear();
        self.next_group_id = None;
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.members.is_empty()
            && self.user_groups.is_empty()
            && self.user_group_count_changes.is_empty()
            && self.applications.is_empty()
            && self.mentions.is_empty()
            && self.mentions_removed.is_empty()
            && self.read_histograms.is_empty()
            && self.next_group_id.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What servers stored before the inviter was kept.
    #[derive(Serialize)]
    struct ApplicationBefore {
        message: String,
        sent_ms: u64,
    }

    #[test]
    fn an_application_stored_before_the_inviter_was_kept_reads_as_the_users_own() {
        let old = ApplicationBefore {
            message: "let me in".into(),
            sent_ms: 7,
        };
        let read: ApplicationRecord =
            postcard::from_bytes(&postcard::to_stdvec(&old).unwrap()).unwrap();
        assert_eq!(
            read,
            ApplicationRecord {
                message: "let me in".into(),
                sent_ms: 7,
                inviter: 0,
            }
        );
        let invited = ApplicationRecord {
            inviter: 123_456_789,
            ..read
        };
        let bytes = postcard::to_stdvec(&invited).unwrap();
        assert_eq!(
            postcard::from_bytes::<ApplicationRecord>(&bytes).unwrap(),
            invited
        );
        // Cut short anywhere before the inviter: an error, not a made-up record.
        let short = postcard::to_stdvec(&old).unwrap();
        assert!(postcard::from_bytes::<ApplicationRecord>(&short[..short.len() - 1]).is_err());
    }

    /// What servers stored before `added` was kept.
    #[derive(Serialize)]
    struct UserGroupBefore {
        visible_from_seq: u64,
        left_seq: u64,
        notify_muted: bool,
    }

    #[test]
    fn a_user_group_row_stored_before_added_was_kept_reads_as_joined_by_the_user() {
        let old = UserGroupBefore {
            visible_from_seq: 3,
            left_seq: 9,
            notify_muted: true,
        };
        let read: UserGroupRecord =
            postcard::from_bytes(&postcard::to_stdvec(&old).unwrap()).unwrap();
        assert_eq!(
            read,
            UserGroupRecord {
                visible_from_seq: 3,
                left_seq: 9,
                notify_muted: true,
                added: false,
            }
        );
        let added = UserGroupRecord {
            added: true,
            ..read
        };
        let bytes = postcard::to_stdvec(&added).unwrap();
        assert_eq!(
            postcard::from_bytes::<UserGroupRecord>(&bytes).unwrap(),
            added
        );
        let short = postcard::to_stdvec(&old).unwrap();
        assert!(postcard::from_bytes::<UserGroupRecord>(&short[..short.len() - 1]).is_err());
    }
}

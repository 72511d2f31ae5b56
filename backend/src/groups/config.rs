//! `[groups]`: every list, field and count of a group bounded, each limit answered with its
//! error code.

use serde::{Deserialize, Serialize};

/// `[groups]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Members of one group (GROUP_FULL).
    pub members_max: u32,
    /// Groups in one user's list, left ones included until hidden (TOO_MANY_GROUPS). A login
    /// installs this many rows at most (warning when there are more), and the conversation
    /// list reads this many group heads.
    pub per_user_max: u32,
    /// Users in one GroupCreate or GroupInvite, and ids in one GroupRemove (INVALID_ARGUMENT).
    pub invite_batch_max: u32,
    /// Admins of one group, the owner not counted (TOO_MANY_ADMINS).
    pub admins_max: u32,
    /// Pending applications of one group (TOO_MANY_APPLICATIONS).
    pub applications_max: u32,
    /// Users one send may mention (TOO_MANY_MENTIONS).
    pub mentions_max: u32,
    pub name_bytes_max: usize,
    pub avatar_url_bytes_max: usize,
    pub intro_bytes_max: usize,
    pub application_message_bytes_max: usize,
    /// Read cursors are pushed as receipts to the group's members only up to this many
    /// members; larger groups ask GroupReadCount.
    pub receipts_members_max: u32,
    /// Typing is relayed only while a group has at most this many online connections.
    pub typing_members_max: u32,
    /// Largest page of members, groups and applications.
    pub page_max: u32,
    /// Seqs (the newest a member's read cursor reached) over which GroupReadCount is exact;
    /// members further behind are counted together (a lower bound for older seqs).
    pub read_count_window: u64,
    /// Owners and admins may recall others' messages this long after they were sent.
    pub admin_recall_window_s: u64,
    /// A member's mute (`GroupMute.until_ms`) ends at most this long after it is set
    /// (INVALID_ARGUMENT past it, or for a time already past): a mute outlives leaving, so an
    /// endless one would keep the group in the user's list for good.
    pub mute_max_s: u64,
    /// Group requests that change something (create, update, invite, join, approve, leave,
    /// remove, roles, mutes, transfer, dissolve) one user makes per minute, at most
    /// (RATE_LIMITED past it): each stores an event and pushes it to the group's online members.
    /// Messages have their own limit (`limits.messages_per_s_max`).
    pub writes_per_min_max: u32,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            members_max: 100_000,
            per_user_max: 500,
            invite_batch_max: 100,
            admins_max: 50,
            applications_max: 1_000,
            mentions_max: 20,
            name_bytes_max: 128,
            avatar_url_bytes_max: 512,
            intro_bytes_max: 1_024,
            application_message_bytes_max: 256,
            receipts_members_max: 100,
            typing_members_max: 500,
            page_max: 200,
            read_count_window: 4_096,
            admin_recall_window_s: 86_400,
            mute_max_s: 30 * 86_400,
            writes_per_min_max: 120,
        }
    }
}

impl GroupsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut range = |name: &str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                out.push(format!("groups.{name}: must be between {min} and {max}"));
            }
        };
        range("members_max", self.members_max.into(), 2, 1_000_000);
        range("per_user_max", self.per_user_max.into(), 1, 10_000);
        range("invite_batch_max", self.invite_batch_max.into(), 1, 1_000);
        range("admins_max", self.admins_max.into(), 0, 10_000);
        range("applications_max", self.applications_max.into(), 0, 100_000);
        range("mentions_max", self.mentions_max.into(), 0, 1_000);
        range("name_bytes_max", self.name_bytes_max as u64, 1, 4_096);
        range(
            "avatar_url_bytes_max",
            self.avatar_url_bytes_max as u64,
            0,
            8_192,
        );
        range("intro_bytes_max", self.intro_bytes_max as u64, 0, 16_384);
        range(
            "application_message_bytes_max",
            self.application_message_bytes_max as u64,
            0,
            4_096,
        );
        range(
            "receipts_members_max",
            self.receipts_members_max.into(),
            0,
            10_000,
        );
        range(
            "typing_members_max",
            self.typing_members_max.into(),
            0,
            100_000,
        );
        range("page_max", self.page_max.into(), 1, 10_000);
        range("read_count_window", self.read_count_window, 1, 1_000_000);
        range(
            "writes_per_min_max",
            self.writes_per_min_max.into(),
            1,
            100_000,
        );
        range(
            "admin_recall_window_s",
            self.admin_recall_window_s,
            0,
            365 * 86_400,
        );
        range("mute_max_s", self.mute_max_s, 60, 365 * 86_400);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mute_bound_of_zero_or_past_a_year_is_refused() {
        assert!(GroupsConfig::default().problems().is_empty());
        for bad in [0, 59, 365 * 86_400 + 1] {
            let cfg = GroupsConfig {
                mute_max_s: bad,
                ..GroupsConfig::default()
            };
            assert_eq!(
                cfg.problems(),
                ["groups.mute_max_s: must be between 60 and 31536000"],
                "{bad}"
            );
        }
    }
}

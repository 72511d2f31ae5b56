//! `[contacts]`: profiles, search, friends and blocks, each list and field bounded.

use serde::{Deserialize, Serialize};

use crate::store::DmPolicy;

/// Who may start a direct conversation, as the config file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicyName {
    Everyone,
    Friends,
}

impl From<DmPolicyName> for DmPolicy {
    fn from(name: DmPolicyName) -> Self {
        match name {
            DmPolicyName::Everyone => DmPolicy::Everyone,
            DmPolicyName::Friends => DmPolicy::FriendsOnly,
        }
    }
}

/// `[contacts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsConfig {
    pub nickname_bytes_max: usize,
    pub avatar_url_bytes_max: usize,
    pub bio_bytes_max: usize,
    /// Whether a user who never said is listed by username-prefix search.
    pub searchable_default: bool,
    /// Who may start a direct conversation with a user who never said.
    pub dm_policy_default: DmPolicyName,
    pub friend_request_message_bytes_max: usize,
    /// Friends one user may have.
    pub friends_max: u32,
    /// Requests one user may have sent and not had answered.
    pub friend_requests_pending_max: u32,
    /// Requests one user may have received and not answered; past it new ones are refused.
    pub friend_requests_received_max: u32,
    /// Requests one user may send per UTC day.
    pub friend_requests_per_day_max: u32,
    /// After a user rejects a request, how long (ms) its sender may not ask that user again
    /// (each request is an event on the target's devices). Kept in memory by the sequencer.
    pub friend_request_after_reject_ms: u64,
    pub blocks_max: u32,
    /// Largest page of friends, requests and blocks.
    pub list_page_max: u32,
    /// Largest page of a username-prefix search.
    pub search_page_max: u32,
    /// Searches one user may make per minute.
    pub searches_per_min_max: u32,
    /// Ids in one GetProfiles, at most.
    pub profiles_per_request_max: usize,
    /// Profiles one user may fetch per minute (GetProfiles, counted per id).
    pub profiles_per_min_max: u32,
    /// Profile updates one user may make per minute (UpdateProfile; each is a durable write).
    pub profile_updates_per_min_max: u32,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        Self {
            nickname_bytes_max: 64,
            avatar_url_bytes_max: 512,
            bio_bytes_max: 512,
            searchable_default: true,
            dm_policy_default: DmPolicyName::Everyone,
            friend_request_message_bytes_max: 256,
            friends_max: 2_000,
            friend_requests_pending_max: 100,
            friend_requests_received_max: 500,
            friend_requests_per_day_max: 50,
            friend_request_after_reject_ms: 86_400_000,
            blocks_max: 10_000,
            list_page_max: 200,
            search_page_max: 50,
            searches_per_min_max: 30,
            profiles_per_request_max: 100,
            profiles_per_min_max: 3_000,
            profile_updates_per_min_max: 30,
        }
    }
}

impl ContactsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut range = |name: &str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                out.push(format!("contacts.{name}: must be between {min} and {max}"));
            }
        };
        range(
            "nickname_bytes_max",
            self.nickname_bytes_max as u64,
            1,
            4096,
        );
        range(
            "avatar_url_bytes_max",
            self.avatar_url_bytes_max as u64,
            1,
            8192,
        );
        range("bio_bytes_max", self.bio_bytes_max as u64, 0, 16_384);
        range(
            "friend_request_message_bytes_max",
            self.friend_request_message_bytes_max as u64,
            0,
            4096,
        );
        range("friends_max", u64::from(self.friends_max), 1, 1_000_000);
        range(
            "friend_requests_pending_max",
            u64::from(self.friend_requests_pending_max),
            1,
            100_000,
        );
        range(
            "friend_requests_received_max",
            u64::from(self.friend_requests_received_max),
            1,
            1_000_000,
        );
        range(
            "friend_requests_per_day_max",
            u64::from(self.friend_requests_per_day_max),
            1,
            1_000_000,
        );
        range(
            "friend_request_after_reject_ms",
            self.friend_request_after_reject_ms,
            0,
            30 * 86_400_000,
        );
        range("blocks_max", u64::from(self.blocks_max), 1, 1_000_000);
        range("list_page_max", u64::from(self.list_page_max), 1, 10_000);
        range("search_page_max", u64::from(self.search_page_max), 1, 1_000);
        range(
            "searches_per_min_max",
            u64::from(self.searches_per_min_max),
            1,
            1_000_000,
        );
        range(
            "profiles_per_request_max",
            self.profiles_per_request_max as u64,
            1,
            10_000,
        );
        range(
            "profiles_per_min_max",
            u64::from(self.profiles_per_min_max),
            1,
            100_000_000,
        );
        range(
            "profile_updates_per_min_max",
            u64::from(self.profile_updates_per_min_max),
            1,
            1_000_000,
        );
        out
    }

    /// The limits the sequencer enforces.
    pub(crate) fn limits(&self) -> ContactLimits {
        ContactLimits {
            friends_max: self.friends_max,
            requests_pending_max: self.friend_requests_pending_max,
            requests_received_max: self.friend_requests_received_max,
            requests_per_day_max: self.friend_requests_per_day_max,
            request_after_reject_ms: self.friend_request_after_reject_ms,
            blocks_max: self.blocks_max,
            dm_policy_default: self.dm_policy_default.into(),
            searchable_default: self.searchable_default,
        }
    }
}

/// What the sequencer needs of `[contacts]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContactLimits {
    pub friends_max: u32,
    pub requests_pending_max: u32,
    pub requests_received_max: u32,
    pub requests_per_day_max: u32,
    pub request_after_reject_ms: u64,
    pub blocks_max: u32,
    pub dm_policy_default: DmPolicy,
    pub searchable_default: bool,
}

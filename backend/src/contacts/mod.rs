//! Contacts: profiles and search, friends, blocks and the DM policy.
//!
//! Two paths, split by what must be ordered with sends:
//! - relations (friend requests and answers, friendships, blocks) and the DM policy are writes
//!   of the sequencer (`ops.rs`, state in `sequencer.rs`), committed in its groups: a send is
//!   checked against them in the same thread that stores it, so no send slips past a block that
//!   was acknowledged;
//! - profiles, search and the lists are served from the store on the read pool
//!   (`profiles.rs`, `lists.rs`, `dispatch.rs`); a profile update is a write of its own.
//!
//! `query.rs` is the API the rest of the backend (presence, groups) asks: friends of a user,
//! whether one user blocked another.

mod blocks;
mod config;
mod dispatch;
mod lists;
pub(crate) mod ops;
pub(crate) mod profiles;
pub(crate) mod query;
pub(crate) mod sequencer;
mod submit;

pub(crate) use submit::op_of;

use std::sync::Mutex;

use ringchat_proto::v1::{self, ErrorCode};

pub(crate) use config::ContactLimits;
pub use config::{ContactsConfig, DmPolicyName};

use crate::accounts::Refusal;
use crate::per_user_rate::PerUserRate;
use crate::store::{DmPolicy, UserId};

/// Stripes of the profile-update lock: updates of different users rarely wait for each other.
const PROFILE_WRITE_STRIPES: usize = 64;

/// The contacts service of the backend: its settings and rate budgets.
pub(crate) struct Contacts {
    config: ContactsConfig,
    search_rate: PerUserRate,
    profile_rate: PerUserRate,
    profile_update_rate: PerUserRate,
    profile_writes: Vec<Mutex<()>>,
}

impl Contacts {
    pub(crate) fn new(config: ContactsConfig) -> Self {
        Self {
            search_rate: PerUserRate::new(config.searches_per_min_max, "searches"),
            profile_rate: PerUserRate::new(config.profiles_per_min_max, "profile lookups"),
            profile_update_rate: PerUserRate::new(
                config.profile_updates_per_min_max,
                "profile updates",
            ),
            profile_writes: (0..PROFILE_WRITE_STRIPES).map(|_| Mutex::new(())).collect(),
            config,
        }
    }

    /// The live keys of `[contacts]`: the per-minute budgets.
    pub(crate) fn reconfigure(&self, config: &ContactsConfig) {
        self.search_rate
            .set_per_min_max(config.searches_per_min_max);
        self.profile_rate
            .set_per_min_max(config.profiles_per_min_max);
        self.profile_update_rate
            .set_per_min_max(config.profile_updates_per_min_max);
    }

    /// Takes one profile update from `user`'s budget of this minute, or says when to retry:
    /// asked before the update waits for its gate, so a refused one costs no place.
    pub(crate) fn admit_update(&self, user: UserId) -> Result<(), Refusal> {
        self.profile_update_rate.take(user, 1)
    }
}

pub(crate) fn wire_policy(policy: DmPolicy) -> v1::DmPolicy {
    match policy {
        DmPolicy::Everyone => v1::DmPolicy::Everyone,
        DmPolicy::FriendsOnly => v1::DmPolicy::Friends,
    }
}

/// A policy a client asked for; `None` for the server's default (UNSPECIFIED).
pub(crate) fn policy_from_wire(raw: i32) -> Result<Option<DmPolicy>, Refusal> {
    match v1::DmPolicy::try_from(raw) {
        Ok(v1::DmPolicy::Everyone) => Ok(Some(DmPolicy::Everyone)),
        Ok(v1::DmPolicy::Friends) => Ok(Some(DmPolicy::FriendsOnly)),
        Ok(v1::DmPolicy::Unspecified) => Ok(None),
        Err(_) => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "dm_policy: UNSPECIFIED, EVERYONE or FRIENDS",
        )),
    }
}

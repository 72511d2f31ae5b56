//! `[rooms]`: ephemeral chat rooms, every count bounded.

use serde::{Deserialize, Serialize};

use super::name::valid_room_name;

/// `[rooms]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Users in one room, at most (a user's several sessions count once): ROOM_FULL past it.
    pub members_max: u32,
    /// Rooms on the server at once, persistent ones included: TOO_MANY_ROOMS past it.
    pub max: u32,
    /// Rooms one user is in at once (over all their sessions): TOO_MANY_ROOMS past it.
    pub per_user_max: u32,
    /// Rooms that exist at once made by sessions from one client network (an IPv4 /24, an
    /// IPv6 /48), counted until the room goes: TOO_MANY_ROOMS past it. Without it one
    /// network's many accounts could take all of `max`.
    pub per_network_max: u32,
    /// Messages per second one room carries, from all its senders together (a burst of one
    /// second's worth): ROOM_RATE_LIMITED past it.
    pub messages_per_s_max: u32,
    /// Messages per second one user sends to rooms, all rooms together (a burst of one
    /// second's worth): ROOM_RATE_LIMITED past it.
    pub user_messages_per_s_max: u32,
    /// Rooms that exist from start-up and are kept when their last member leaves.
    pub persistent: Vec<String>,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            members_max: 10_000,
            max: 10_000,
            per_user_max: 10,
            per_network_max: 100,
            messages_per_s_max: 100,
            user_messages_per_s_max: 10,
            persistent: Vec::new(),
        }
    }
}

/// Largest `rooms.members_max`, `rooms.max`: a typo guard, not a recommendation.
const COUNT_MAX: u32 = 1_000_000;

impl RoomsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (1..=COUNT_MAX).contains(&self.members_max),
            "rooms.members_max: must be between 1 and 1000000",
        );
        check(
            (1..=COUNT_MAX).contains(&self.max),
            "rooms.max: must be between 1 and 1000000",
        );
        check(
            (1..=1_000).contains(&self.per_user_max),
            "rooms.per_user_max: must be between 1 and 1000",
        );
        check(
            (1..=COUNT_MAX).contains(&self.per_network_max),
            "rooms.per_network_max: must be between 1 and 1000000",
        );
        check(
            (1..=1_000_000).contains(&self.messages_per_s_max),
            "rooms.messages_per_s_max: must be between 1 and 1000000",
        );
        check(
            (1..=1_000_000).contains(&self.user_messages_per_s_max),
            "rooms.user_messages_per_s_max: must be between 1 and 1000000",
        );
        check(
            self.persistent.len() <= self.max as usize,
            "rooms.persistent: more rooms than rooms.max",
        );
        for name in &self.persistent {
            if !valid_room_name(name) {
                out.push(format!(
                    "rooms.persistent: {name:?} is not a room name (1 to 64 bytes of a-z0-9_.-)"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_value_is_named() {
        assert!(RoomsConfig::default().problems().is_empty());
        let bad = RoomsConfig {
            members_max: 0,
            max: 1,
            per_user_max: 0,
            per_network_max: 0,
            messages_per_s_max: 0,
            user_messages_per_s_max: 0,
            persistent: vec!["Lobby".into(), "ok".into()],
        };
        let problems = bad.problems().join("\n");
        for key in [
            "rooms.members_max",
            "rooms.per_user_max",
            "rooms.per_network_max",
            "rooms.messages_per_s_max",
            "rooms.user_messages_per_s_max",
            "more rooms than rooms.max",
            "\"Lobby\" is not a room name",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        assert!(!problems.contains("\"ok\""), "{problems}");
    }
}

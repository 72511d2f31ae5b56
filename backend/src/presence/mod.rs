//! Presence: what each user's friends are shown (online, away, busy, offline, and last seen).
//!
//! - Each logged-in device has a [`DeviceState`]; a user's shown [`State`] is the most present
//!   of their devices' (online > busy > away > offline), and a device that is invisible counts as
//!   offline, so a user invisible everywhere shows as offline.
//! - The per-device states and what friends were last told live behind [`PresenceStore`]
//!   (in-process: [`LocalPresence`]; a cluster shares them through Redis).
//! - Changes reach friends through a [`Coalescer`]: at most one push per user per quiet period,
//!   and a user who goes less present (a dropped connection) is shown so only once the quiet
//!   period has passed without them coming back, so a flapping device does not flood friends.

mod coalesce;
mod local;
mod push;
#[cfg(test)]
mod tests;
mod tracker;

pub(crate) use coalesce::{Coalescer, Decision};
pub(crate) use local::LocalPresence;
pub(crate) use tracker::{Push, Tracker};

use ringchat_proto::v1;

use crate::api::ConnRef;
use crate::store::UserId;

/// What friends are shown, ordered from least to most present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) enum State {
    #[default]
    Offline,
    Away,
    Busy,
    Online,
}

/// What one device says about its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum DeviceState {
    #[default]
    Online,
    Away,
    Busy,
    /// Connected, but shown to nobody: counts as offline.
    Invisible,
}

impl DeviceState {
    pub(crate) fn shown(self) -> State {
        match self {
            Self::Online => State::Online,
            Self::Away => State::Away,
            Self::Busy => State::Busy,
            Self::Invisible => State::Offline,
        }
    }

    /// `None` for values a client may not set (unspecified, offline: a device that wants to be
    /// shown offline sets invisible).
    pub(crate) fn from_wire(state: v1::PresenceState) -> Option<Self> {
        match state {
            v1::PresenceState::Online => Some(Self::Online),
            v1::PresenceState::Away => Some(Self::Away),
            v1::PresenceState::Busy => Some(Self::Busy),
            v1::PresenceState::Invisible => Some(Self::Invisible),
            v1::PresenceState::Unspecified | v1::PresenceState::Offline => None,
        }
    }

    /// The state a `Login.presence` asks for: none is `Online`; `OFFLINE`, or a value this
    /// server does not know, is a wish not to be seen: `Invisible` (never shown online
    /// against the client's intent).
    pub(crate) fn at_login(wire: i32) -> Self {
        match v1::PresenceState::try_from(wire) {
            Ok(v1::PresenceState::Unspecified) => Self::Online,
            Ok(state) => Self::from_wire(state).unwrap_or(Self::Invisible),
            Err(_) => Self::Invisible,
        }
    }
}

/// The one rule for a user with many devices (on one node or many): the most present state
/// shown by any of them; none shows `Offline`.
pub(crate) fn most_present(states: impl IntoIterator<Item = State>) -> State {
    states.into_iter().max().unwrap_or(State::Offline)
}

impl State {
    /// One digit, for the cluster's presence keys in Redis (`cluster/presence/wire.rs`).
    pub(crate) fn to_digit(self) -> u8 {
        match self {
            Self::Offline => b'0',
            Self::Away => b'1',
            Self::Busy => b'2',
            Self::Online => b'3',
        }
    }

    pub(crate) fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Offline,
            b'1' => Self::Away,
            b'2' => Self::Busy,
            b'3' => Self::Online,
            _ => return None,
        })
    }

    pub(crate) fn to_wire(self) -> v1::PresenceState {
        match self {
            Self::Offline => v1::PresenceState::Offline,
            Self::Away => v1::PresenceState::Away,
            Self::Busy => v1::PresenceState::Busy,
            Self::Online => v1::PresenceState::Online,
        }
    }
}

/// A user's presence: what friends were last told, or what their devices say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shown {
    pub state: State,
    /// When the user stopped being present (their last device left or turned invisible); 0
    /// while present, and when not known (not seen since the presence store started).
    pub last_seen_ms: u64,
}

/// Per-device states and what friends were last told, for every user. Calls are short and never
/// block on I/O in the in-process store; a networked store (Redis) batches like the storage ports.
pub(crate) trait PresenceStore: Send + Sync + 'static {
    /// Sets (or adds, with `Some`) or removes (`None`: its connection closed) one device's state
    /// at `now_ms`. Returns what the user's devices say after the change.
    fn set_device(
        &self,
        user: UserId,
        device: ConnRef,
        state: Option<DeviceState>,
        now_ms: u64,
    ) -> Shown;
    /// What the user's devices say now.
    fn current(&self, user: UserId) -> Shown;
    /// What each user's friends were last told, in the order asked.
    fn published(&self, users: &[UserId]) -> Vec<Shown>;
    /// Records what the user's friends are told now.
    fn publish(&self, user: UserId, shown: Shown);
    /// What a friends list shows of each user, in the order asked. Called on a blocking
    /// thread: a networked store may ask it for users it has not heard of (bounded by its
    /// deadline). By default what friends were last told.
    fn listed(&self, users: &[UserId]) -> Vec<Shown> {
        self.published(users)
    }
}

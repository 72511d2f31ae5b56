//! Presence on the wire: a device's change in, `Presence` pushes out to the user's online
//! friends (one encoded frame, one event per shard), and the task that sends coalesced pushes
//! when their time comes.

use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

use futures_util::StreamExt;

use super::{DeviceState, Push, Shown};
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::ConnRef;
use crate::contacts::query::friends_of;
use crate::store::{ContactStore, UserId};
use crate::time::now_ms;

/// Friends read from the store per page while finding who to tell.
const AUDIENCE_PAGE: usize = 1024;
/// Due pushes the timer works on at once (each a blocking read of friends and profile, then a
/// send): after a mass disconnect the pushes go out in parallel, without taking every blocking
/// thread from logins and reads.
const TIMER_PUSHES_AT_ONCE: usize = 4;

impl Backend {
    /// A device logged in (`Some(state)`), set its state, or closed (`None`): friends are told
    /// now or later, as the tracker decides.
    pub(crate) async fn presence_changed(
        &self,
        user: UserId,
        conn: ConnRef,
        state: Option<DeviceState>,
    ) -> Shown {
        let (current, push) = self.presence.device(user, conn, state, now_ms());
        if let Some(push) = push {
            self.push_presence(push).await;
        }
        current
    }

    pub(crate) async fn set_presence(
        &self,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        req: v1::SetPresence,
    ) {
        let state = v1::PresenceState::try_from(req.state)
            .ok()
            .and_then(DeviceState::from_wire);
        let Some(state) = state else {
            let refusal = Refusal::new(
                ErrorCode::InvalidArgument,
                "state: one of ONLINE, AWAY, BUSY, INVISIBLE".to_owned(),
            );
            self.refuse(conn, request_id, refusal).await;
            return;
        };
        let current = self.presence_changed(user, conn, Some(state)).await;
        let ok = v1::SetPresenceOk {
            shown: current.state.to_wire().into(),
        };
        self.reply(conn, request_id, Body::SetPresenceOk(ok)).await;
    }

    /// Tells the user's online friends what `push` shows, unless a newer push of the user was
    /// decided meanwhile (then that one tells them).
    pub(crate) async fn push_presence(&self, push: Push) {
        let user = push.user;
        // Friends and the profile are store reads: a blocking thread's work, never a tokio
        // worker's (the ports' contract; a networked store would stall the worker).
        let contacts = Arc::clone(&self.ports.contacts);
        let shown = push.shown;
        let read = tokio::task::spawn_blocking(move || {
            let audience = presence_audience(&*contacts, user);
            (audience, shown_to_friends(&*contacts, user, shown))
        })
        .await;
        let (audience, shown) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(user, "presence: reading friends failed: {e}");
                return;
            }
        };
        // Checked and sent in turn with the user's other pushes: one checked before a newer one
        // was published is also sent before that one.
        let _turn = self.presence.sending(user).lock().await;
        if !push.is_newest() {
            metrics::counter!("ringchat_presence_pushes_superseded_total").increment(1);
            return;
        }
        let targets = self.sessions_of(&audience, None);
        if targets.is_empty() {
            return;
        }
        let frame = crate::api::encoded(0, Body::Presence(presence_body(user, shown)));
        self.fanout(targets, frame).await;
    }

    /// Sends coalesced pushes when they fall due. Runs until the backend stops.
    pub(crate) async fn run_presence_timer(self: Arc<Self>) {
        loop {
            let next = self.presence.next_wakeup_ms();
            let scheduled = self.presence.scheduled.notified();
            match next {
                Some(at) => {
                    let wait = std::time::Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = scheduled => {}
                    }
                }
                None => scheduled.await,
            }
            self.push_due(self.presence.due(now_ms())).await;
        }
    }

    /// The timer's pushes, [`TIMER_PUSHES_AT_ONCE`] at a time.
    pub(crate) async fn push_due(&self, due: Vec<Push>) {
        futures_util::stream::iter(due)
            .for_each_concurrent(TIMER_PUSHES_AT_ONCE, |push| self.push_presence(push))
            .await;
    }
}

pub(crate) fn presence_body(user: UserId, shown: Shown) -> v1::Presence {
    v1::Presence {
        user_id: user,
        state: shown.state.to_wire().into(),
        last_seen_ms: shown.last_seen_ms,
    }
}

impl Backend {
    /// Fills each friend's presence into a page of `ListFriends`.
    pub(crate) fn with_presence(&self, list: &mut v1::FriendList) {
        let ids: Vec<UserId> = list
            .friends
            .iter()
            .filter_map(|f| f.profile.as_ref().map(|p| p.user_id))
            .collect();
        let shown = self.presence.shown(&ids);
        for (friend, shown) in list
            .friends
            .iter_mut()
            .filter(|f| f.profile.is_some())
            .zip(shown)
        {
            let hides = friend.profile.as_ref().is_some_and(|p| p.hide_last_seen);
            let user = friend.profile.as_ref().map_or(0, |p| p.user_id);
            let shown = Shown {
                last_seen_ms: if hides { 0 } else { shown.last_seen_ms },
                ..shown
            };
            friend.presence = Some(presence_body(user, shown));
        }
    }
}

/// Who is told of a user's presence: their friends. A block ends a friendship both ways, so
/// no blocked user is among them.
fn presence_audience(contacts: &dyn ContactStore, user: UserId) -> Vec<UserId> {
    let mut friends = Vec::new();
    let mut after = 0;
    loop {
        let page = match friends_of(contacts, user, after, AUDIENCE_PAGE) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(user, "presence: reading friends failed: {e}");
                return friends;
            }
        };
        let full = page.len() == AUDIENCE_PAGE;
        after = page.last().copied().unwrap_or(after);
        friends.extend(page);
        if !full {
            return friends;
        }
    }
}

/// What friends see of `user`: last seen hidden where the user asks, and when the profile
/// cannot be read (never shown against the user's wish).
fn shown_to_friends(contacts: &dyn ContactStore, user: UserId, shown: Shown) -> Shown {
    let hides = contacts
        .profile(user)
        .map_or(true, |p| p.is_some_and(|p| p.hide_last_seen));
    Shown {
        last_seen_ms: if hides { 0 } else { shown.last_seen_ms },
        ..shown
    }
}

//! Presence on the wire: a device's change in, `Presence` pushes out to the user's online
//! friends (one encoded frame, one event per shard), and the task that sends coalesced pushes
//! when their time comes.

use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

use super::{DeviceState, Shown};
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::ConnRef;
use crate::store::UserId;
use crate::time::now_ms;

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
        if let Some(shown) = push {
            self.push_presence(user, shown).await;
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

    async fn push_presence(&self, user: UserId, shown: Shown) {
        let audience = self.presence_audience(user);
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
            for (user, shown) in self.presence.due(now_ms()) {
                self.push_presence(user, shown).await;
            }
        }
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
    /// Who is told of a user's presence: their friends (never users they block).
    // Placeholder until the contacts service lands on this branch.
    fn presence_audience(&self, _user: UserId) -> Vec<UserId> {
        Vec::new()
    }
}

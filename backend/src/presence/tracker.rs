//! The presence tracker: device changes in, what to push to friends (and when) out. It owns no
//! sockets: the backend pushes what it returns (`push.rs`).

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Coalescer, Decision, DeviceState, PresenceStore, Shown};
use crate::api::ConnRef;
use crate::store::UserId;

pub(crate) struct Tracker {
    store: Arc<dyn PresenceStore>,
    coalescer: Mutex<Coalescer>,
    /// Wakes the timer task when a push was scheduled earlier than it planned to wake.
    pub(crate) scheduled: tokio::sync::Notify,
}

impl Tracker {
    pub(crate) fn new(store: Arc<dyn PresenceStore>, quiet_ms: u64) -> Self {
        Self {
            store,
            coalescer: Mutex::new(Coalescer::new(quiet_ms)),
            scheduled: tokio::sync::Notify::new(),
        }
    }

    fn coalescer(&self) -> MutexGuard<'_, Coalescer> {
        self.coalescer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A device logged in or set its state (`Some`), or its connection closed (`None`).
    /// Returns what the user's devices say now, and what friends must be shown now, if anything.
    pub(crate) fn device(
        &self,
        user: UserId,
        conn: ConnRef,
        state: Option<DeviceState>,
        now_ms: u64,
    ) -> (Shown, Option<Shown>) {
        // One lock over the store update, the decision and the publish: two changes of one user
        // (a login and a close on two tasks) are decided in the order they were stored.
        let mut coalescer = self.coalescer();
        let current = self.store.set_device(user, conn, state, now_ms);
        let published = self.published(user);
        let push = match coalescer.changed(user, current.state, published.state, now_ms) {
            Decision::PublishNow => Some(self.publish(&mut coalescer, user, current, now_ms)),
            Decision::Later => {
                self.scheduled.notify_one();
                None
            }
            Decision::Nothing => None,
        };
        (current, push)
    }

    /// The pushes due at `now_ms`, each with what to show.
    pub(crate) fn due(&self, now_ms: u64) -> Vec<(UserId, Shown)> {
        let mut coalescer = self.coalescer();
        let mut users = Vec::new();
        coalescer.due(now_ms, &mut users);
        let mut pushes = Vec::with_capacity(users.len());
        for user in users {
            let current = self.store.current(user);
            if current.state != self.published(user).state {
                pushes.push((user, self.publish(&mut coalescer, user, current, now_ms)));
            }
        }
        pushes
    }

    /// When [`Self::due`] should next be called.
    pub(crate) fn next_wakeup_ms(&self) -> Option<u64> {
        self.coalescer().next_wakeup_ms()
    }

    /// What friends were last shown of each user, in the order asked.
    pub(crate) fn shown(&self, users: &[UserId]) -> Vec<Shown> {
        self.store.published(users)
    }

    fn published(&self, user: UserId) -> Shown {
        self.store
            .published(&[user])
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    fn publish(&self, coalescer: &mut Coalescer, user: UserId, shown: Shown, now_ms: u64) -> Shown {
        self.store.publish(user, shown);
        coalescer.published(user, now_ms);
        shown
    }
}

//! The presence tracker: device changes in, what to push to friends (and when) out. It owns no
//! sockets: the backend pushes what it returns (`push.rs`).
//!
//! What it returns is a [`Push`]: what was published, numbered in the user's order. A push
//! reaches friends after store reads (friends, profile) that take their time, and the timer
//! sends many; a newer publish of the same user (a reconnect pushed at once by its login)
//! can be decided meanwhile. So a push is sent only while it is still the user's newest
//! ([`Push::is_newest`], asked in turn with the other pushes' sends: `push.rs`), and a stale
//! "offline" never overtakes the "online" after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{Coalescer, Decision, DeviceState, PresenceStore, Shown};
use crate::api::ConnRef;
use crate::store::UserId;

pub(crate) struct Tracker {
    /// Replaced once, before any client, when the node joins a cluster (`use_store`).
    store: RwLock<Arc<dyn PresenceStore>>,
    coalescer: Mutex<Coalescer>,
    /// Wakes the timer task when a push was scheduled earlier than it planned to wake.
    pub(crate) scheduled: tokio::sync::Notify,
    /// The numbers of the pushes on their way, by user.
    pending: Arc<Mutex<Pending>>,
    /// One held from a push's last check to the end of its send, picked by user: two pushes
    /// of one user are checked and sent one after the other, never interleaved, while other
    /// users' pushes (a login storm's) mostly take other locks.
    sending: Box<[tokio::sync::Mutex<()>]>,
}

/// Locks `sending` is striped over.
const SENDING_LOCKS: usize = 64;

/// Users with pushes on their way: each one's newest number and how many are out. An entry
/// lives while one of its pushes does, so the map holds at most the pushes in flight.
#[derive(Debug, Default)]
struct Pending {
    next: u64,
    users: HashMap<UserId, (u64, usize)>,
}

/// What friends are to be told of `user`; counted among the user's pushes on their way until
/// dropped.
#[derive(Debug)]
pub(crate) struct Push {
    pub(crate) user: UserId,
    pub(crate) shown: Shown,
    number: u64,
    pending: Arc<Mutex<Pending>>,
}

impl Push {
    /// Whether nothing was published of the user since this push: only then is it sent.
    pub(crate) fn is_newest(&self) -> bool {
        lock(&self.pending)
            .users
            .get(&self.user)
            .is_some_and(|(newest, _)| *newest == self.number)
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        let mut pending = lock(&self.pending);
        if let Some((_, out)) = pending.users.get_mut(&self.user) {
            *out -= 1;
            if *out == 0 {
                pending.users.remove(&self.user);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tracker {
    pub(crate) fn new(store: Arc<dyn PresenceStore>, quiet_ms: u64) -> Self {
        Self {
            store: RwLock::new(store),
            coalescer: Mutex::new(Coalescer::new(quiet_ms)),
            scheduled: tokio::sync::Notify::new(),
            pending: Arc::default(),
            sending: (0..SENDING_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock a push of `user` checks and sends under.
    pub(crate) fn sending(&self, user: UserId) -> &tokio::sync::Mutex<()> {
        &self.sending[(user % SENDING_LOCKS as u64) as usize]
    }

    fn coalescer(&self) -> MutexGuard<'_, Coalescer> {
        lock(&self.coalescer)
    }

    fn store(&self) -> Arc<dyn PresenceStore> {
        Arc::clone(&self.store.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Cluster mode: the shared store replaces the in-process one. Call before any client
    /// logs in (what the old store held is not carried over).
    pub(crate) fn use_store(&self, store: Arc<dyn PresenceStore>) {
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = store;
    }

    /// A device logged in or set its state (`Some`), or its connection closed (`None`).
    /// Returns what the user's devices say now, and what friends must be shown now, if anything.
    pub(crate) fn device(
        &self,
        user: UserId,
        conn: ConnRef,
        state: Option<DeviceState>,
        now_ms: u64,
    ) -> (Shown, Option<Push>) {
        // One lock over the store update, the decision and the publish: two changes of one user
        // (a login and a close on two tasks) are decided in the order they were stored.
        let mut coalescer = self.coalescer();
        let current = self.store().set_device(user, conn, state, now_ms);
        let push = self.decide(&mut coalescer, user, current, now_ms);
        (current, push)
    }

    /// The user's devices elsewhere changed (another node of a cluster, or a node that left):
    /// what friends here must be shown now, if anything.
    pub(crate) fn elsewhere(&self, user: UserId, now_ms: u64) -> Option<Push> {
        let mut coalescer = self.coalescer();
        let current = self.store().current(user);
        self.decide(&mut coalescer, user, current, now_ms)
    }

    fn decide(
        &self,
        coalescer: &mut Coalescer,
        user: UserId,
        current: Shown,
        now_ms: u64,
    ) -> Option<Push> {
        let published = self.published(user);
        match coalescer.changed(user, current.state, published.state, now_ms) {
            Decision::PublishNow => Some(self.publish(coalescer, user, current, now_ms)),
            Decision::Later => {
                self.scheduled.notify_one();
                None
            }
            Decision::Nothing => None,
        }
    }

    /// The pushes due at `now_ms`, each with what to show.
    pub(crate) fn due(&self, now_ms: u64) -> Vec<Push> {
        let mut coalescer = self.coalescer();
        let mut users = Vec::new();
        coalescer.due(now_ms, &mut users);
        let mut pushes = Vec::with_capacity(users.len());
        for user in users {
            let current = self.store().current(user);
            if current.state != self.published(user).state {
                pushes.push(self.publish(&mut coalescer, user, current, now_ms));
            }
        }
        pushes
    }

    /// When [`Self::due`] should next be called.
    pub(crate) fn next_wakeup_ms(&self) -> Option<u64> {
        self.coalescer().next_wakeup_ms()
    }

    /// What a friends list shows of each user, in the order asked (on a blocking thread).
    pub(crate) fn shown(&self, users: &[UserId]) -> Vec<Shown> {
        self.store().listed(users)
    }

    fn published(&self, user: UserId) -> Shown {
        self.store()
            .published(&[user])
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Under the coalescer's lock: the numbers follow the order of the publishes.
    fn publish(&self, coalescer: &mut Coalescer, user: UserId, shown: Shown, now_ms: u64) -> Push {
        self.store().publish(user, shown);
        coalescer.published(user, now_ms);
        let mut pending = lock(&self.pending);
        pending.next += 1;
        let number = pending.next;
        let entry = pending.users.entry(user).or_insert((0, 0));
        *entry = (number, entry.1 + 1);
        Push {
            user,
            shown,
            number,
            pending: Arc::clone(&self.pending),
        }
    }

    /// Users with pushes on their way (bounded by the pushes in flight).
    #[cfg(test)]
    pub(crate) fn pushes_pending(&self) -> usize {
        lock(&self.pending).users.len()
    }
}

//! Repairing the online index after a membership change from another node was lost (cluster
//! mode). The link asks for it whenever a peer's frames may have been dropped on the way here
//! (a `missed` batch, a stream that ended or came back): any of them may have been a
//! `MemberChange`. From that moment until a full pass has re-read the groups of every user
//! online here, other nodes' group frames are held back (not pushed: a removed member must not
//! get them); the link then tells every session to Sync, which serves what was held back by seq.
//!
//! What a pass read is installed as a login's read is: once delivery has routed every commit
//! the read saw (`InFlight::routed_since_read`), since the groups this node owns are routed
//! without floors.
//!
//! Bounded: one pass at a time, reading each online user's groups once (at most
//! `groups.per_user_max` rows, as a login does) on the blocking pool, `USERS_PER_TASK` users per
//! blocking task, at most `TASKS_IN_FLIGHT_MAX` such tasks at once; requests during a pass make
//! one more pass after it, never more. Held are all other nodes' group frames, not only the
//! lost peer's: a group's owner can change (the view), and the new owner's frames to a member
//! whose removal the old owner lost must be held as well.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;

use super::GroupOnline;
use crate::messaging::in_flight::InFlight;
use crate::store::{ConvId, GroupStore, StoreError, UserId};

/// Online users whose groups one blocking task re-reads, at most.
const USERS_PER_TASK: usize = 64;
/// Blocking tasks of one pass at once, at most: half the blocking pool's default
/// (`backend.blocking_threads_max`, 8), and never more than half the configured pool (at
/// least 1), so logins' and reads' blocking calls keep the rest. A pass over N online users
/// takes about N / (`USERS_PER_TASK` × this) reads' time.
const TASKS_IN_FLIGHT_MAX: usize = 4;
/// Reads of one user's groups while changes keep landing, at most (then the pass fails and is
/// tried again).
const READS_PER_USER_MAX: usize = 8;
/// Wait before a failed pass (a store error, delivery behind) is tried again; frames stay held
/// meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where a pass reads the groups, and what it waits on before installing them.
struct Source {
    store: Arc<dyn GroupStore>,
    per_user_max: usize,
    in_flight: Arc<InFlight>,
    /// Blocking tasks of one pass at once.
    tasks_max: usize,
}

#[derive(Default)]
pub(super) struct Repair {
    source: OnceLock<Source>,
    /// Passes asked for, and the request count the last finished pass covered.
    wanted: AtomicU64,
    done: AtomicU64,
    running: AtomicBool,
}

impl Repair {
    /// Frames from other nodes are held until a pass covers the last request.
    pub(super) fn due(&self) -> bool {
        self.done.load(Ordering::Acquire) < self.wanted.load(Ordering::Acquire)
    }
}

/// The user's groups as a login installs them: those it is a member of, each with its
/// `visible_from_seq`, at most `max` (by id; the rest get no pushes, with a warning).
pub(crate) fn read_groups(
    store: &dyn GroupStore,
    user: UserId,
    max: usize,
) -> Result<Vec<(ConvId, u64)>, StoreError> {
    // One row past the limit, to tell a list that reaches it from one that passes it.
    let mut read = store.groups_of_user(user, 0, max + 1)?;
    if read.len() > max {
        // The limit was lowered, or concurrent joins on several nodes each saw room.
        metrics::counter!("ringchat_groups_login_capped_total").increment(1);
        tracing::warn!(
            user,
            per_user_max = max,
            "the user has more groups than groups.per_user_max; those past it (by id) are not \
             pushed to its sessions"
        );
        read.truncate(max);
    }
    Ok(read
        .into_iter()
        .filter(|(_, row)| row.is_member())
        .map(|(g, row)| (g, row.visible_from_seq))
        .collect())
}

impl GroupOnline {
    /// Where a repair reads the groups (cluster mode), `groups.per_user_max`, and the commit
    /// groups in flight, which a pass lets delivery route before it installs what it read.
    pub(crate) fn set_repair_source(
        &self,
        store: Arc<dyn GroupStore>,
        per_user_max: usize,
        in_flight: Arc<InFlight>,
        blocking_threads_max: usize,
    ) {
        let _ = self.repair.source.set(Source {
            store,
            per_user_max,
            in_flight,
            tasks_max: TASKS_IN_FLIGHT_MAX.min(blocking_threads_max / 2).max(1),
        });
    }

    /// A membership change from another node may have been lost: other nodes' group frames are
    /// held from now on. `true`: no pass runs, the caller must run [`Self::repair`].
    pub(crate) fn repair_wanted(&self) -> bool {
        self.repair.wanted.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("ringchat_group_online_repairs_wanted_total").increment(1);
        !self.repair.running.swap(true, Ordering::AcqRel)
    }

    /// Runs passes until one covers every request made before it began.
    pub(crate) async fn repair(self: &Arc<Self>) {
        loop {
            let target = self.repair.wanted.load(Ordering::Acquire);
            if let Err(e) = self.repair_pass().await {
                metrics::counter!("ringchat_group_online_repair_failures_total").increment(1);
                tracing::warn!(error = %e, "cluster: re-reading the online users' groups failed; other nodes' group frames stay held, retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            self.repair.done.store(target, Ordering::Release);
            if self.repair.wanted.load(Ordering::Acquire) != target {
                continue;
            }
            self.repair.running.store(false, Ordering::Release);
            // A request between the check and the store saw a pass running and left it to us.
            if self.repair.wanted.load(Ordering::Acquire) == target
                || self.repair.running.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    /// Re-reads the groups of every user online here and replaces what was installed. Each
    /// entry's epoch moves first, so a login still reading (maybe before the lost change)
    /// reads again.
    async fn repair_pass(self: &Arc<Self>) -> Result<(), String> {
        let Some(source) = self.repair.source.get() else {
            return Ok(());
        };
        let users: Vec<(UserId, u64)> = {
            let mut users = self.lock();
            let ids: Vec<UserId> = users.users.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| {
                    let epoch = users.bump();
                    let entry = users.users.get_mut(&id)?;
                    entry.epoch = epoch;
                    entry.groups.is_some().then_some((id, epoch))
                })
                .collect()
        };
        let started = std::time::Instant::now();
        // Made first (lazy: each starts when polled), so the stream holds no closure.
        let rereads: Vec<_> = users
            .chunks(USERS_PER_TASK)
            .map(|chunk| self.reread(source, chunk.to_vec()))
            .collect();
        let mut chunks = futures_util::stream::iter(rereads).buffer_unordered(source.tasks_max);
        while let Some(done) = chunks.next().await {
            done?;
        }
        tracing::info!(
            users = users.len(),
            ms = started.elapsed().as_millis() as u64,
            "cluster: re-read the online users' groups"
        );
        Ok(())
    }

    /// Re-reads the groups of `users` (user, epoch) on the blocking pool, lets delivery route
    /// what the read saw, and replaces what was installed; a user whose epoch moved meanwhile
    /// is read again.
    async fn reread(
        self: &Arc<Self>,
        source: &Source,
        mut users: Vec<(UserId, u64)>,
    ) -> Result<(), String> {
        for _ in 0..READS_PER_USER_MAX {
            let (store, max) = (Arc::clone(&source.store), source.per_user_max);
            let read = tokio::task::spawn_blocking(move || {
                users
                    .into_iter()
                    .map(|(user, epoch)| Ok((user, epoch, read_groups(&*store, user, max)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let adds_groups = read.iter().any(|(_, _, groups)| !groups.is_empty());
            source
                .in_flight
                .routed_since_read(adds_groups)
                .await
                .map_err(|e| e.to_string())?;
            let this = Arc::clone(self);
            // On the blocking pool too: a user may be in `groups.per_user_max` (10,000) groups.
            users = tokio::task::spawn_blocking(move || {
                read.into_iter()
                    .filter_map(|(user, epoch, groups)| {
                        if this.replace(user, epoch, groups) {
                            return None;
                        }
                        // A change came in meanwhile: read again from its epoch.
                        this.lock()
                            .users
                            .get(&user)
                            .map(|entry| (user, entry.epoch))
                    })
                    .collect()
            })
            .await
            .map_err(|e| e.to_string())?;
            if users.is_empty() {
                return Ok(());
            }
        }
        Err(format!(
            "{} users: group memberships kept changing",
            users.len()
        ))
    }
}

//! Repairing the online index after a membership change from another node was lost (cluster
//! mode). The link asks for it whenever a peer's frames may have been dropped on the way here
//! (a `missed` batch, a stream that ended or came back): any of them may have been a
//! `MemberChange`. From that moment until a full pass has re-read the groups of every user
//! online here, other nodes' group frames are held back (not pushed: a removed member must not
//! get them); the link then tells every session to Sync, which serves what was held back by seq.
//!
//! Bounded: one pass at a time, reading each online user's groups once (at most
//! `groups.per_user_max` rows, as a login does) on the blocking pool, `USERS_PER_TASK` users per
//! blocking task; requests during a pass make one more pass after it, never more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::GroupOnline;
use crate::store::{ConvId, GroupStore, StoreError, UserId};

/// Online users whose groups one blocking task re-reads, at most.
const USERS_PER_TASK: usize = 64;
/// Reads of one user's groups while changes keep landing, at most (then the pass fails and is
/// tried again).
const READS_PER_USER_MAX: usize = 8;
/// Wait before a failed pass (a store error) is tried again; frames stay held meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Repair {
    source: OnceLock<(Arc<dyn GroupStore>, usize)>,
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
    /// Where a repair reads the groups (cluster mode), and `groups.per_user_max`.
    pub(crate) fn set_repair_store(&self, store: Arc<dyn GroupStore>, per_user_max: usize) {
        let _ = self.repair.source.set((store, per_user_max));
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
        let Some((store, max)) = self.repair.source.get() else {
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
        for chunk in users.chunks(USERS_PER_TASK) {
            let (this, store, max, chunk) =
                (Arc::clone(self), Arc::clone(store), *max, chunk.to_vec());
            tokio::task::spawn_blocking(move || this.reread(&*store, max, &chunk))
                .await
                .map_err(|e| e.to_string())??;
        }
        tracing::info!(
            users = users.len(),
            ms = started.elapsed().as_millis() as u64,
            "cluster: re-read the online users' groups"
        );
        Ok(())
    }

    fn reread(
        &self,
        store: &dyn GroupStore,
        max: usize,
        users: &[(UserId, u64)],
    ) -> Result<(), String> {
        for &(user, mut epoch) in users {
            let mut replaced = false;
            for _ in 0..READS_PER_USER_MAX {
                let groups = read_groups(store, user, max).map_err(|e| e.to_string())?;
                if self.replace(user, epoch, groups) {
                    replaced = true;
                    break;
                }
                match self.lock().users.get(&user) {
                    Some(entry) => epoch = entry.epoch,
                    None => {
                        replaced = true;
                        break;
                    }
                }
            }
            if !replaced {
                return Err(format!("user {user}: group memberships kept changing"));
            }
        }
        Ok(())
    }
}

//! A node that comes back into the cluster checks its sessions against the store. Kicks go to
//! the nodes of the sender's view, and its log hands them to nodes that enter that view within
//! a window (`kicks.rs`). A node missing from the others' views for longer missed kicks no
//! window covers: its Redis was cut past `node_ttl_ms` (the others dropped it and revoked
//! meanwhile), or it took logins before its first join (nobody could kick them). It knows:
//! `ClusterView::returns` counts its first join and every heartbeat after a gap long enough to
//! have been dropped (`view::may_have_been_dropped`). Each time, it checks every session it has
//! then by the rule a received kick applies (`KickStores::verdict`): the account disabled ends
//! it `ACCOUNT_DISABLED`, its token gone from the store ends it `DEVICE_REVOKED` (the token is
//! revoked; which revocation it was, password change, device revoke or logout, is not in the
//! store).
//!
//! Every session present then, not only those opened while away: one opened before the
//! absence is as likely to be named by a kick it missed, and one opened after the return gets
//! the kicks issued since like any session. Off the hot path: a task of its own, the store
//! read on the blocking pool in batches of [`RECHECK_BATCH_SESSIONS`], each session ended only
//! if it still holds the token that was checked (a password changed here gives it a new one).
//! A store that does not answer is asked again after a pause (doubling from
//! [`RECHECK_PAUSE_FIRST`]), [`RECHECK_ATTEMPTS_MAX`] times in all; then the sessions it never
//! answered for end with `RECONNECT` (fail closed; not a verdict: the client keeps its token, whose next login asks the store). A return
//! while a check runs makes one more check after it (a `Notify` permit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ringchat_proto::v1::KickReason;
use tokio::sync::Notify;

use super::Link;
use super::kicks::{Check, KickStores};
use crate::api::ConnRef;
use crate::cluster::ClusterView;
use crate::store::{StoreError, TokenHash};

/// Sessions checked per store call on the blocking pool (two reads each).
const RECHECK_BATCH_SESSIONS: usize = 256;
/// Rounds of asking the store about sessions it did not answer for, at most.
const RECHECK_ATTEMPTS_MAX: u32 = 6;
/// The pause before the second round; it doubles after each (0.5 + 1 + 2 + 4 + 8 s).
const RECHECK_PAUSE_FIRST: Duration = Duration::from_millis(500);

/// The returns seen and the wake-up of the task that checks.
#[derive(Default)]
pub(super) struct Recheck {
    /// The highest `ClusterView::returns` a check was started for.
    seen: AtomicU64,
    wake: Notify,
}

/// A session as checked: its user, connection and token.
type Checked = (u64, ConnRef, TokenHash);

/// Why a session is to end, by the rule of a received kick: `None` if it stays.
fn recheck_one(
    stores: &KickStores,
    user: u64,
    hash: &TokenHash,
) -> Result<Option<KickReason>, StoreError> {
    if stores.verdict(user, hash, Check::Disabled)? {
        return Ok(Some(KickReason::AccountDisabled));
    }
    if stores.verdict(user, hash, Check::TokenGone)? {
        return Ok(Some(KickReason::DeviceRevoked));
    }
    Ok(None)
}

impl Link {
    /// A view that counts a return not seen yet wakes the check (run by the sweeper).
    pub(super) fn note_returns(&self, view: &ClusterView) {
        if view.returns > self.recheck.seen.fetch_max(view.returns, Relaxed) {
            self.recheck.wake.notify_one();
        }
    }

    /// The task that checks the sessions after each return, until the link stops.
    pub(super) async fn run_rechecks(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                () = self.recheck.wake.notified() => {}
                _ = stop.changed() => break,
            }
            tokio::select! {
                _ = self.recheck_sessions() => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// Checks every session here against the store; returns how many it ended.
    pub(crate) async fn recheck_sessions(&self) -> usize {
        let Some(stores) = self.kick_stores.get().cloned() else {
            return 0;
        };
        let mut left: Vec<Checked> = self
            .sessions
            .read()
            .all()
            .map(|(user, s)| (user, s.conn, s.token_hash))
            .collect();
        metrics::counter!("ringchat_cluster_rechecks_total").increment(1);
        tracing::info!(
            sessions = left.len(),
            "cluster: this node is back in the cluster; its sessions are checked against the store for kicks it missed"
        );
        let mut ended = 0;
        let mut pause = RECHECK_PAUSE_FIRST;
        for attempt in 1..=RECHECK_ATTEMPTS_MAX {
            let mut unanswered = Vec::new();
            for chunk in left.chunks(RECHECK_BATCH_SESSIONS) {
                let asked = chunk.to_vec();
                let stores = stores.clone();
                let verdicts: Vec<Result<Option<KickReason>, ()>> =
                    tokio::task::spawn_blocking(move || {
                        asked
                            .iter()
                            .map(|(user, _, hash)| {
                                recheck_one(&stores, *user, hash).map_err(|_| ())
                            })
                            .collect()
                    })
                    .await
                    .unwrap_or_else(|_| vec![Err(()); chunk.len()]);
                for (session, verdict) in chunk.iter().zip(verdicts) {
                    match verdict {
                        Ok(None) => {}
                        Ok(Some(reason)) => {
                            ended += usize::from(self.end_checked(session, reason).await)
                        }
                        Err(()) => unanswered.push(*session),
                    }
                }
            }
            if unanswered.is_empty() {
                break;
            }
            if attempt == RECHECK_ATTEMPTS_MAX {
                tracing::error!(
                    sessions = unanswered.len(),
                    "cluster: the store did not answer the sessions' check after this node came back; they end (fail closed)"
                );
                for session in &unanswered {
                    // Not a verdict: the client reconnects, and its token login asks the
                    // store itself (`DEVICE_REVOKED` would make it forget a good token).
                    ended += usize::from(self.end_checked(session, KickReason::Reconnect).await);
                }
                break;
            }
            left = unanswered;
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        metrics::counter!("ringchat_cluster_recheck_sessions_ended_total").increment(ended as u64);
        if ended > 0 {
            tracing::info!(
                sessions = ended,
                "cluster: sessions ended on coming back: their token was revoked or their account disabled meanwhile"
            );
        }
        ended
    }

    /// Ends a checked session if it still holds the token checked; whether it did.
    async fn end_checked(&self, (user, conn, hash): &Checked, reason: KickReason) -> bool {
        let same = self
            .sessions
            .read()
            .session(*user, *conn)
            .is_some_and(|s| s.token_hash == *hash);
        if same {
            self.end_session(*conn, reason).await;
        }
        same
    }
}

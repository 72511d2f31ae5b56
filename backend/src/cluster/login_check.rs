//! Cluster mode: the catch-up check after a login. A login here reaches the other nodes' route
//! caches only once this node's writer has published it (within `routes.flush_ms`) and the
//! PUBLISH has come through their subscriptions; until then a conversation's owner on another
//! node may hold the user's old entry (on no node, or the old one) and send a new message's
//! push to the wrong nodes. The message is durable, but the device read before it was
//! committed (its `Resume`, run right after `LoginOk`, or its login Sync), so it would learn
//! of it only at its next gap — never, in a quiet conversation — and a `Resumed{complete}`
//! would have promised too much.
//!
//! So once the login's route change is out and the hop has passed (the window is closed), the
//! node reads whether any of the user's own conversations (direct recency index, group heads)
//! got a message since the login's time, and if one did tells that session `SyncNeeded`: the
//! client catches up by seq. For every login, resume or not: a login Sync reads right after
//! `LoginOk` as a resume does, and is as exposed. A push that did arrive makes the hint
//! redundant (one cheap Sync); the check cannot tell which pushes were sent where.
//!
//! Off the hot path and bounded: one task per node, created with the first login, takes the
//! checks in login order, one read at a time. At most `LOGIN_CHECKS_WAITING_MAX` wait; past
//! that, and for a check the task reaches over `LOGIN_CHECK_LATE_MAX_MS` late, the safe answer
//! is given without a read (`SyncNeeded`: to every session here via the link's folded hint
//! for the overflow, as its sessions are not kept). Single node: none of this exists (the
//! check is one look at an empty `OnceLock`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ringchat_proto::Body;
use ringchat_proto::v1;
use tokio::sync::mpsc;

use super::routes::{Published, Routes};
use super::{NODE_CLOCKS_APART_MAX_MS, link::Link};
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, ShardEvent, ShardSender};
use crate::groups::conversations as groups;
use crate::messaging::conversations;
use crate::sessions::SharedSessions;
use crate::store::{Ports, UserId};

/// A PUBLISH's way to the other nodes' route caches after Redis answered it (their
/// subscription's read and apply), in milliseconds, at most as far as the check assumes.
pub(crate) const ROUTE_CHANGE_HOP_MS: u64 = 1_000;
/// Checks waiting (logins of the last `routes.flush_ms` + `ROUTE_CHANGE_HOP_MS` or so), at
/// most; a few dozen bytes each.
pub(crate) const LOGIN_CHECKS_WAITING_MAX: usize = 16_384;
/// A check reached this many milliseconds after it was due (the reads are behind) is answered
/// `SyncNeeded` without its read, so that a backlog clears at the cost of some Syncs.
pub(crate) const LOGIN_CHECK_LATE_MAX_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy)]
struct Check {
    user: UserId,
    conn: ConnRef,
    /// The login's `LoginOk.server_time_ms`: messages from then on may have missed the device.
    login_ms: u64,
    due_ms: u64,
}

/// The queue of checks (created by the first login in cluster mode; its task ends with it).
pub(crate) struct LoginChecks {
    tx: mpsc::Sender<Check>,
    /// The latest due time of a check that found the queue full (ms since the epoch; 0: none).
    overflow_due_ms: Arc<AtomicU64>,
    wait_ms: u64,
}

/// What the task needs of the backend.
struct Ctx {
    ports: Ports,
    sessions: SharedSessions,
    shards: Vec<ShardSender>,
    routes: Arc<Routes>,
    link: Option<Arc<Link>>,
    wait_ms: u64,
}

impl LoginChecks {
    fn start(backend: &Backend, routes: &Arc<Routes>) -> Self {
        let (tx, rx) = mpsc::channel(LOGIN_CHECKS_WAITING_MAX);
        let overflow_due_ms = Arc::new(AtomicU64::new(0));
        let wait_ms = routes.flush_ms() + ROUTE_CHANGE_HOP_MS;
        let ctx = Ctx {
            ports: backend.ports.clone(),
            sessions: backend.sessions.clone(),
            shards: backend.shards.clone(),
            routes: Arc::clone(routes),
            link: backend.link.clone(),
            wait_ms,
        };
        tokio::spawn(run(ctx, rx, tx.downgrade(), Arc::clone(&overflow_due_ms)));
        Self {
            tx,
            overflow_due_ms,
            wait_ms,
        }
    }

    fn add(&self, check: Check) {
        add(&self.tx, &self.overflow_due_ms, check);
    }
}

fn add(tx: &mpsc::Sender<Check>, overflow_due_ms: &AtomicU64, check: Check) {
    if tx.try_send(check).is_err() {
        metrics::counter!("ringchat_cluster_login_checks_total", "outcome" => "overflow")
            .increment(1);
        overflow_due_ms.fetch_max(check.due_ms, Relaxed);
    }
}

impl Backend {
    /// Cluster mode: `user`'s login on `conn` (its `LoginOk` time `login_ms`) is checked for
    /// messages that may have missed it once its route change has reached the other nodes.
    pub(crate) fn check_after_login(&self, user: UserId, conn: ConnRef, login_ms: u64) {
        let Some(routes) = self.routes.get() else {
            return;
        };
        let checks = self
            .login_checks
            .get_or_init(|| LoginChecks::start(self, routes));
        checks.add(Check {
            user,
            conn,
            login_ms,
            due_ms: crate::time::now_ms() + checks.wait_ms,
        });
    }
}

async fn sleep_until_ms(at_ms: u64) {
    let left = at_ms.saturating_sub(crate::time::now_ms());
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left)).await;
    }
}

async fn run(
    ctx: Ctx,
    mut rx: mpsc::Receiver<Check>,
    tx: mpsc::WeakSender<Check>,
    overflow_due_ms: Arc<AtomicU64>,
) {
    loop {
        let overflow = overflow_due_ms.load(Relaxed);
        let check = tokio::select! {
            check = rx.recv() => match check {
                Some(check) => check,
                None => return,
            },
            () = sleep_until_ms(overflow), if overflow != 0 => {
                overflow_hint(&ctx, &overflow_due_ms, overflow);
                continue;
            }
        };
        sleep_until_ms(check.due_ms).await;
        let now = crate::time::now_ms();
        let overflow = overflow_due_ms.load(Relaxed);
        if overflow != 0 && overflow <= now {
            overflow_hint(&ctx, &overflow_due_ms, overflow);
        }
        let Some(again_at) = ctx.examine(check, now).await else {
            continue;
        };
        let again = Check {
            due_ms: again_at,
            ..check
        };
        match tx.upgrade() {
            Some(tx) => add(&tx, &overflow_due_ms, again),
            None => return,
        }
    }
}

/// Checks that found the queue full, due by now: every session here is told to Sync.
fn overflow_hint(ctx: &Ctx, overflow_due_ms: &AtomicU64, seen: u64) {
    // A later overflow meanwhile keeps its own due time.
    let _ = overflow_due_ms.compare_exchange(seen, 0, Relaxed, Relaxed);
    if let Some(link) = &ctx.link {
        link.request_sync_hint("login_checks_full");
    }
}

impl Ctx {
    /// One check at `now`: `Some(when)` to look again then (the route change is not out yet).
    async fn examine(&self, check: Check, now: u64) -> Option<u64> {
        let outcome = |what: &'static str| {
            metrics::counter!("ringchat_cluster_login_checks_total", "outcome" => what)
                .increment(1);
        };
        if self
            .sessions
            .read()
            .session(check.user, check.conn)
            .is_none()
        {
            outcome("closed");
            return None;
        }
        // The window closes a hop after the user's PUBLISH went out, not at a fixed time: a
        // flush can wait behind a slow one, or fail and be retried.
        match self.routes.published(check.user) {
            Published::Pending => {
                outcome("waited");
                return Some(now + self.wait_ms);
            }
            Published::At(at) if now < at + ROUTE_CHANGE_HOP_MS => {
                outcome("waited");
                return Some(at + ROUTE_CHANGE_HOP_MS);
            }
            Published::At(_) => {}
        }
        let missed = if now > check.due_ms + LOGIN_CHECK_LATE_MAX_MS {
            outcome("late");
            true
        } else {
            let ports = self.ports.clone();
            // A message's time is its owner's clock (`NODE_CLOCKS_APART_MAX_MS`).
            let from = check.login_ms.saturating_sub(NODE_CLOCKS_APART_MAX_MS);
            let user = check.user;
            let read = tokio::task::spawn_blocking(move || active_since(&ports, user, from)).await;
            match read {
                Ok(Ok(active)) => {
                    outcome(if active { "active" } else { "quiet" });
                    active
                }
                Ok(Err(refusal)) => {
                    tracing::warn!(user, message = %refusal.message, "login check: a read failed; telling the session to Sync");
                    outcome("failed");
                    true
                }
                Err(join) => {
                    tracing::error!(user, %join, "login check: the read task failed");
                    outcome("failed");
                    true
                }
            }
        };
        if missed {
            let frame = crate::api::encoded(0, Body::SyncNeeded(v1::SyncNeeded { spread_ms: 0 }));
            if let Some(shard) = self.shards.get(usize::from(check.conn.shard)) {
                // A shard that has stopped (shutdown) takes nothing more.
                let _ = shard
                    .send(ShardEvent::Frame {
                        conn: check.conn.conn,
                        frame,
                    })
                    .await;
            }
        }
        None
    }
}

/// Whether any of `user`'s conversations (direct ones by the recency index, and the user's
/// groups, a stranger's never) has a message from `from` on (blocking).
fn active_since(ports: &Ports, user: UserId, from: u64) -> Result<bool, Refusal> {
    if !conversations::recent_since(ports, user, from, 1)?.is_empty() {
        return Ok(true);
    }
    let (heads, every_group) = groups::heads(ports, user, None, usize::MAX)?;
    // Groups past the read bound cannot be told quiet: the safe answer.
    Ok(!every_group || heads.iter().any(|h| h.key().0 >= from))
}

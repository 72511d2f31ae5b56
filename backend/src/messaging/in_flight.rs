//! Commit groups sequenced but not yet routed to the shards: when each began (what a login
//! reports as its server time) and how many were routed (what installing groups read from the
//! store into the online index waits for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long installing groups read from the store waits for the commits the read saw to be
/// routed, at most (a commit group's fsync; seconds only when the disk stalls). Past it a login
/// is refused with `UNAVAILABLE`, and a repair pass fails and is tried again.
pub(crate) const ROUTED_WAIT_MAX: Duration = Duration::from_secs(5);

/// The commits a read of the store saw were not routed within the wait: delivery is behind.
#[derive(Debug, thiserror::Error)]
#[error("delivery is behind: the commits the read saw were not routed within {0:?}")]
pub(crate) struct NotRouted(Duration);

/// The server time from which messages may be sequenced but not yet routed to sessions (a
/// group's fsync can stall for seconds, and a group handed to the delivery task waits for it
/// too): a login's `LoginOk.server_time_ms` is no later, so that a client resuming from it is
/// sent what was routed after it logged in but stamped before (`resume.rs`). One entry per
/// commit group, in commit order: begun on the sequencer's thread, ended where the group's
/// frames leave for the shards (inline, or in the delivery task), which is also commit order.
///
/// Counted too, so that groups read from the store join the online index only once every
/// commit the read saw has been routed ([`InFlight::routed_since_read`]).
#[derive(Debug)]
pub(crate) struct InFlight {
    groups: std::sync::Mutex<Groups>,
    routed: tokio::sync::Notify,
    /// [`ROUTED_WAIT_MAX`] in ms (a test shortens it).
    wait_max_ms: AtomicU64,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            groups: std::sync::Mutex::default(),
            routed: tokio::sync::Notify::new(),
            wait_max_ms: AtomicU64::new(ROUTED_WAIT_MAX.as_millis() as u64),
        }
    }
}

#[derive(Debug, Default)]
struct Groups {
    /// When each group not yet routed began, oldest first.
    began: std::collections::VecDeque<u64>,
    /// Groups begun since start; the routed ones are `begun - began.len()`.
    begun: u64,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn begin(&self, now_ms: u64) {
        let mut groups = self.lock();
        groups.began.push_back(now_ms);
        groups.begun += 1;
    }

    pub(super) fn end(&self) {
        self.lock().began.pop_front();
        self.routed.notify_waiters();
    }

    /// The server time a login reports: now, or when the oldest group not yet routed began.
    pub(crate) fn login_time(&self, now_ms: u64) -> u64 {
        let groups = self.lock();
        groups
            .began
            .front()
            .map_or(now_ms, |&began| began.min(now_ms))
    }

    /// Groups begun so far: every group durable now is among them.
    pub(crate) fn begun(&self) -> u64 {
        self.lock().begun
    }

    /// Resolves once the first `n` groups begun have been routed to the shards.
    pub(crate) async fn routed_through(&self, n: u64) {
        loop {
            let notified = self.routed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the look: an `end` after it wakes this.
            notified.as_mut().enable();
            let routed = {
                let groups = self.lock();
                groups.begun - groups.began.len() as u64
            };
            if routed >= n {
                return;
            }
            notified.await;
        }
    }

    /// The one rule for groups read from the store joining the online index (a login's, a
    /// repair's), called between the read and the install: waits, at most
    /// [`ROUTED_WAIT_MAX`], until every commit the read saw has been routed. Installed
    /// earlier, a group joined in a commit the delivery task had not yet reached would be
    /// pushed that group's messages of the commits before (older than the member's visible
    /// seqs): the online index routes the groups this node owns without floors. Counted after
    /// the read: every group the read could see has begun by then (an embedded store's group
    /// may be readable before its fsync ends, so "durable" would be too few); waiting also
    /// for one still in its fsync only costs that fsync. `adds_groups` false (the read found
    /// no group to install): nothing to wait for, so a token login costs no wait on a slow
    /// fsync. Past the bound the caller must not install (that is the leak): a login is
    /// refused, a repair pass tried again.
    pub(crate) async fn routed_since_read(&self, adds_groups: bool) -> Result<(), NotRouted> {
        if !adds_groups {
            return Ok(());
        }
        let through = self.begun();
        let wait_max = Duration::from_millis(self.wait_max_ms.load(Ordering::Relaxed));
        tokio::time::timeout(wait_max, self.routed_through(through))
            .await
            .map_err(|_| NotRouted(wait_max))
    }

    #[cfg(test)]
    pub(crate) fn set_wait_max(&self, wait_max: Duration) {
        self.wait_max_ms
            .store(wait_max.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[test]
fn a_login_reports_the_start_of_the_oldest_group_not_yet_routed() {
    let f = InFlight::default();
    assert_eq!(f.login_time(5_000), 5_000);
    f.begin(1_000);
    f.begin(2_000);
    assert_eq!(
        f.login_time(5_000),
        1_000,
        "the group begun at 1,000 is not routed yet"
    );
    f.end();
    assert_eq!(f.login_time(5_000), 2_000);
    f.end();
    assert_eq!(f.login_time(5_000), 5_000);
}

#[cfg(test)]
#[tokio::test]
async fn a_login_waits_until_the_groups_begun_before_are_routed() {
    let f = std::sync::Arc::new(InFlight::default());
    f.begin(1_000);
    f.begin(2_000);
    let through = f.begun();
    let waiting = tokio::spawn({
        let f = std::sync::Arc::clone(&f);
        async move { f.routed_through(through).await }
    });
    f.end();
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "one of the two is not routed yet");
    f.begin(3_000);
    f.end();
    waiting.await.unwrap();
    // Routed already: no wait.
    f.routed_through(through).await;
}

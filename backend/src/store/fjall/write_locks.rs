//! One writer at a time, from its write through its persist to publishing the snapshot, so
//! that a published snapshot never holds another writer's data before that data is durable
//! (and user creation's name check and id counter move together).
//!
//! *Invariant*: every write to the database after `FjallStore::open_with` returns holds this
//! lock, so nothing is written to fjall's journal while it is held by someone else. The journal
//! prefill (`journal_prefill.rs`) relies on it. Enforced: `clippy.toml` forbids fjall's write
//! calls but through `FjallStore::batch`, `insert` and `remove`, which assert the lock is held.
//!
//! Commit groups go first: while one waits for the lock, other writers (a login's token, an
//! audit batch) step back at it, so the sequencer waits for at most the one write (and fsync)
//! in progress, never for a queue of them: a password-login storm cannot hold up established
//! users' messages one fsync per login.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub(super) struct WriteLocks {
    writes: Mutex<()>,
    /// Commit groups waiting for `writes`.
    commits_waiting: AtomicUsize,
    /// Wakes writers that stepped back once a commit group is through.
    commit_done: Condvar,
    /// Writers waiting on `commit_done` (changed under `writes`): a commit group wakes them
    /// only when there are some, so the usual group costs no futex call.
    stepped_back: AtomicUsize,
}

impl WriteLocks {
    /// The lock for a writer other than the sequencer's commit group: it also waits until no
    /// commit group is waiting.
    pub(super) fn write_lock(&self) -> MutexGuard<'_, ()> {
        let mut writing = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        while self.commits_waiting.load(Ordering::Acquire) > 0 {
            self.stepped_back.fetch_add(1, Ordering::Relaxed);
            writing = self
                .commit_done
                .wait(writing)
                .unwrap_or_else(PoisonError::into_inner);
            self.stepped_back.fetch_sub(1, Ordering::Relaxed);
        }
        writing
    }

    /// Panics unless someone holds the write lock: called by every write (`FjallStore::batch`),
    /// whose writer took it, so a writer that did not is caught whenever no other holds it.
    pub(super) fn assert_held(&self) {
        match self.writes.try_lock() {
            Err(std::sync::TryLockError::WouldBlock) => {}
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => {
                panic!("a store write without the store's write lock (write_locks.rs)")
            }
        }
    }

    /// The lock for a commit group: ahead of every other writer still waiting.
    pub(super) fn commit_lock(&self) -> CommitLock<'_> {
        self.commits_waiting.fetch_add(1, Ordering::AcqRel);
        let writing = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        self.commits_waiting.fetch_sub(1, Ordering::AcqRel);
        CommitLock {
            writing: Some(writing),
            done: &self.commit_done,
            stepped_back: &self.stepped_back,
        }
    }
}

/// The write lock held by a commit group; writers that stepped back for it are woken once it
/// is released.
pub(super) struct CommitLock<'a> {
    writing: Option<MutexGuard<'a, ()>>,
    done: &'a Condvar,
    stepped_back: &'a AtomicUsize,
}

impl Drop for CommitLock<'_> {
    fn drop(&mut self) {
        // Read under the lock: a writer counts itself before it waits, and it can only wait
        // while holding the lock, so none is missed.
        let waiting = self.stepped_back.load(Ordering::Relaxed) > 0;
        drop(self.writing.take());
        if waiting {
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit group waiting for the write lock goes before the other writers waiting for it,
    /// whoever of them the mutex wakes first.
    #[test]
    fn a_waiting_commit_group_goes_before_other_waiting_writers() {
        let locks = WriteLocks::default();
        let order = Mutex::new(Vec::new());
        let holding = locks.write_lock();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _commit = locks.commit_lock();
                order.lock().unwrap().push("commit");
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while locks.commits_waiting.load(Ordering::Acquire) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the commit never waited"
                );
                std::thread::yield_now();
            }
            for _ in 0..4 {
                s.spawn(|| {
                    let _write = locks.write_lock();
                    order.lock().unwrap().push("other");
                });
            }
            drop(holding);
        });
        let order = order.into_inner().unwrap();
        assert_eq!(order, ["commit", "other", "other", "other", "other"]);
    }
}

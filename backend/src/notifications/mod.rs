//! System notifications: an operator's message stored in each recipient's system conversation
//! (`ConvId::system`, derived from the user id, never looked up) through the sequencer like any
//! message, pushed to the recipients online and read by Sync by the others.
//!
//! A notification is a job (`jobs.rs`) that walks its recipients a page at a time (listed
//! users, a group's members, or every user by the store's paged user-id scan) and submits them
//! in batches of `notifications.batch_users` (`write.rs`), one batch in flight per job and at
//! most `notifications.jobs_running_max` jobs at once: everyone on a server with millions of
//! users is thousands of small commits, never one giant one, and never a list of them all in
//! memory. Jobs and their progress live in memory (the last `notifications.history_max`);
//! every notification is in the audit log. In cluster mode each page is split by the owner of
//! each recipient's system conversation, and the other nodes' parts are written by them
//! (`cluster/link/system.rs`).

mod config;
mod jobs;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub use config::NotificationsConfig;
pub(crate) use jobs::group_of;
pub(crate) use write::{SystemBatch, SystemDone, SystemOutcome};

use crate::api::ConnRef;
use crate::store::{ConvId, UserId};

/// The connection a system write is answered on: none (its answer goes to its job). Shard ids
/// and connection ids never reach these values.
pub(crate) const NO_CONN: ConnRef = ConnRef {
    shard: u16::MAX,
    conn: u64::MAX,
};

/// Whom a notification is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    All,
    /// Listed users (distinct, all existing when the job was made).
    Users(Vec<UserId>),
    Group(ConvId),
}

/// What the operator sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub title: String,
    pub text: String,
    pub content_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// A job's progress, changed as its batches commit.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub state: JobState,
    /// Recipients handled: stored now, or found to have it already.
    pub done: u64,
    /// Of `done`, those who had it already (a repeated request or a resumed job).
    pub repeats: u64,
    pub error: Option<String>,
    pub finished_ms: u64,
}

/// One notification and how far it has got.
#[derive(Debug)]
pub(crate) struct Job {
    /// Order of creation: the history's paging key.
    pub seq: u64,
    pub id: String,
    pub created_ms: u64,
    /// The audit log's actor.
    pub operator: String,
    pub notice: Notice,
    /// `all`, `users` or `group`, and the group's id.
    pub target: &'static str,
    pub group: Option<ConvId>,
    /// For listed users: a digest of the list (sorted, distinct), so that the id sent again
    /// to other users is a conflict, without keeping a list of up to
    /// `notifications.users_per_request_max` ids per job in the history.
    users: Option<UsersDigest>,
    /// Recipients when the job started (for everyone: the users then).
    pub total: u64,
    progress: Mutex<Progress>,
}

impl Job {
    pub fn progress(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`Notifications::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registered {
    New,
    /// The id named a failed job: this is its new run.
    Rerun,
    /// The id names a job with this content, running or done: that job, nothing new.
    Repeat,
}

/// Why a notification was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartError {
    /// `jobs_running_max` jobs are running.
    Busy(usize),
    /// The id names a job with other content or other recipients.
    IdConflict,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<Job>>,
    by_seq: BTreeMap<u64, Arc<Job>>,
    next_seq: u64,
    running: usize,
}

/// The jobs: running ones and the recent history.
pub(crate) struct Notifications {
    pub(crate) config: NotificationsConfig,
    registry: Mutex<Registry>,
}

impl Notifications {
    pub(crate) fn new(config: NotificationsConfig) -> Self {
        Self {
            config,
            registry: Mutex::default(),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.registry().by_id.get(id).cloned()
    }

    /// Up to `limit` jobs made before `before` (a `seq`), newest first.
    pub(crate) fn page(&self, before: u64, limit: usize) -> Vec<Arc<Job>> {
        self.registry()
            .by_seq
            .range(..before)
            .rev()
            .take(limit)
            .map(|(_, j)| Arc::clone(j))
            .collect()
    }

    /// The job `id` names when a request with this content repeats it: `None` when no job
    /// has the id, or when its job failed (a request then runs it again: [`Self::register`]).
    pub(crate) fn repeat_of(
        &self,
        id: &str,
        notice: &Notice,
        audience: &Audience,
    ) -> Result<Option<Arc<Job>>, StartError> {
        existing(&self.registry(), id, notice, audience)
    }

    /// Registers a job and says how: a new one, a new run of the failed job `id` named (which
    /// makes way for it), or the job `id` names already, running or done, when its content is
    /// the same. The caller runs a job it did not find with [`Self::run`].
    pub(crate) fn register(
        &self,
        id: String,
        operator: String,
        notice: Notice,
        audience: &Audience,
        total: u64,
    ) -> Result<(Arc<Job>, Registered), StartError> {
        let mut reg = self.registry();
        if let Some(job) = existing(&reg, &id, &notice, audience)? {
            return Ok((job, Registered::Repeat));
        }
        if reg.running >= self.config.jobs_running_max {
            return Err(StartError::Busy(self.config.jobs_running_max));
        }
        // A failed job is run again under its id: the recipients it reached have the id in
        // their system conversation and count as repeats, the others get it. Its history row
        // is the new run's.
        let how = match reg.by_id.remove(&id) {
            Some(failed) => {
                reg.by_seq.remove(&failed.seq);
                Registered::Rerun
            }
            None => Registered::New,
        };
        reg.next_seq += 1;
        let (target, group) = describe(audience);
        let job = Arc::new(Job {
            seq: reg.next_seq,
            id: id.clone(),
            created_ms: crate::time::now_ms(),
            operator,
            notice,
            target,
            group,
            users: users_digest(audience),
            total,
            progress: Mutex::new(Progress {
                state: JobState::Running,
                done: 0,
                repeats: 0,
                error: None,
                finished_ms: 0,
            }),
        });
        reg.running += 1;
        reg.by_id.insert(id, Arc::clone(&job));
        reg.by_seq.insert(job.seq, Arc::clone(&job));
        self.trim(&mut reg);
        Ok((job, how))
    }

    /// Forgets the oldest finished jobs past `history_max`.
    fn trim(&self, reg: &mut Registry) {
        while reg.by_seq.len() > self.config.history_max {
            let oldest_finished = reg
                .by_seq
                .iter()
                .find(|(_, j)| j.lock().state != JobState::Running)
                .map(|(seq, _)| *seq);
            let Some(seq) = oldest_finished else { break };
            if let Some(job) = reg.by_seq.remove(&seq) {
                reg.by_id.remove(&job.id);
            }
        }
    }

    fn finished(&self, job: &Job, result: Result<(), String>) {
        {
            let mut p = job.lock();
            p.finished_ms = crate::time::now_ms();
            match result {
                Ok(()) => p.state = JobState::Done,
                Err(why) => {
                    p.state = JobState::Failed;
                    p.error = Some(why);
                }
            }
        }
        let mut reg = self.registry();
        reg.running = reg.running.saturating_sub(1);
        self.trim(&mut reg);
    }
}

/// The job `id` names, unless it failed; a conflict when its content is another.
fn existing(
    reg: &Registry,
    id: &str,
    notice: &Notice,
    audience: &Audience,
) -> Result<Option<Arc<Job>>, StartError> {
    let Some(job) = reg.by_id.get(id) else {
        return Ok(None);
    };
    let (target, group) = describe(audience);
    if job.notice != *notice
        || job.target != target
        || job.group != group
        || job.users != users_digest(audience)
    {
        return Err(StartError::IdConflict);
    }
    Ok((job.lock().state != JobState::Failed).then(|| Arc::clone(job)))
}

/// SHA-256 of a user list: 32 bytes per job whatever the list's length.
type UsersDigest = [u8; 32];

/// The digest of listed users, in ascending order and each once (the request's order and
/// repeats do not make it other recipients); `None` for the other audiences.
fn users_digest(audience: &Audience) -> Option<UsersDigest> {
    use sha2::{Digest, Sha256};
    let Audience::Users(users) = audience else {
        return None;
    };
    let mut users = users.clone();
    users.sort_unstable();
    users.dedup();
    let mut hash = Sha256::new();
    for u in users {
        hash.update(u.to_be_bytes());
    }
    Some(hash.finalize().into())
}

fn describe(audience: &Audience) -> (&'static str, Option<ConvId>) {
    match audience {
        Audience::All => ("all", None),
        Audience::Users(_) => ("users", None),
        Audience::Group(g) => ("group", Some(*g)),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod registry_tests;

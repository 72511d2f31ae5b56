//! A notification's job: walks its recipients a page at a time and submits each page as one
//! sequencer write, waiting for it to be durable before the next (one batch in flight per
//! job, so a notification to everyone paces itself by the commits and never floods the
//! sequencer's queue, which the shards' writes share).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::sync::oneshot;

use super::{Audience, Job, NO_CONN, Notice, Notifications, SystemBatch, SystemDone};
use crate::Backend;
use crate::accounts::Refusal;
use crate::cluster::link::Owner;
use crate::messaging::writer::{Write, WriteOp};
use crate::store::{ConvId, UserId};

/// Tries of a batch the sequencer could not commit (the store refused it), at most.
const BATCH_TRIES_MAX: u32 = 3;
/// In cluster mode, tries of a batch's parts refused UNAVAILABLE, at most (a link that is
/// down, an owner that is busy, a conversation that moved: each passes within seconds).
const CLUSTER_TRIES_MAX: u32 = 30;
/// Wait between those tries.
const BATCH_RETRY_WAIT: Duration = Duration::from_secs(1);

/// The message every recipient gets: an encoded `SystemNotice`, shared by all of them.
pub(crate) fn content(id: &str, notice: &Notice) -> Bytes {
    v1::SystemNotice {
        notification_id: id.to_owned(),
        title: notice.title.clone(),
        text: notice.text.clone(),
        content_type: notice.content_type.clone(),
    }
    .encode_to_vec()
    .into()
}

impl Notifications {
    /// Runs a registered job to its end in the background.
    pub(crate) fn run(self: &Arc<Self>, backend: Arc<Backend>, job: Arc<Job>, audience: Audience) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.walk(&backend, &job, audience).await;
            if let Err(why) = &result {
                tracing::warn!(notification = %job.id, %why, "notification stopped");
            } else {
                tracing::info!(notification = %job.id, recipients = job.progress().done, "notification sent");
            }
            this.finished(&job, result);
        });
    }

    async fn walk(
        &self,
        backend: &Arc<Backend>,
        job: &Job,
        audience: Audience,
    ) -> Result<(), String> {
        let content = content(&job.id, &job.notice);
        let batch = self.config.batch_users;
        match audience {
            Audience::Users(users) => {
                for page in users.chunks(batch) {
                    submit(backend, job, &content, page.to_vec()).await?;
                }
            }
            Audience::Group(g) => {
                let mut after = 0;
                while let Some(page) = read_page(backend, move |ports| {
                    ports
                        .groups
                        .group_members(g, after, batch)
                        .map(|rows| rows.into_iter().map(|(u, _)| u).collect())
                })
                .await?
                {
                    after = *page.last().expect("pages are not empty");
                    submit(backend, job, &content, page).await?;
                }
            }
            Audience::All => {
                let mut after = 0;
                while let Some(page) = read_page(backend, move |ports| {
                    ports.accounts.user_ids_after(after, batch)
                })
                .await?
                {
                    after = *page.last().expect("pages are not empty");
                    submit(backend, job, &content, page).await?;
                }
            }
        }
        Ok(())
    }
}

/// One page of recipients from the store, on a blocking thread; `None` after the last.
async fn read_page<F>(backend: &Arc<Backend>, read: F) -> Result<Option<Vec<UserId>>, String>
where
    F: FnOnce(&crate::store::Ports) -> Result<Vec<UserId>, crate::store::StoreError>
        + Send
        + 'static,
{
    let ports = backend.ports.clone();
    let page = tokio::task::spawn_blocking(move || read(&ports))
        .await
        .map_err(|e| format!("reading recipients: {e}"))?
        .map_err(|e| format!("reading recipients: {e}"))?;
    Ok((!page.is_empty()).then_some(page))
}

/// Stores one batch and waits until it is durable; counts it in the job's progress. In
/// cluster mode the batch is split by the owner of each recipient's system conversation
/// (`cluster/link/system.rs`): this node's part goes to its sequencer, the others' to their
/// owners, at once; a part refused UNAVAILABLE (a link down, an owner busy, a conversation
/// that moved) is split again by the current view and sent again, up to `CLUSTER_TRIES_MAX`.
async fn submit(
    backend: &Arc<Backend>,
    job: &Job,
    content: &Bytes,
    users: Vec<UserId>,
) -> Result<(), String> {
    let link = backend.link.as_ref();
    let tries_max = if link.is_some() {
        CLUSTER_TRIES_MAX
    } else {
        BATCH_TRIES_MAX
    };
    let mut left = users;
    let mut tries = 0;
    loop {
        tries += 1;
        let parts = match link {
            Some(link) => link.system_owners(&left),
            None => vec![(Owner::Here, left)],
        };
        let sent = parts.into_iter().map(|(owner, users)| async move {
            let result = match (&owner, link) {
                (Owner::Elsewhere(peer), Some(link)) => Ok(link
                    .system_elsewhere(peer, &job.id, content, users.clone())
                    .await),
                (Owner::Unknown(why), _) => Ok(Err(Refusal {
                    code: ErrorCode::Unavailable,
                    message: (*why).to_owned(),
                    retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
                })),
                _ => submit_here(backend, job, content, users.clone()).await,
            };
            (users, result)
        });
        left = Vec::new();
        let mut why = None;
        for (users, result) in futures_util::future::join_all(sent).await {
            match result? {
                Ok(done) => count(job, done),
                // One box retries any refusal (the store's); a cluster only UNAVAILABLE.
                Err(refusal) if link.is_none() || refusal.code == ErrorCode::Unavailable => {
                    left.extend(users);
                    why = Some(refusal.message);
                }
                Err(refusal) => return Err(refusal.message),
            }
        }
        let Some(why) = why else {
            return Ok(());
        };
        if tries >= tries_max {
            return Err(why);
        }
        tracing::warn!(notification = %job.id, %why, left = left.len(), "batch refused; retrying");
        tokio::time::sleep(BATCH_RETRY_WAIT).await;
    }
}

/// This node's part of a batch, through its own sequencer: its answer, or `Err` when the
/// server is stopping.
async fn submit_here(
    backend: &Arc<Backend>,
    job: &Job,
    content: &Bytes,
    users: Vec<UserId>,
) -> Result<Result<SystemDone, Refusal>, String> {
    // Taken per batch and dropped before waiting: a job never keeps the sequencer's queue
    // open past shutdown.
    let Some(ops) = backend.sequencer() else {
        return Err("the server is stopping".into());
    };
    let (reply, answer) = oneshot::channel();
    let op = WriteOp {
        conn: NO_CONN,
        request_id: 0,
        write: Write::System(SystemBatch {
            notification_id: job.id.clone(),
            content: content.clone(),
            users,
            reply,
        }),
        // Not a client's send: no send-to-ack latency.
        queued_at: None,
        trace: None,
    };
    if ops.send(op).await.is_err() {
        return Err("the server is stopping".into());
    }
    drop(ops);
    answer
        .await
        .map_err(|_| "the server is stopping".to_owned())
}

fn count(job: &Job, done: SystemDone) {
    let mut p = job.lock();
    p.done += u64::from(done.stored + done.repeats);
    p.repeats += u64::from(done.repeats);
}

/// The recipients of a group, if it exists: its conversation id from the wire.
pub(crate) fn group_of(raw: u64) -> Option<ConvId> {
    ConvId::from_wire(raw).filter(|g| g.kind() == crate::store::ConvKind::Group)
}

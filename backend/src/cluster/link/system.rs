//! System notifications in cluster mode: every write of a system conversation is done by its
//! owner's sequencer, like any conversation's. A notification's job (`notifications/jobs.rs`)
//! splits each page of recipients by the owner of their system conversation in this node's
//! view (`system_owners`): its own part goes to its sequencer, each other part to that node
//! (`NodeSystemBatch`), whose sequencer stores it and answers (`NodeSystemDone`) once it is
//! durable or refused. An answer that does not come (the link refused the batch or went down,
//! the owner did not answer within `forward_timeout_ms`) is UNAVAILABLE: the job splits what
//! is left again by the then current view and sends it again (the notification id is every
//! message's `client_msg_id`, so a batch stored twice is stored once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};
use tokio::sync::oneshot;

use super::peer::Peer;
use super::{Link, RequestIds};
use crate::accounts::Refusal;
use crate::messaging::Writes;
use crate::notifications::{SystemBatch, SystemDone};
use crate::store::{ConvId, UserId};

/// Recipients in one batch from another node, at most (`notifications.batch_users` is at most
/// 10,000): a bigger one is refused, not stored.
const USERS_MAX: usize = 10_000;

type Reply = oneshot::Sender<Result<SystemDone, Refusal>>;

/// Batches sent to other nodes awaiting their answer: at most one page per running job.
pub(crate) struct SystemPending {
    /// Request ids (`ids.rs`: a random start, so a late answer to a batch of this node's
    /// previous process completes none of this one's).
    ids: RequestIds,
    /// request id → (the owner's slot, who waits).
    waiting: Mutex<HashMap<u64, (u16, Reply)>>,
}

impl SystemPending {
    pub(crate) fn new(ids: RequestIds) -> Self {
        Self {
            ids,
            waiting: Mutex::default(),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, (u16, Reply)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One part of a page: its owner and its users.
pub(crate) type Part = (super::Owner, Vec<UserId>);

impl Link {
    /// `users` by the owner of their system conversation in this node's view (`Owner::Unknown`
    /// before this node joined, or without a link to the owner: that part is refused
    /// UNAVAILABLE and retried, never taken here).
    pub(crate) fn system_owners(self: &Arc<Self>, users: &[UserId]) -> Vec<Part> {
        use super::Owner;
        let key = |o: &Owner| match o {
            Owner::Here => Some(None),
            Owner::Elsewhere(p) => Some(Some(p.slot)),
            Owner::Unknown(_) => None,
        };
        let mut by_node: Vec<Part> = Vec::new();
        for &user in users {
            let owner = match ConvId::system(user) {
                Some(c) => self.owner(c.to_wire()),
                None => Owner::Here,
            };
            match by_node.iter_mut().find(|(o, _)| key(o) == key(&owner)) {
                Some((_, list)) => list.push(user),
                None => by_node.push((owner, vec![user])),
            }
        }
        by_node
    }

    /// Sends a batch to the node that owns its users' system conversations and waits for the
    /// answer, at most `forward_timeout_ms`: UNAVAILABLE when the link refuses it, goes down
    /// or the owner does not answer in time.
    pub(crate) async fn system_elsewhere(
        &self,
        peer: &Peer,
        notification_id: &str,
        content: &Bytes,
        users: Vec<UserId>,
    ) -> Result<SystemDone, Refusal> {
        let request_id = self.system.ids.next();
        let (reply, answer) = oneshot::channel();
        self.system.waiting().insert(request_id, (peer.slot, reply));
        let item = NodeItem {
            item: Some(Item::SystemBatch(v1::NodeSystemBatch {
                request_id,
                notification_id: notification_id.to_owned(),
                content: content.clone(),
                user_ids: users,
            })),
        };
        if peer.push_all(vec![item]).is_err() {
            self.system.waiting().remove(&request_id);
            return Err(unavailable(
                "the owner node cannot be reached right now; retry",
            ));
        }
        let timeout = Duration::from_millis(self.config.forward_timeout_ms);
        let answered = tokio::time::timeout(timeout, answer).await;
        self.system.waiting().remove(&request_id);
        match answered {
            Ok(Ok(result)) => result,
            _ => Err(unavailable("the owner node did not answer; retry")),
        }
    }

    /// On the owner: a batch from another node, into this node's sequencer (never waiting for
    /// room: a full queue is answered UNAVAILABLE); answered once durable or refused.
    pub(super) fn system_received(
        self: &Arc<Self>,
        from: Arc<Peer>,
        b: v1::NodeSystemBatch,
        writes: &Writes,
    ) {
        let request_id = b.request_id;
        if b.user_ids.len() > USERS_MAX {
            let refused = Refusal::new(
                v1::ErrorCode::InvalidArgument,
                format!("over {USERS_MAX} recipients in one batch"),
            );
            let _ = from.push_all(vec![done_item(request_id, Err(refused))]);
            return;
        }
        let (reply, answer) = oneshot::channel();
        let batch = SystemBatch {
            notification_id: b.notification_id,
            content: b.content,
            users: b.user_ids,
            reply,
        };
        if let Err(refused) = writes.submit_system(batch) {
            let _ = from.push_all(vec![done_item(request_id, Err(refused))]);
            return;
        }
        tokio::spawn(async move {
            let result = answer
                .await
                .unwrap_or_else(|_| Err(Refusal::store_away("this node is stopping")));
            // Refused (the link is down): the origin answers UNAVAILABLE on its deadline and
            // sends the batch again, which stores nothing twice.
            let _ = from.push_all(vec![done_item(request_id, result)]);
        });
    }

    /// On the origin: an owner's answer, to the job still waiting for it.
    pub(super) fn system_answered(&self, d: v1::NodeSystemDone) {
        let waiting = self.system.waiting().remove(&d.request_id);
        if let Some((_, reply)) = waiting {
            let result = if d.error_code == 0 {
                Ok(SystemDone {
                    stored: d.stored,
                    repeats: d.repeats,
                })
            } else {
                Err(Refusal {
                    code: v1::ErrorCode::try_from(d.error_code)
                        .unwrap_or(v1::ErrorCode::Unavailable),
                    message: d.error_message,
                    retry_after_ms: d.retry_after_ms,
                })
            };
            let _ = reply.send(result);
        }
    }

    /// A link went down: batches waiting on it are answered UNAVAILABLE by their sender.
    pub(super) fn system_link_down(&self, slot: u16) {
        self.system.waiting().retain(|_, (s, _)| *s != slot);
    }
}

/// UNAVAILABLE with the usual pause: the job sends what is left again.
fn unavailable(message: &str) -> Refusal {
    Refusal {
        code: v1::ErrorCode::Unavailable,
        message: message.into(),
        retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
    }
}

fn done_item(request_id: u64, result: Result<SystemDone, Refusal>) -> NodeItem {
    let done = match result {
        Ok(done) => v1::NodeSystemDone {
            request_id,
            stored: done.stored,
            repeats: done.repeats,
            ..Default::default()
        },
        Err(r) => v1::NodeSystemDone {
            request_id,
            error_code: r.code as i32,
            error_message: r.message,
            retry_after_ms: r.retry_after_ms,
            ..Default::default()
        },
    };
    NodeItem {
        item: Some(Item::SystemDone(done)),
    }
}

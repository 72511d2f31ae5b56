//! Writes an operator makes through the sequencer (a group dissolved from the admin API), so
//! they are ordered with the clients' writes and delivered like them. Such a write carries the
//! sentinel connection [`OPERATOR_SHARD`]: no shard has that index, so nothing is queued for
//! it, and delivery hands its reply to the waiting operator instead. The only cost on the
//! message path is one compare, on the reply of a group write or a refusal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringchat_proto::Body;
use ringchat_proto::v1::ErrorCode;
use tokio::sync::oneshot;

use super::writer::{Write, WriteOp};
use crate::accounts::Refusal;
use crate::api::{ConnRef, ShardId};
use crate::store::StoreError;

/// The shard index of an operator's write: beyond any real shard.
pub(crate) const OPERATOR_SHARD: ShardId = ShardId::MAX;
/// Operator writes waiting for their commit at once, at most; past it: unavailable, retry.
const OPERATOR_WRITES_IN_FLIGHT_MAX: usize = 64;
/// The base of `retry_after_ms` past it (jittered up to twice it).
const OPERATOR_BUSY_RETRY_AFTER_MS: u64 = 500;
/// How long an operator waits for the commit of a write before giving up on its answer (the
/// write may still land).
const OPERATOR_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Operators waiting for the answers of their writes, by request id.
#[derive(Default)]
pub(crate) struct OperatorReplies {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Body>>>,
}

impl OperatorReplies {
    /// Whether a reply to `conn` is an operator's (then [`Self::answer`] takes it).
    pub(crate) fn is_operator(conn: ConnRef) -> bool {
        conn.shard == OPERATOR_SHARD
    }

    /// Passes a write's answer on to the operator waiting for it (gone: dropped).
    pub(crate) fn answer(&self, request_id: u64, body: Body) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
        if let Some(tx) = waiting {
            let _ = tx.send(body);
        }
    }

    fn forget(&self, request_id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
    }
}

/// The answer past `OPERATOR_WRITES_IN_FLIGHT_MAX` writes in flight.
fn busy() -> Refusal {
    Refusal::busy(
        "too many operator writes in flight, retry",
        OPERATOR_BUSY_RETRY_AFTER_MS,
    )
}

impl crate::Backend {
    /// Queues an operator's write on the sequencer and waits for its answer, given once its
    /// commit group is durable (or refused).
    pub(crate) async fn operator_write(&self, write: Write) -> Result<Body, OperatorWriteError> {
        let replies = &self.operator_replies;
        let request_id = replies.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = replies.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len() >= OPERATOR_WRITES_IN_FLIGHT_MAX {
                return Err(OperatorWriteError::NotQueued(busy()));
            }
            waiting.insert(request_id, tx);
        }
        let op = WriteOp {
            conn: ConnRef {
                shard: OPERATOR_SHARD,
                conn: 0,
            },
            request_id,
            write,
            // Not a client's send: no send-to-ack latency.
            queued_at: None,
            trace: None,
        };
        let ops = self.commit_ops();
        let queued = match ops {
            Some(ops) => ops.send(op).await.is_ok(),
            None => false,
        };
        if !queued {
            replies.forget(request_id);
            return Err(OperatorWriteError::NotQueued(Refusal::new(
                ErrorCode::Unavailable,
                "the server is shutting down",
            )));
        }
        let unanswered = |why: &str| {
            OperatorWriteError::Unanswered(Refusal {
                code: ErrorCode::Unavailable,
                message: format!("{why}; it may still take effect: look before retrying"),
                retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
            })
        };
        match tokio::time::timeout(OPERATOR_WRITE_TIMEOUT, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(unanswered(
                "the sequencer stopped before answering the write",
            )),
            Err(_) => {
                replies.forget(request_id);
                Err(unanswered(&format!(
                    "the write was not answered within {} s",
                    OPERATOR_WRITE_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// Why an operator's write has no answer: through the sequencer (here), or an account change
/// written to the store (`accounts/operator.rs`). A client's Register reads it too: it gives
/// its invite's use back only when no account was made (`Accounts::register_unless_gone`).
#[derive(Debug)]
pub(crate) enum OperatorWriteError {
    /// Never reached the sequencer (or refused before the store was written): nothing changed.
    NotQueued(Refusal),
    /// Reached the sequencer but its answer did not come, or the store's write failed: the
    /// write may have landed, or may still land.
    Unanswered(Refusal),
}

impl OperatorWriteError {
    /// A store write that failed: it may have landed, and the operator is told so (and the
    /// admin API audits it as "outcome unknown", `admin/operator_write.rs`).
    pub(crate) fn may_have_landed(mut why: Refusal) -> Self {
        why.message = format!(
            "{}; the change may have taken effect: look before retrying",
            why.message
        );
        Self::Unanswered(why)
    }

    /// A store write that failed: refused by the store with nothing written (a name or
    /// address taken, no user id left, a store that takes no more writes) changed nothing;
    /// any other failure (the answer lost, a timeout, an engine error) may have landed.
    pub(crate) fn store_write(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken
            | StoreError::EmailTaken
            | StoreError::UserIdsExhausted
            | StoreError::WritesStopped(_) => Self::NotQueued(Refusal::from(e)),
            e => Self::may_have_landed(Refusal::from(e)),
        }
    }

    pub(crate) fn refusal(&self) -> &Refusal {
        match self {
            Self::NotQueued(r) | Self::Unanswered(r) => r,
        }
    }
}

impl From<OperatorWriteError> for Refusal {
    fn from(e: OperatorWriteError) -> Self {
        match e {
            OperatorWriteError::NotQueued(r) | OperatorWriteError::Unanswered(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused together, operators' writes come back spread over [500, 1,000) ms.
    #[test]
    fn busy_refusals_are_jittered() {
        assert_eq!(busy().code, ErrorCode::Unavailable);
        crate::retry_after::assert_jittered(OPERATOR_BUSY_RETRY_AFTER_MS, || busy().retry_after_ms);
    }

    /// A store's refusal wrote nothing; a failure whose answer was lost may have written.
    #[test]
    fn a_failed_store_write_may_have_landed_unless_the_store_refused_it() {
        let landed = |e| {
            matches!(
                OperatorWriteError::store_write(e),
                OperatorWriteError::Unanswered(_)
            )
        };
        assert!(!landed(StoreError::UsernameTaken));
        assert!(!landed(StoreError::EmailTaken));
        assert!(!landed(StoreError::UserIdsExhausted));
        assert!(!landed(StoreError::WritesStopped("an fsync failed".into())));
        assert!(landed(StoreError::Unavailable("COMMIT unanswered".into())));
        assert!(landed(StoreError::Engine("connection reset".into())));
        assert!(landed(StoreError::Persist("fsync failed".into())));
    }
}

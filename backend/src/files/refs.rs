//! Which messages reference a file: markers under `files/{file_id}/refs/{conversation}/`,
//! written where references are made, so that the collector (`gc.rs`) never scans a
//! conversation log to learn whether a file is still wanted.
//!
//! - **At send**, once a media message's FileRef has passed its check and before the message
//!   is queued to the sequencer (so before it can be acknowledged), a *pending* marker
//!   `p{head}.{at_ms}` is made durable: "a message carrying this file may be committed in this
//!   conversation above seq `head`" (`head` is the conversation's newest seq read at the check;
//!   a stale read is only lower, which is safe). Its seq is not known yet, and a crash after
//!   the ack cannot lose the marker: it was there first. A send that is then refused leaves a
//!   stray marker, which only delays the collection.
//! - **The collector** turns a pending marker older than the grace into *sent* markers
//!   `{seq}`, one per message above `head` that carries the file (a bounded read of the log
//!   from `head` on, resumed across passes), and drops it. The read ends at the conversation's
//!   end or at the first message committed more than the grace after the marker: its send
//!   cannot land later than that (the same bound that held the marker until then), so a
//!   conversation that keeps growing faster than the collector reads still resolves it.
//! - **A sent marker holds** while its message exists, carries the file and is not recalled:
//!   the collector checks that with one point read of the message. Recall needs no hook of its
//!   own (nothing to forget on the sequencer's path): a recalled message's marker no longer
//!   holds and is dropped at the next look.

use std::sync::Arc;

use bytes::Bytes;

use super::error::FileError;
use super::model::keys;
use super::service::FileService;

/// A reference marker, parsed from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Message `seq` of `conv` carries the file.
    Sent { conv: u64, seq: u64 },
    /// A send into `conv` was accepted at `at_ms` when its newest seq was `head`.
    Pending { conv: u64, head: u64, at_ms: u64 },
}

impl Marker {
    /// The marker of a key under `files/{file_id}/refs/`; `None` for a key that is not one.
    pub fn of_key(file_id: &str, key: &str) -> Option<Self> {
        let rest = key.strip_prefix(&keys::file_refs(file_id))?;
        let (conv, name) = rest.split_once('/')?;
        let conv = conv.parse().ok()?;
        match name.strip_prefix('p') {
            Some(pending) => {
                let (head, at_ms) = pending.split_once('.')?;
                Some(Self::Pending {
                    conv,
                    head: head.parse().ok()?,
                    at_ms: at_ms.parse().ok()?,
                })
            }
            None => Some(Self::Sent {
                conv,
                seq: name.parse().ok()?,
            }),
        }
    }

    pub fn key(&self, file_id: &str) -> String {
        match *self {
            Self::Sent { conv, seq } => keys::sent_ref(file_id, conv, seq),
            Self::Pending { conv, head, at_ms } => keys::pending_ref(file_id, conv, head, at_ms),
        }
    }
}

/// Messages of a conversation read for a pending marker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Messages read.
    pub read: usize,
    /// Seqs of the messages read that carry the file and are not recalled.
    pub carrying: Vec<u64>,
    /// The highest seq read (the `after` given when none was).
    pub last_seq: u64,
    /// Nothing past `last_seq` can be the send's: the conversation has no message past it
    /// (now), or a message read was committed after the marker's `until_ms`.
    pub at_end: bool,
}

/// What the collector asks the message store (the messaging side implements it:
/// `media::MessageAccess`). Errors are errors, never "no": a marker is dropped only on a
/// definite answer.
#[async_trait::async_trait]
pub trait MessageRefs: Send + Sync + 'static {
    /// Whether message `seq` of conversation `conv` (wire id) exists, carries `file_id` and
    /// is not recalled.
    async fn carries_file(&self, conv: u64, seq: u64, file_id: &str) -> Result<bool, FileError>;

    /// Reads up to `limit` messages of `conv` above `after`, in order, stopping after the
    /// first one committed after `until_ms`.
    async fn carrying_after(
        &self,
        conv: u64,
        after: u64,
        limit: usize,
        file_id: &str,
        until_ms: u64,
    ) -> Result<Scanned, FileError>;
}

impl FileService {
    /// Who answers for reference markers (set once, when messaging is up); until set, the
    /// collector takes every marker as holding.
    pub fn set_message_refs(&self, refs: Arc<dyn MessageRefs>) -> Result<(), FileError> {
        self.message_refs
            .set(refs)
            .map_err(|_| FileError::Unavailable("message refs set twice".into()))
    }

    /// Records, durably, that a message carrying `file_id` is about to be sent into `conv`
    /// (wire id), whose newest seq is `head`: call before the send is queued.
    pub async fn mark_sent(
        &self,
        file_id: &str,
        conv: u64,
        head: u64,
        now_ms: u64,
    ) -> Result<(), FileError> {
        let marker = Marker::Pending {
            conv,
            head,
            at_ms: now_ms,
        };
        Ok(self.storage.put(&marker.key(file_id), Bytes::new()).await?)
    }

    /// Whether the file is there for readers (its meta): asked again by a send after its
    /// marker is durable, which the collector may have missed if it hid the file meanwhile.
    pub async fn still_there(&self, file_id: &str) -> Result<bool, FileError> {
        match self.storage.head(&keys::file_meta(file_id)).await {
            Ok(_) => Ok(true),
            Err(super::storage::StorageError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_back_from_their_keys() {
        let id = "0123456789abcdef0123456789abcdef";
        for m in [
            Marker::Sent { conv: 42, seq: 7 },
            Marker::Pending {
                conv: u64::MAX,
                head: 0,
                at_ms: 1_700_000_000_000,
            },
        ] {
            assert_eq!(Marker::of_key(id, &m.key(id)), Some(m));
        }
        assert_eq!(Marker::of_key(id, &keys::file_meta(id)), None);
        assert_eq!(
            Marker::of_key(id, &format!("{}x/1", keys::file_refs(id))),
            None
        );
        assert_eq!(
            Marker::of_key(id, &format!("{}1/p2", keys::file_refs(id))),
            None
        );
    }
}

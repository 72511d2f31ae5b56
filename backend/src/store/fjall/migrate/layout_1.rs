//! Layout 1's records, frozen as layout 1 wrote them (postcard, field for field, commit
//! 17147bb). The migration decodes these, never today's records: postcard has no field names or
//! defaults, so a field added to a record since (a message's `mentions`) would make every old
//! value end too early. Never change them.

use serde::Deserialize;

use crate::store::{ConvId, CursorRecord, MessageRecord};

/// A message (`messages`: (conversation, seq) → this).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Message {
    pub(super) conv_id: u64,
    pub(super) seq: u64,
    pub(super) msg_id: u64,
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) client_msg_id: String,
    pub(super) content_type: i32,
    pub(super) content: Vec<u8>,
    pub(super) server_time_ms: u64,
    pub(super) recalled: bool,
    pub(super) recall_of_seq: u64,
    pub(super) recall_event_seq: u64,
}

impl From<Message> for MessageRecord {
    fn from(m: Message) -> Self {
        Self {
            conv_id: ConvId::from_stored(m.conv_id),
            seq: m.seq,
            msg_id: m.msg_id,
            from: m.from,
            to: m.to,
            client_msg_id: m.client_msg_id,
            content_type: m.content_type,
            content: m.content.into(),
            server_time_ms: m.server_time_ms,
            recalled: m.recalled,
            recall_of_seq: m.recall_of_seq,
            recall_event_seq: m.recall_event_seq,
            // Layout 1 had no groups, so nothing mentioned anyone.
            mentions: None,
        }
    }
}

/// Where a send was stored (`dedup`: (sender, client_msg_id) → this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Dedup {
    pub(super) conv_id: u64,
    pub(super) seq: u64,
    pub(super) msg_id: u64,
    pub(super) server_time_ms: u64,
}

/// A user's cursors in a conversation (`cursors`: (conversation, user) → this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Cursor {
    pub(super) delivered_seq: u64,
    pub(super) read_seq: u64,
}

impl From<Cursor> for CursorRecord {
    fn from(c: Cursor) -> Self {
        Self {
            delivered_seq: c.delivered_seq,
            read_seq: c.read_seq,
        }
    }
}

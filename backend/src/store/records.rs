//! What the store keeps: the records every adapter stores and returns.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::dedup_window::{RecentSend, client_msg_id_hash};
use super::{ConvId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    pub email: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: UserId,
    pub device_id: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// `v1::Platform` of the login that got the token (0 for tokens stored before it was kept).
    pub platform: i32,
    /// The device's last login or disconnect with this token, written in batches.
    pub last_seen_ms: u64,
}

impl TokenRecord {
    /// The caller's contract for `replace_tokens` and `set_password`: the token put is a token
    /// of the user whose tokens are replaced. One place for every adapter's check.
    pub fn assert_put_under(user_id: UserId, put: Option<(&TokenHash, &TokenRecord)>) {
        assert!(
            put.is_none_or(|(_, t)| t.user_id == user_id),
            "a token is put under its own user"
        );
    }
}

/// A device's push token (`push/tokens.rs`): where the push gateway reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTokenRecord {
    /// `v1::PushProvider`.
    pub provider: i32,
    pub token: String,
    pub updated_ms: u64,
}

/// SHA-256 of a token: only the hash is stored, so a copy of the data dir holds no usable token.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub conv_id: ConvId,
    pub seq: u64,
    pub msg_id: u64,
    pub from: UserId,
    /// The wire's `to_user_id`: a direct conversation's other member (0 where there is none).
    pub to: UserId,
    pub client_msg_id: String,
    pub content_type: i32,
    /// Empty once recalled. Shared, not copied, from the decoded frame to the store and the
    /// pushes.
    pub content: Bytes,
    pub server_time_ms: u64,
    pub recalled: bool,
    /// For a recall event: the seq it recalls.
    pub recall_of_seq: u64,
    /// For a recalled message: the seq of its recall event.
    pub recall_event_seq: u64,
    /// Groups only: whom the message mentions. Boxed so that a direct message carries one null
    /// pointer and no allocation.
    pub mentions: Option<Box<Mentions>>,
}

/// Members a group message mentions, or everyone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mentions {
    pub user_ids: Vec<UserId>,
    pub all: bool,
}

/// A conversation's head, derived from its newest message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvRecord {
    pub max_seq: u64,
    pub last_time_ms: u64,
}

/// What a resend with the same `client_msg_id` gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub conv_id: ConvId,
    pub seq: u64,
    pub msg_id: u64,
    pub server_time_ms: u64,
}

impl From<&MessageRecord> for DedupRecord {
    fn from(m: &MessageRecord) -> Self {
        Self {
            conv_id: m.conv_id,
            seq: m.seq,
            msg_id: m.msg_id,
            server_time_ms: m.server_time_ms,
        }
    }
}

/// One user's progress in one conversation; both only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CursorRecord {
    /// Highest seq any of the user's devices has received.
    pub delivered_seq: u64,
    pub read_seq: u64,
}

/// One device's delivery progress in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    pub device_id: String,
    pub delivered_seq: u64,
    /// When the device last moved it: devices not seen for `storage.device_cursor_ttl_days` are
    /// dropped the next time the row is written.
    pub seen_ms: u64,
}

/// Everything one user has in one conversation besides the messages, kept as one row so that a
/// commit group writes it once however many messages, acks and devices touched it: cursors, the
/// devices' delivery cursors, and the user's recent sends (the dedup window).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CursorRow {
    pub cursor: CursorRecord,
    /// Oldest first; at most `storage.dedup_window_messages`. Stored packed (`dedup_window`).
    #[serde(with = "super::dedup_window::format")]
    pub recent_sends: Vec<RecentSend>,
    /// At most [`DEVICES_PER_ROW_MAX`], least recently seen dropped first.
    pub devices: Vec<DeviceCursor>,
}

/// Device cursors kept per (conversation, user) row, at most.
pub const DEVICES_PER_ROW_MAX: usize = 32;

impl CursorRow {
    pub fn device_cursor(&self, device_id: &str) -> Option<u64> {
        self.devices
            .iter()
            .find(|d| d.device_id == device_id)
            .map(|d| d.delivered_seq)
    }

    /// Moves one device's cursor forward (never back), drops devices not seen since
    /// `expired_before_ms`, and keeps at most [`DEVICES_PER_ROW_MAX`].
    pub fn move_device(&mut self, device_id: &str, seq: u64, now_ms: u64, expired_before_ms: u64) {
        self.devices
            .retain(|d| d.seen_ms >= expired_before_ms || d.device_id == device_id);
        match self.devices.iter_mut().find(|d| d.device_id == device_id) {
            Some(d) => {
                d.delivered_seq = d.delivered_seq.max(seq);
                d.seen_ms = d.seen_ms.max(now_ms);
            }
            None => {
                if self.devices.len() >= DEVICES_PER_ROW_MAX
                    && let Some(oldest) = self
                        .devices
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, d)| d.seen_ms)
                        .map(|(i, _)| i)
                {
                    self.devices.swap_remove(oldest);
                }
                self.devices.push(DeviceCursor {
                    device_id: device_id.to_owned(),
                    delivered_seq: seq,
                    seen_ms: now_ms,
                });
            }
        }
    }

    /// Remembers a send, keeping the newest `window` of them.
    pub fn remember_send(&mut self, client_msg_id: &str, seq: u64, window: usize) {
        if window == 0 {
            return;
        }
        if self.recent_sends.len() >= window {
            let excess = self.recent_sends.len() + 1 - window;
            self.recent_sends.drain(..excess);
        }
        self.recent_sends.push(RecentSend {
            client_msg_id_hash: client_msg_id_hash(client_msg_id),
            seq,
        });
    }

    /// Seqs of recent sends whose `client_msg_id` may be this one (newest first).
    pub fn maybe_sent(&self, client_msg_id: &str) -> impl Iterator<Item = u64> + '_ {
        let hash = client_msg_id_hash(client_msg_id);
        self.recent_sends
            .iter()
            .rev()
            .filter(move |s| s.client_msg_id_hash == hash)
            .map(|s| s.seq)
    }
}

/// Width of a recency bucket: a user's conversations are indexed by the hour of their last
/// activity, so the index moves at most once an hour per conversation and member, not with
/// every message.
pub const RECENCY_BUCKET_MS: u64 = 3_600_000;

/// The recency bucket of a time.
pub fn recency_bucket(time_ms: u64) -> u64 {
    time_ms / RECENCY_BUCKET_MS
}

/// A conversation's entry in one member's recency index moves to another bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecencyMove {
    pub user: UserId,
    pub conv: ConvId,
    /// The bucket it leaves (`None`: a new entry).
    pub from: Option<u64>,
    pub to: u64,
}

/// Everything one group commit writes, applied atomically and made durable together: the
/// sequencer's one write per group (the batching contract of the ports).
#[derive(Debug, Default)]
pub struct CommitGroup {
    /// New messages. A conversation's messages in one group have consecutive seqs, in order.
    pub messages: Vec<MessageRecord>,
    /// `(conversation, recalled seq, seq of the recall event)`.
    pub recalls: Vec<(ConvId, u64, u64)>,
    /// At most one move per (user, conversation) per group.
    pub recency: Vec<RecencyMove>,
    /// Rows this group changed, whole.
    pub cursor_rows: Vec<(ConvId, UserId, CursorRow)>,
    pub next_msg_id: Option<u64>,
    /// Relations and contact summaries (friend requests, blocks, the DM policy).
    pub contacts: super::ContactWrites,
    /// Groups, members, applications, mentions (`store/groups.rs`).
    pub groups: super::GroupWrites,
    /// Cluster mode: `(conversation, epoch)` — the group is written only while each named
    /// conversation is owned at that epoch (`store/owners.rs`). Empty on one box.
    pub fences: Vec<(ConvId, u64)>,
}

impl CommitGroup {
    /// Empties the group and keeps its buffers.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.recalls.clear();
        self.recency.clear();
        self.cursor_rows.clear();
        self.next_msg_id = None;
        self.contacts.clear();
        self.groups.clear();
        self.fences.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.recalls.is_empty()
            && self.recency.is_empty()
            && self.cursor_rows.is_empty()
            && self.next_msg_id.is_none()
            && self.contacts.is_empty()
            && self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_window_keeps_the_newest_sends() {
        let mut row = CursorRow::default();
        for seq in 1..=10 {
            row.remember_send(&format!("c{seq}"), seq, 4);
        }
        let kept: Vec<u64> = row.recent_sends.iter().map(|s| s.seq).collect();
        assert_eq!(kept, [7, 8, 9, 10]);
        assert_eq!(row.maybe_sent("c9").collect::<Vec<_>>(), [9]);
        assert_eq!(row.maybe_sent("c3").count(), 0);
    }

    #[test]
    fn device_cursors_move_forward_expire_and_stay_bounded() {
        let mut row = CursorRow::default();
        row.move_device("phone", 5, 100, 0);
        row.move_device("phone", 3, 200, 0);
        assert_eq!(row.device_cursor("phone"), Some(5));
        row.move_device("laptop", 1, 300, 150);
        assert_eq!(row.device_cursor("phone"), Some(5), "seen at 200, kept");
        row.move_device("laptop", 2, 400, 250);
        assert_eq!(
            row.device_cursor("phone"),
            None,
            "not seen since 200: dropped"
        );
        for i in 0..DEVICES_PER_ROW_MAX + 5 {
            row.move_device(&format!("d{i}"), 1, 500 + i as u64, 0);
        }
        assert_eq!(row.devices.len(), DEVICES_PER_ROW_MAX);
        assert_eq!(
            row.device_cursor("laptop"),
            None,
            "least recently seen went first"
        );
    }

    #[test]
    fn a_row_written_before_the_packed_window_still_recognises_its_sends() {
        /// `CursorRow` as rows written before 2026-12-05 hold it.
        #[derive(Serialize)]
        struct OldRow {
            cursor: CursorRecord,
            recent_sends: Vec<(u64, u64)>,
            devices: Vec<DeviceCursor>,
        }
        let old = OldRow {
            cursor: CursorRecord {
                delivered_seq: 9,
                read_seq: 8,
            },
            // FNV-1a 64 of "a" (the first rows), then 32-bit folded hashes (until 2026-12-05).
            recent_sends: vec![(0xaf63_dc4c_8601_ec8c, 7), (0xaf63_dc4c ^ 0x8601_ec8c, 8)],
            devices: vec![DeviceCursor {
                device_id: "phone".into(),
                delivered_seq: 9,
                seen_ms: 1,
            }],
        };
        let mut row: CursorRow = postcard::from_bytes(&postcard::to_stdvec(&old).unwrap()).unwrap();
        assert_eq!(row.cursor.read_seq, 8);
        assert_eq!(row.device_cursor("phone"), Some(9));
        assert_eq!(row.maybe_sent("a").collect::<Vec<_>>(), [8, 7]);
        row.remember_send("b", 10, 64);
        let back: CursorRow = postcard::from_bytes(&postcard::to_stdvec(&row).unwrap()).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.maybe_sent("b").collect::<Vec<_>>(), [10]);
        assert_eq!(back.maybe_sent("c").count(), 0);
    }
}

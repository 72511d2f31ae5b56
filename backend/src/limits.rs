//! Protocol limits both halves enforce; the gateway announces them in `HelloOk`.

use serde::{Deserialize, Serialize};

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame body a client may send, after the 4-byte prefix.
    pub frame_bytes_max: usize,
    /// Largest `Send.content`.
    pub message_bytes_max: usize,
    /// Largest page `Sync` and `History` return; a bigger `limit` is clamped.
    pub sync_page_max: u32,
    /// Messages per second one connection may send before it gets RATE_LIMITED.
    pub messages_per_s_max: u32,
    /// How long after sending a message its sender may recall it.
    pub recall_window_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 * 1024,
            message_bytes_max: 32 * 1024,
            sync_page_max: 200,
            messages_per_s_max: 10_000,
            recall_window_s: 120,
        }
    }
}

impl Limits {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(256..=16 * 1024 * 1024).contains(&self.frame_bytes_max) {
            out.push("limits.frame_bytes_max: must be between 256 and 16777216".to_owned());
        }
        if self.message_bytes_max == 0 || self.message_bytes_max + 256 > self.frame_bytes_max {
            out.push(
                "limits.message_bytes_max: must be at least 1 and leave 256 bytes of frame_bytes_max for the envelope"
                    .to_owned(),
            );
        }
        if !(1..=10_000).contains(&self.sync_page_max) {
            out.push("limits.sync_page_max: must be between 1 and 10000".to_owned());
        }
        if self.messages_per_s_max == 0 {
            out.push("limits.messages_per_s_max: must be at least 1".to_owned());
        }
        out
    }
}

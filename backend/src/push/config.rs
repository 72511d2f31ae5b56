//! `[push]`: the push gateway that offline users' notifications are sent to.

use serde::{Deserialize, Serialize};

/// Bytes of the HMAC secret, at least.
pub(crate) const SECRET_BYTES_MIN: usize = 16;

/// `[push]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The push gateway's webhook (`http://` or `https://`); empty: offline push is off and
    /// costs the message path nothing.
    pub url: String,
    /// Key of the `X-Ringchat-Signature` HMAC-SHA256 over each request's body; at least 16
    /// bytes when `url` is set.
    pub secret: String,
    /// One webhook request's time limit, connect included, in milliseconds.
    pub timeout_ms: u64,
    /// Pushes in one webhook request, at most.
    pub batch_max: usize,
    /// Pushes of direct and group messages waiting to be sent, at most; past it new ones are
    /// dropped and counted in `ringchat_push_dropped_total` (the message path never waits for
    /// the push gateway).
    pub queue_max: usize,
    /// Pushes of system notifications waiting to be sent, at most, in a lane of their own
    /// that the sender takes from only when no message's push waits (a broadcast to every
    /// user never crowds out direct messages); past it new ones are dropped and counted in
    /// `ringchat_push_system_dropped_total`.
    pub system_queue_max: usize,
    /// A push whose message is older than this, in milliseconds, when the sender takes it is
    /// not sent (counted in `ringchat_push_expired_total`): after a push gateway's outage the
    /// queue's stale pushes make way for fresh ones instead of waking devices for old news.
    /// Nor is one older than this when its request is made or retried
    /// (`ringchat_push_stale_total{reason="expired"}`).
    pub max_age_ms: u64,
    /// Retries of a request that failed (no connection, timeout, 5xx or 429) before its pushes
    /// are given up and counted in `ringchat_push_failed_total`.
    pub retries_max: u32,
    /// Wait before the first retry, in milliseconds; doubled for each retry after it.
    pub backoff_ms: u64,
    /// Longest wait between retries, in milliseconds.
    pub backoff_ms_max: u64,
    /// Put the start of the message's text in the push (`preview`). Off by default: the push
    /// gateway and the platforms' services then never see message content.
    pub preview: bool,
    /// Bytes of text in a preview, at most (cut on a character boundary).
    pub preview_bytes_max: usize,
    /// Groups of at most this many members push every message to their offline members who
    /// did not mute the group; larger groups push only mentions of a member (never "everyone":
    /// that would walk the whole member list per message).
    pub group_members_max: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            timeout_ms: 5_000,
            batch_max: 100,
            queue_max: 65_536,
            system_queue_max: 65_536,
            max_age_ms: 300_000,
            retries_max: 5,
            backoff_ms: 500,
            backoff_ms_max: 30_000,
            preview: false,
            preview_bytes_max: 100,
            group_members_max: 32,
        }
    }
}

impl PushConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.enabled() {
            if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
                out.push(format!(
                    "push.url: {:?} is not an http:// or https:// URL",
                    self.url
                ));
            } else if reqwest::Url::parse(&self.url).is_err() {
                out.push(format!("push.url: {:?} is not a valid URL", self.url));
            }
            if self.secret.len() < SECRET_BYTES_MIN {
                out.push(format!(
                    "push.secret: must be at least {SECRET_BYTES_MIN} bytes when push.url is set (the push gateway checks requests with it)"
                ));
            }
        }
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (1..=600_000).contains(&self.timeout_ms),
            "push.timeout_ms: must be between 1 and 600000",
        );
        check(
            (1..=10_000).contains(&self.batch_max),
            "push.batch_max: must be between 1 and 10000",
        );
        check(
            (1..=10_000_000).contains(&self.queue_max),
            "push.queue_max: must be between 1 and 10000000",
        );
        check(
            (1..=10_000_000).contains(&self.system_queue_max),
            "push.system_queue_max: must be between 1 and 10000000",
        );
        check(
            (1_000..=604_800_000).contains(&self.max_age_ms),
            "push.max_age_ms: must be between 1000 (a second) and 604800000 (a week)",
        );
        check(
            self.retries_max <= 100,
            "push.retries_max: must be at most 100",
        );
        check(
            (1..=self.backoff_ms_max.max(1)).contains(&self.backoff_ms),
            "push.backoff_ms: must be at least 1 and at most backoff_ms_max",
        );
        check(
            self.backoff_ms_max <= 3_600_000,
            "push.backoff_ms_max: must be at most 3600000 (an hour)",
        );
        check(
            (1..=4_096).contains(&self.preview_bytes_max),
            "push.preview_bytes_max: must be between 1 and 4096",
        );
        check(
            self.group_members_max <= 10_000,
            "push.group_members_max: must be at most 10000",
        );
        out
    }
}

//! `[notifications]`: operators' system notifications, every count bounded.

use serde::{Deserialize, Serialize};

/// `[notifications]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Bytes of a notification's text, at most (UTF-8).
    pub text_bytes_max: usize,
    /// Bytes of a notification's title, at most.
    pub title_bytes_max: usize,
    /// User ids one request may list, at most (`to: {"users": [...]}`).
    pub users_per_request_max: usize,
    /// Recipients stored by one sequencer write, at most: a notification to everyone is this
    /// many users' messages per commit, never one giant commit.
    pub batch_users: usize,
    /// Notifications being sent at once, at most; another is refused (`unavailable`) until one
    /// finishes.
    pub jobs_running_max: usize,
    /// Finished notifications kept in memory for `GET /api/notifications`, at most (the
    /// audit log keeps every one).
    pub history_max: usize,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            text_bytes_max: 4_096,
            title_bytes_max: 256,
            users_per_request_max: 10_000,
            batch_users: 256,
            jobs_running_max: 2,
            history_max: 1_000,
        }
    }
}

impl NotificationsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (1..=65_536).contains(&self.text_bytes_max),
            "notifications.text_bytes_max: must be between 1 and 65536",
        );
        check(
            (1..=4_096).contains(&self.title_bytes_max),
            "notifications.title_bytes_max: must be between 1 and 4096",
        );
        check(
            (1..=1_000_000).contains(&self.users_per_request_max),
            "notifications.users_per_request_max: must be between 1 and 1000000",
        );
        check(
            (1..=10_000).contains(&self.batch_users),
            "notifications.batch_users: must be between 1 and 10000",
        );
        check(
            (1..=64).contains(&self.jobs_running_max),
            "notifications.jobs_running_max: must be between 1 and 64",
        );
        check(
            (1..=100_000).contains(&self.history_max),
            "notifications.history_max: must be between 1 and 100000",
        );
        out
    }
}

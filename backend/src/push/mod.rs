//! Offline push: when a message is stored for a user none of whose devices is online, the push
//! gateway (`[push] url`, which relays to APNs, FCM, …) is asked to notify the user's devices.
//!
//! The message path's share is small and never waits: delivery, which already looks up each
//! direct or system recipient's sessions to push the message to them, notes a [`PushRecord`]
//! (a few integers, no allocation of its own) for a recipient it found with no session, and
//! hands the commit group's records over in one non-blocking [`PushQueue::offer`] (`queue.rs`:
//! two bounded lanes, messages' and system notifications'). Group messages are noted only when
//! they may concern someone offline (mentions, small groups); whom they concern is worked out
//! by the sender. Past a lane's bound, records are dropped and counted.
//!
//! The sender (`sender.rs`, one tokio task) resolves records into pushes (`resolve.rs`: the
//! devices' tokens, a group's offline members, an optional preview), posts them to the webhook
//! in batches signed with HMAC-SHA256 (`webhook.rs`), and retries with exponential backoff,
//! leaving out before each request and retry the pushes that became stale (`stale.rs`).
//! Devices register their tokens with `RegisterPushToken` (`tokens.rs`); a device's token is
//! forgotten when its login ends (`forget.rs`).
//!
//! Cluster mode: the conversation's owner node decides "offline" from its own sessions, then
//! the sender drops the pushes of users whose routes (Redis) place a device on another live
//! node; when Redis cannot say, it pushes (`sender.rs` says why).

mod config;
mod forget;
mod queue;
mod resolve;
mod sender;
mod stale;
mod tokens;
mod webhook;

use std::sync::{Arc, Mutex};

pub use config::PushConfig;
pub(crate) use forget::SignedOut;
pub(crate) use queue::PushQueue;
use queue::{Lane, PushReceiver};
pub(crate) use sender::start;

use crate::store::{ConvId, UserId};

/// A stored message that may need a push: who it is for (`user`, or 0 for a group message
/// whose recipients the sender works out) and which message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushRecord {
    pub user: UserId,
    pub conv: ConvId,
    pub seq: u64,
    pub from: UserId,
    pub server_time_ms: u64,
}

impl PushRecord {
    pub(crate) fn of(user: UserId, m: &crate::store::MessageRecord) -> Self {
        Self {
            user,
            conv: m.conv_id,
            seq: m.seq,
            from: m.from,
            server_time_ms: m.server_time_ms,
        }
    }
}

/// Offline push of a server with `[push] url` set: the queue delivery offers to, and its
/// receiving end until the sender takes it.
pub(crate) struct Push {
    pub(crate) queue: Arc<PushQueue>,
    config: PushConfig,
    rx: Mutex<Option<PushReceiver>>,
}

impl Push {
    /// `None` when push is off.
    pub(crate) fn new(config: &PushConfig) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        let (queue, rx) = PushQueue::new(config);
        Some(Self {
            queue,
            config: config.clone(),
            rx: Mutex::new(Some(rx)),
        })
    }

    fn take_receiver(&self) -> Option<PushReceiver> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The push metrics' help texts (`admin::describe_families`).
pub(crate) fn describe() {
    metrics::describe_counter!(
        "ringchat_push_queued_total",
        "Offline pushes queued for the push gateway (one per message and offline recipient, or per group message that may concern one)"
    );
    metrics::describe_counter!(
        "ringchat_push_folded_total",
        "Offline pushes folded into one already waiting for the same user and conversation"
    );
    metrics::describe_counter!(
        "ringchat_push_dropped_total",
        "Offline pushes of direct and group messages dropped because push.queue_max were waiting"
    );
    metrics::describe_counter!(
        "ringchat_push_system_dropped_total",
        "Offline pushes of system notifications dropped because push.system_queue_max were waiting"
    );
    metrics::describe_counter!(
        "ringchat_push_expired_total",
        "Offline pushes not sent because their message was older than push.max_age_ms when the sender took them"
    );
    metrics::describe_counter!(
        "ringchat_push_stale_total",
        "Resolved pushes left out of a webhook request, or of its retry, because by then their message was older than push.max_age_ms (reason=expired) or their user was online (reason=online)"
    );
    metrics::describe_counter!(
        "ringchat_push_sent_total",
        "Pushes the push gateway accepted (one per user and message)"
    );
    metrics::describe_counter!(
        "ringchat_push_failed_total",
        "Pushes given up after push.retries_max retries or refused by the push gateway"
    );
    metrics::describe_counter!(
        "ringchat_push_dead_tokens_total",
        "Push tokens forgotten because the push gateway's answer named them dead"
    );
    metrics::describe_counter!(
        "ringchat_push_retries_total",
        "Webhook request retries decided after a failure (counted before the backoff wait, also when the pushes then go stale)"
    );
    metrics::describe_counter!(
        "ringchat_push_online_elsewhere_total",
        "Cluster mode: pushes (and direct or system push records, dropped before they were resolved) not sent because the user has a device on another node that is heard from"
    );
    metrics::describe_counter!(
        "ringchat_push_routes_unknown_total",
        "Cluster mode: pushes (and direct or system push records, before they were resolved) sent without knowing the user's other nodes (Redis did not answer)"
    );
    metrics::describe_gauge!(
        "ringchat_push_queue_records",
        "Offline pushes of direct and group messages waiting for the sender"
    );
    metrics::describe_gauge!(
        "ringchat_push_system_queue_records",
        "Offline pushes of system notifications waiting for the sender"
    );
}

//! No session outlives its token's expiry: a token is checked at login only, so a session
//! still connected when its token expires is ended here, by a periodic sweep of the registry's
//! expiry index (idle sessions included: nothing waits for the session's next request).

use std::sync::Arc;
use std::time::Duration;

use ringchat_proto::v1::KickReason;

use crate::Backend;
use crate::api::ShardEvent;
use crate::time::now_ms;

/// How often the sweep looks for sessions whose token expired: a session ends at most this
/// long after its token.
pub(crate) const TOKEN_EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Sessions one sweep ends at most (the registry's write lock is held while they are taken);
/// more wait for the next sweep.
const EXPIRED_PER_SWEEP_MAX: usize = 4096;

impl Backend {
    /// Ends the sessions whose token expired, every [`TOKEN_EXPIRY_SWEEP_INTERVAL`]. Runs until
    /// the backend stops.
    pub(crate) async fn run_token_expiry(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TOKEN_EXPIRY_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.end_expired_sessions(now_ms()).await;
        }
    }

    /// One sweep at `now_ms`: each session whose token expired by then gets
    /// `Kicked{TOKEN_EXPIRED}` (once: it leaves the index here, the registry when it closes).
    /// Returns how many.
    pub(crate) async fn end_expired_sessions(&self, now_ms: u64) -> usize {
        if !self.sessions.read().any_expired(now_ms) {
            return 0;
        }
        let expired = self
            .sessions
            .write()
            .take_expired(now_ms, EXPIRED_PER_SWEEP_MAX);
        for (_, conn) in &expired {
            let event = ShardEvent::Kick {
                conn: conn.conn,
                reason: KickReason::TokenExpired,
            };
            self.send_to_shard(conn.shard, event).await;
        }
        if !expired.is_empty() {
            tracing::info!(
                sessions = expired.len(),
                "sessions ended: their token expired"
            );
            metrics::counter!("ringchat_sessions_token_expired_total")
                .increment(expired.len() as u64);
        }
        expired.len()
    }
}

//! The shard's coarse clock: each tick closes the connections past their handshake or idle
//! deadline, and those whose backlog outlived `gateway.outbound_drain_timeout_ms`.

use std::rc::Rc;
use std::time::Duration;

use ringchat_proto::v1::KickReason;

use super::{Close, Shard};

/// Advances the coarse clock and closes connections past their handshake or idle deadline.
pub(super) async fn reap(shard: Rc<Shard>) {
    let mut interval = monoio::time::interval(Duration::from_millis(shard.tick_ms));
    while !shard.stopping.get() {
        interval.tick().await;
        shard.reap_tick();
    }
}

impl Shard {
    /// One tick of the coarse clock: each connection past a deadline is closed.
    pub(super) fn reap_tick(&self) {
        // Live keys: a changed timeout applies from this tick on, to every connection; a
        // lowered idle timeout only to sessions told it (`ConnShared::idle_ticks`).
        let live = self.live.get();
        let handshake_ticks = self.ticks(live.handshake_timeout_ms);
        let idle_ticks = self.ticks(live.idle_timeout_ms);
        let drain_ticks = self.ticks(self.gateway.outbound_drain_timeout_ms);
        let now = self.tick.get() + 1;
        self.tick.set(now);
        self.ticked.notify();
        self.stats.outbound_bytes.set(self.outbound_bytes.get());
        for c in self.conns.borrow().values() {
            let backlog = c.backlog_ticks(now);
            if c.ticks_since_accepted(now)
                .is_some_and(|t| t > handshake_ticks)
            {
                c.close_with(Close::Kick(KickReason::HandshakeTimeout));
            } else if c.ticks_since_seen(now) > c.idle_ticks(idle_ticks) && !c.is_waiting() {
                c.close_with(Close::Kick(KickReason::IdleTimeout));
            } else if backlog.is_some_and(|t| t > drain_ticks) {
                // Reading now and then, never catching up: it would hold its backlog for ever.
                self.kick_slow(c);
            } else if backlog == Some(1) {
                // Behind for a tick: what it holds stops keeping shared chunks alive.
                c.outbound.copy_out_small();
            } else if c.ticks_since_seen(now) > 0 {
                // Quiet for this tick at least.
                c.release_idle_queue();
            }
        }
    }
}

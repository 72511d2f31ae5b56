//! The shard's budget of queued bytes (`gateway.outbound_bytes_per_shard_max`): frames are
//! queued on connections here, and slow consumers kicked, whatever limit they pass.

use std::cmp::Reverse;

use bytes::Bytes;
use ringchat_backend::api::ConnId;
use ringchat_proto::v1::KickReason;

use super::local::ConnTable;
use super::{Books, Close, ConnShared, Fanout, Frame, Shard};

impl Shard {
    /// What `c`'s queue is charged to and timed by.
    pub fn books<'a>(&'a self, c: &'a ConnShared) -> Books<'a> {
        Books {
            total: &self.outbound_bytes,
            now: self.tick.get(),
            backlog_since: &c.backlog_since_tick,
        }
    }

    /// Queues an encoded frame for `c`. Past a limit of its own (frames or bytes) it is closed
    /// as a slow consumer; past the shard's, the connections whose kicks free the most are.
    pub fn enqueue(&self, c: &ConnShared, frame: Bytes) {
        self.push(c, Frame::Own(frame));
    }

    /// Queues one frame for each of `ids` (a group's, a room's or a fan-out's: one buffer): the
    /// shard's budget is charged its bytes once, while any of them holds it, and each
    /// connection its queue entry. Counted whole per connection, the frames of one 32 KiB
    /// message to 16,000 members would pass a 512 MiB budget that holds 32 KiB, and kick
    /// members that keep up. A frame for one connection only is queued as its own: the shared
    /// charge costs an allocation.
    pub(super) fn enqueue_shared(
        &self,
        conns: &ConnTable<ConnShared>,
        ids: impl IntoIterator<Item = ConnId>,
        frame: &Bytes,
    ) {
        // Not yet logged in: skipped, as `drain_inbox` skips frames of its own.
        let live = |id| {
            conns
                .get(id)
                .filter(|c| c.close.get().is_none() && c.is_authed())
        };
        let mut ids = ids.into_iter();
        let Some(first) = ids.by_ref().find_map(live) else {
            return;
        };
        let Some(second) = ids.by_ref().find_map(live) else {
            self.enqueue(first, frame.clone());
            return;
        };
        let fanout = Fanout::new(frame.clone());
        for c in [first, second].into_iter().chain(ids.filter_map(live)) {
            self.push(c, Frame::Shared(&fanout));
        }
    }

    fn push(&self, c: &ConnShared, frame: Frame<'_>) {
        if c.close.get().is_some() {
            return;
        }
        let limits = self.gateway.outbound_limits();
        if !c.outbound.push(frame, limits, &self.books(c)) {
            self.kick_slow(c);
            return;
        }
        c.wake.notify();
        if self.outbound_bytes.get() > self.gateway.outbound_bytes_per_shard_max {
            self.shed_backlog();
        }
    }

    /// Kicks `c` as a slow consumer, for whatever reason: its backlog leaves the shard's total at
    /// once. Its close drops it anyway (`Kicked` goes alone), and counted until then (up to the
    /// final flush's grace) it would make the shard's budget kick connections that keep up.
    pub(super) fn kick_slow(&self, c: &ConnShared) {
        if c.close.get().is_some() {
            return;
        }
        c.outbound.clear(&self.outbound_bytes);
        c.close_with(Close::Kick(KickReason::SlowConsumer));
    }

    /// The shard's connections together have more than `gateway.outbound_bytes_per_shard_max`
    /// queued: connections are kicked as slow consumers, those whose kicks surely free the most
    /// first (`Outbound::charged`: their own frames, and their entries of shared ones, whose
    /// buffer leaves with its last holder), until the shard is within budget. Ranked by what
    /// they hold, members of a group that each held the same burst were kicked one after the
    /// other, freeing next to nothing each, while the connection that held its own frames
    /// stayed. A queue of one frame goes last: one reply never makes a slow consumer. One scan
    /// of the shard's connections, however many kicks; connections already closing are left to
    /// finish.
    fn shed_backlog(&self) {
        let max = self.gateway.outbound_bytes_per_shard_max;
        let conns = self.conns.borrow();
        let mut victims: Vec<_> = conns
            .values()
            .filter(|c| c.close.get().is_none() && !c.outbound.is_empty())
            .map(|c| (Reverse((c.outbound.len() > 1, c.outbound.charged())), &**c))
            .collect();
        victims.sort_unstable_by_key(|&(frees, _)| frees);
        for (_, c) in victims {
            if self.outbound_bytes.get() <= max {
                break;
            }
            self.kick_slow(c);
            self.stats.outbound_budget_kicks.add(1);
        }
    }
}

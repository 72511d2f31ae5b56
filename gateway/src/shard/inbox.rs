//! The shard's inbox: events from the backend (frames, fan-outs, kicks, reconfiguration,
//! shutdown) applied in batches, taking turns with the shard's other tasks.

use std::rc::Rc;
use std::time::{Duration, Instant};

use ringchat_backend::api::{Outgoing, ShardEvent};
use tokio::sync::mpsc;

use super::{Close, Shard, local};

/// Events taken from the shard's inbox in one go.
const EVENT_BATCH_MAX: usize = 256;
/// Connections the inbox task queues frames for (a fan-out counts each connection of its
/// list) before it lets the shard's other tasks run (`InboxTurn`).
const ROUTES_PER_TURN: usize = 1024;

/// Applies events from the backend in batches, taking turns with the shard's other tasks.
pub(super) async fn drain_inbox(shard: Rc<Shard>, mut inbox: mpsc::Receiver<ShardEvent>) {
    let mut batch = Vec::with_capacity(EVENT_BATCH_MAX);
    let mut turn = InboxTurn::new(&shard);
    while inbox.recv_many(&mut batch, EVENT_BATCH_MAX).await > 0 {
        for event in batch.drain(..) {
            let Some(routes) = shard.apply(event) else {
                return;
            };
            turn.after(&shard, routes).await;
        }
    }
    // The backend is gone: nothing can be served any more.
    shard.begin_shutdown();
}

/// When the inbox task lets the shard's other tasks run. The inbox is a tokio channel drained
/// on a monoio thread, where tokio's cooperative budget does not exist: `recv_many` is ready at
/// once while events wait, so under a sustained fan-out the task would never wait, and no
/// connection would write its queue (and be kicked as a slow consumer for it) or answer a
/// ping, nor any timer fire.
struct InboxTurn {
    /// Routed since the last turn.
    routes: usize,
    /// The reaper's tick last seen here, and when it was first seen.
    tick: u64,
    tick_seen_at: Instant,
}

impl InboxTurn {
    fn new(shard: &Shard) -> Self {
        Self {
            routes: 0,
            tick: shard.tick.get(),
            tick_seen_at: Instant::now(),
        }
    }

    /// Called after each event, with the connections it was routed to.
    async fn after(&mut self, shard: &Shard, routes: usize) {
        self.routes += routes;
        if self.routes < ROUTES_PER_TURN {
            return;
        }
        self.routes = 0;
        local::YieldOnce(false).await;
        // monoio fires its timers only when no task is runnable, and while the inbox stays
        // full this one always is: once the reaper's tick is a tick late, the task waits for
        // it, and the shard's other timers due fire with it.
        let now = Instant::now();
        let tick = shard.tick.get();
        if tick != self.tick {
            self.tick = tick;
            self.tick_seen_at = now;
        } else if now.duration_since(self.tick_seen_at) > Duration::from_millis(2 * shard.tick_ms) {
            // The reaper runs until the shard stops, which only this task starts.
            while shard.tick.get() == tick {
                shard.ticked.notified().await;
            }
        }
    }
}

impl Shard {
    /// Applies one event from the backend: the connections it was routed to (each of a
    /// fan-out's, whether it is here or not), or `None` once the shard is told to stop.
    fn apply(self: &Rc<Self>, event: ShardEvent) -> Option<usize> {
        let conns = self.conns.borrow();
        // Only logged-in connections are routed to (`ConnShared::is_authed`; shared lists:
        // `enqueue_shared`): a login the backend still refuses must not see the user's frames.
        let routed = |conn| conns.get(conn).filter(|c| c.is_authed());
        let routes = match event {
            ShardEvent::Frame { conn, frame } => {
                if let Some(c) = routed(conn) {
                    self.enqueue(c, frame);
                }
                1
            }
            ShardEvent::Frames(frames) => {
                let mut routes = 0;
                for outgoing in frames {
                    match outgoing {
                        Outgoing::One(conn, frame) => {
                            routes += 1;
                            if let Some(c) = routed(conn) {
                                self.enqueue(c, frame);
                            }
                        }
                        Outgoing::Shared {
                            conns: ids,
                            except,
                            frame,
                        } => {
                            routes += ids.len();
                            self.enqueue_shared(
                                &conns,
                                ids.iter().copied().filter(|&c| Some(c) != except),
                                &frame,
                            );
                        }
                    }
                }
                routes
            }
            ShardEvent::Fanout { conns: ids, frame } => {
                let routes = ids.len();
                self.enqueue_shared(&conns, ids, &frame);
                routes
            }
            ShardEvent::Kick { conn, reason } => {
                if let Some(c) = conns.get(conn) {
                    c.close_with(Close::Kick(reason));
                }
                1
            }
            ShardEvent::Reconfigure { applied } => {
                self.reconfigure();
                let _ = applied.try_send(self.id);
                1
            }
            ShardEvent::Shutdown => {
                drop(conns);
                self.begin_shutdown();
                return None;
            }
        };
        Some(routes)
    }
}

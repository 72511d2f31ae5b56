//! The shard's budget of queued bytes and its slow-consumer kicks, on a shard with no backend
//! behind it and connections with no task: what the shard queues stays queued.

use bytes::Bytes;

use super::*;
use crate::config::GatewayConfig;
use login_slots::past_client_share;
use ringchat_backend::api::Outgoing;

/// A shard with `gateway`'s settings and no backend behind it (its requests are kept).
pub(super) fn shard_with(
    gateway: GatewayConfig,
) -> (Rc<Shard>, mpsc::Receiver<ringchat_backend::api::Request>) {
    let (backend, requests) = mpsc::channel(1);
    let shard = Rc::new(Shard::new(
        0,
        gateway,
        Limits::default(),
        backend,
        Writes::unconnected(),
        Arc::default(),
        None,
        Arc::new(Published::new(live::ShardLive::of(
            &crate::config::Config::default(),
            &crate::fd_budget::ConnsCap::NONE,
        ))),
    ));
    (shard, requests)
}

/// Per connection at most `conn_bytes`, per shard `shard_bytes`.
fn budget(conn_bytes: u32, shard_bytes: u64) -> GatewayConfig {
    GatewayConfig {
        outbound_bytes_max: conn_bytes,
        outbound_bytes_per_shard_max: shard_bytes,
        ..GatewayConfig::default()
    }
}

/// A connection whose login succeeded: only those are routed to.
fn logged_in(shard: &Shard) -> Rc<ConnShared> {
    let c = shard.register();
    c.set_authed();
    c
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn frame(bytes: usize) -> Bytes {
    Bytes::from(vec![0u8; bytes])
}

fn kicked_slow(c: &ConnShared) -> bool {
    c.close.get() == Some(Close::Kick(KickReason::SlowConsumer))
}

/// One 32 KiB group message to 20,000 members of a shard holds one 32 KiB buffer: counted
/// whole for each member it passed the default 512 MiB budget and kicked members that keep up.
#[test]
fn a_group_message_to_many_members_is_charged_to_the_shard_once() {
    let (shard, _requests) = shard_with(GatewayConfig::default());
    let members: Vec<Rc<ConnShared>> = (0..20_000).map(|_| logged_in(&shard)).collect();
    let frame = frame(32 * KIB);
    shard.enqueue_shared(&shard.conns.borrow(), members.iter().map(|c| c.id), &frame);
    assert_eq!(shard.stats.outbound_budget_kicks.get(), 0);
    assert!(
        members
            .iter()
            .all(|c| c.close.get().is_none() && c.outbound.len() == 1),
        "every member keeps its frame"
    );
    assert!(
        shard.outbound_bytes.get() < 2 << 20,
        "one buffer and 20,000 entries"
    );
}

/// A shared frame's bytes are charged to the shard whichever of its connections takes it:
/// before, the first connection in the list was charged them even when it took nothing (it
/// was closing, or was kicked at its own limit), and the others only their entries.
#[test]
fn a_shared_frame_is_charged_though_the_first_member_takes_none() {
    const LEN: u64 = 32 * KIB as u64;
    let gateway = GatewayConfig {
        outbound_frames_max: 2,
        ..GatewayConfig::default()
    };
    let (shard, _requests) = shard_with(gateway);
    let closing = logged_in(&shard);
    closing.close_with(Close::Kick(KickReason::Replaced));
    let full = logged_in(&shard);
    shard.enqueue(&full, frame(10));
    shard.enqueue(&full, frame(10));
    let live = logged_in(&shard);
    let other = logged_in(&shard);
    let conns = shard.conns.borrow();

    shard.enqueue_shared(&conns, [closing.id, live.id], &frame(LEN as usize));
    assert!(closing.outbound.is_empty());
    assert!(shard.outbound_bytes.get() >= LEN + 20);
    live.outbound.clear(&shard.outbound_bytes);
    assert_eq!(shard.outbound_bytes.get(), 20);

    shard.enqueue_shared(&conns, [full.id, live.id, other.id], &frame(LEN as usize));
    assert!(kicked_slow(&full), "past its own limit");
    assert!(
        shard.outbound_bytes.get() >= LEN,
        "{} charged",
        shard.outbound_bytes.get()
    );
    live.outbound.clear(&shard.outbound_bytes);
    other.outbound.pop_while(|_| true, &shard.outbound_bytes);
    assert_eq!(shard.outbound_bytes.get(), 0);
}

/// Past the shard's budget, the connections whose kicks free the most are kicked, and no more
/// than it takes. B and C hold the same 2 MiB of a group's frames (another member took them
/// already): kicking either alone frees only its entries. A holds 1.4 MiB of its own frames,
/// F one frame of 1.5 MiB (one reply never makes a slow consumer). Before, the largest
/// backlogs went first: B for nothing, then C, while A kept its own.
#[test]
fn past_the_budget_the_kicks_that_free_the_most_go_first() {
    let (shard, _requests) = shard_with(budget(8 * MIB as u32, 5 * MIB as u64));
    let [d, b, c, a, e, f] = [(); 6].map(|()| logged_in(&shard));
    let conns = shard.conns.borrow();
    for _ in 0..32 {
        shard.enqueue_shared(&conns, [d.id, b.id, c.id], &frame(64 * KIB));
    }
    d.outbound.pop_while(|_| true, &shard.outbound_bytes);
    for _ in 0..7 {
        shard.enqueue(&a, frame(100 * KIB));
    }
    for _ in 0..2 {
        shard.enqueue(&e, frame(100 * KIB));
    }
    shard.enqueue(&f, frame(1500 * KIB));
    assert_eq!(shard.stats.outbound_budget_kicks.get(), 0);
    // 2 MiB + 700 + 200 + 1,500 KiB: 700 more for A cross 5 MiB.
    shard.enqueue(&a, frame(700 * KIB));
    assert_eq!(shard.stats.outbound_budget_kicks.get(), 1);
    assert!(kicked_slow(&a));
    assert!(a.outbound.is_empty(), "its backlog is dropped at once");
    for kept in [&b, &c, &e, &f] {
        assert!(kept.close.get().is_none() && !kept.outbound.is_empty());
    }
    assert!(shard.outbound_bytes.get() <= 5 * MIB as u64);
}

/// A connection kicked as a slow consumer at its own limit gives its backlog back to the
/// shard's budget at once: before, it stayed counted until the connection's task had finished
/// (up to a second of final flush), and the budget kicked a connection that keeps up for it.
#[test]
fn a_slow_consumer_kicked_at_its_own_limit_leaves_the_budget_at_once() {
    let (shard, _requests) = shard_with(budget(MIB as u32, 1536 * KIB as u64));
    let (x, y) = (shard.register(), shard.register());
    shard.enqueue(&x, frame(600 * KIB));
    shard.enqueue(&x, frame(600 * KIB));
    assert!(kicked_slow(&x), "past its own limit");
    shard.enqueue(&y, frame(MIB));
    assert!(y.close.get().is_none(), "kicked for x's backlog");
    assert_eq!(shard.stats.outbound_budget_kicks.get(), 0);
    assert_eq!(shard.outbound_bytes.get(), MIB as u64);
}

/// The reaper's slow-consumer kick (a backlog that never drained within
/// `outbound_drain_timeout_ms`) drops the backlog at once too; a tick into a backlog its small
/// frames are copied out of their chunks.
#[test]
fn a_backlog_past_the_drain_timeout_leaves_the_budget_at_once() {
    let gateway = GatewayConfig {
        outbound_drain_timeout_ms: 1,
        ..GatewayConfig::default()
    };
    let (shard, _requests) = shard_with(gateway);
    let z = shard.register();
    let chunk = frame(64 * KIB);
    shard.enqueue(&z, chunk.slice(..100));
    shard.enqueue(&z, chunk.slice(100..200));
    assert!(!chunk.is_unique());
    shard.reap_tick();
    assert!(z.close.get().is_none());
    assert!(chunk.is_unique(), "copied after a tick behind");
    assert_eq!(shard.outbound_bytes.get(), 200);
    shard.reap_tick();
    assert!(kicked_slow(&z));
    assert_eq!(shard.outbound_bytes.get(), 0);
}

/// Hands `events` to the shard's inbox task and returns once it has applied them (a
/// `Reconfigure` behind them says so); the inbox stays open, so the shard does not stop.
fn drain(shard: &Rc<Shard>, events: Vec<ShardEvent>) {
    let (tx, inbox) = mpsc::channel(events.len() + 1);
    let (applied, done) = std::sync::mpsc::sync_channel(1);
    for event in events
        .into_iter()
        .chain([ShardEvent::Reconfigure { applied }])
    {
        tx.try_send(event).expect("room in the inbox");
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let drained = async {
            while done.try_recv().is_err() {
                local::YieldOnce(false).await;
            }
        };
        monoio::select! {
            () = drain_inbox(Rc::clone(shard), inbox) => panic!("the inbox task ended"),
            () = drained => {}
        }
    });
    drop(tx);
}

/// What the backend routes to a connection whose login is under way is dropped, however it is
/// addressed: the backend registers the session before checks that can still refuse the login
/// (a revoked token, a disabled account, delivery behind), and a refused connection stays open
/// for another try. Before, those frames were queued and written to it, before its `Error`.
#[test]
fn frames_for_a_connection_not_logged_in_are_dropped() {
    let (shard, _requests) = shard_with(GatewayConfig::default());
    let pending = shard.register();
    let authed = logged_in(&shard);
    let push = || frame(10);
    drain(
        &shard,
        vec![
            ShardEvent::Frame {
                conn: pending.id,
                frame: push(),
            },
            ShardEvent::Frames(vec![
                Outgoing::One(pending.id, push()),
                Outgoing::One(authed.id, push()),
                // A group's online list with the pending one in it, alone and with another.
                Outgoing::Shared {
                    conns: Arc::new(vec![pending.id]),
                    except: None,
                    frame: push(),
                },
                Outgoing::Shared {
                    conns: Arc::new(vec![pending.id, authed.id]),
                    except: None,
                    frame: push(),
                },
            ]),
            ShardEvent::Fanout {
                conns: vec![authed.id, pending.id],
                frame: push(),
            },
        ],
    );
    assert!(pending.outbound.is_empty(), "nothing for a pending login");
    assert!(pending.close.get().is_none(), "it may still log in");
    assert_eq!(authed.outbound.len(), 3);
    // Once logged in it is routed to.
    pending.set_authed();
    let event = ShardEvent::Frame {
        conn: pending.id,
        frame: push(),
    };
    drain(&shard, vec![event]);
    assert_eq!(pending.outbound.len(), 1);
}

#[test]
fn a_client_takes_idle_places_and_a_sixteenth_of_the_last_quarter() {
    // 1,024 places, a share of 256, the last quarter's share 64.
    assert!(
        !past_client_share(600, 600, 1024),
        "alone: idle places are lent"
    );
    assert!(!past_client_share(767, 767, 1024));
    assert!(
        past_client_share(768, 768, 1024),
        "the last quarter is kept"
    );
    assert!(!past_client_share(63, 1000, 1024), "a sixteenth of it each");
    assert!(
        past_client_share(64, 800, 1024),
        "even a client under its quarter"
    );
    assert!(
        !past_client_share(0, 1023, 1024),
        "a newcomer gets the kept place"
    );
    assert!(past_client_share(1, 0, 1), "one place: a share of one");
    assert!(!past_client_share(0, 0, 1));
}

/// Hosts that each take every place they are given, one after another: how many fill the
/// shard. Two used to (one borrowing three quarters, the next taking the last whole).
#[test]
fn filling_a_shard_takes_five_greedy_hosts() {
    const PLACES: usize = 1024;
    let mut in_flight = 0;
    let mut hosts = 0;
    while in_flight < PLACES {
        hosts += 1;
        let mut of_client = 0;
        while in_flight < PLACES && !past_client_share(of_client, in_flight, PLACES) {
            of_client += 1;
            in_flight += 1;
        }
        if hosts == 2 {
            assert_eq!(in_flight, 768 + 64, "two hosts leave 192 places");
        }
    }
    assert_eq!(hosts, 5);
}

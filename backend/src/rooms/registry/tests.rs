use super::cluster::JoinMade;
use super::*;

const ALICE: UserId = 100_000_001;
const BOB: UserId = 100_000_002;
const CAROL: UserId = 100_000_003;
/// Where the sessions of most tests come from.
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

fn conn(shard: ShardId, conn: ConnId) -> ConnRef {
    ConnRef { shard, conn }
}

fn config() -> RoomsConfig {
    RoomsConfig {
        members_max: 3,
        max: 4,
        per_user_max: 2,
        per_network_max: 4,
        messages_per_s_max: 5,
        user_messages_per_s_max: 3,
        persistent: vec!["lobby".into()],
    }
}

/// Every connection a send reaches, the sender's shard list without the sender.
fn reached(out: &Outgoing, from: ConnRef) -> Vec<ConnRef> {
    let mut all: Vec<ConnRef> = out
        .targets
        .iter()
        .flat_map(|(shard, conns)| conns.iter().map(|&c| conn(*shard, c)))
        .filter(|c| *c != from)
        .collect();
    all.sort_by_key(|c| (c.shard, c.conn));
    all
}

#[test]
fn join_counts_users_once_and_is_idempotent() {
    let mut r = Registry::new(config(), 0);
    let (a1, a2, b) = (conn(0, 1), conn(1, 2), conn(0, 3));
    assert_eq!(r.join(a1, ALICE, PEER, "x", 0), Ok(1));
    assert_eq!(
        r.join(a1, ALICE, PEER, "x", 0),
        Ok(1),
        "twice from one session"
    );
    assert_eq!(
        r.join(a2, ALICE, PEER, "x", 0),
        Ok(1),
        "a second session of the user"
    );
    assert_eq!(r.join(b, BOB, PEER, "x", 0), Ok(2));
    assert_eq!(r.info(a2, "x"), Ok(2));
    assert_eq!(r.info(conn(0, 9), "x"), Err(RoomError::NotIn));
    r.leave(a1, ALICE, "x", 0);
    assert_eq!(r.info(b, "x"), Ok(2), "alice is still there on a2");
    r.leave(a2, ALICE, "x", 0);
    assert_eq!(r.info(b, "x"), Ok(1));
    r.leave(a2, ALICE, "x", 0);
    assert_eq!(r.info(b, "x"), Ok(1), "leaving twice changes nothing");
}

#[test]
fn a_send_reaches_every_other_session_once_in_seq_order() {
    let mut r = Registry::new(config(), 0);
    let (a1, a2, b, c) = (conn(0, 1), conn(1, 2), conn(1, 3), conn(2, 4));
    r.join(a1, ALICE, PEER, "x", 0).unwrap();
    r.join(a2, ALICE, PEER, "x", 0).unwrap();
    r.join(b, BOB, PEER, "x", 0).unwrap();
    r.join(c, CAROL, PEER, "x", 0).unwrap();
    let first = r.send(a1, ALICE, "x", 0).unwrap();
    assert_eq!(first.room_seq, 1);
    assert_eq!(reached(&first, a1), vec![a2, b, c]);
    // The sender alone on its shard: that shard gets nothing.
    assert!(first.targets.iter().all(|(s, _)| *s != 0));
    let second = r.send(b, BOB, "x", 0).unwrap();
    assert_eq!(second.room_seq, 2);
    assert_eq!(reached(&second, b), vec![a1, a2, c]);
    // Unchanged membership: the same lists are shared, not rebuilt.
    let third = r.send(b, BOB, "x", 0).unwrap();
    for ((s2, l2), (s3, l3)) in second.targets.iter().zip(&third.targets) {
        assert_eq!(s2, s3);
        assert!(Arc::ptr_eq(l2, l3));
    }
    r.leave(a2, ALICE, "x", 0);
    let fourth = r.send(b, BOB, "x", 0).unwrap();
    assert_eq!(reached(&fourth, b), vec![a1, c]);
    assert_eq!((r.messages, r.deliveries), (4, 3 + 3 + 3 + 2));
    assert_eq!(
        r.send(conn(0, 9), ALICE, "x", 0).unwrap_err(),
        RoomError::NotIn
    );
    assert_eq!(r.send(a2, ALICE, "x", 0).unwrap_err(), RoomError::NotIn);
}

#[test]
fn an_empty_room_is_gone_and_a_persistent_one_kept() {
    let mut r = Registry::new(config(), 0);
    let (a, b) = (conn(0, 1), conn(0, 2));
    assert_eq!(r.room_count(), 1, "the persistent lobby");
    r.join(a, ALICE, PEER, "x", 0).unwrap();
    r.join(b, BOB, PEER, "x", 0).unwrap();
    r.send(a, ALICE, "x", 0).unwrap();
    r.join(a, ALICE, PEER, "lobby", 0).unwrap();
    r.send(a, ALICE, "lobby", 0).unwrap();
    assert_eq!(r.room_count(), 2);
    r.close(a, ALICE, 0);
    r.leave(b, BOB, "x", 0);
    assert_eq!(r.room_count(), 1);
    assert_eq!(r.join(b, BOB, PEER, "x", 0), Ok(1));
    assert_eq!(r.send(b, BOB, "x", 0).unwrap().room_seq, 1, "a new room");
    assert_eq!(r.join(b, BOB, PEER, "lobby", 0), Ok(1));
    assert_eq!(r.send(b, BOB, "lobby", 0).unwrap().room_seq, 2, "kept");
}

#[test]
fn close_takes_a_session_out_of_all_its_rooms_only() {
    let mut r = Registry::new(config(), 0);
    let (a1, a2, b) = (conn(0, 1), conn(0, 2), conn(1, 3));
    r.join(a1, ALICE, PEER, "x", 0).unwrap();
    r.join(a1, ALICE, PEER, "y", 0).unwrap();
    r.join(a2, ALICE, PEER, "y", 0).unwrap();
    r.join(b, BOB, PEER, "y", 0).unwrap();
    r.close(a1, ALICE, 0);
    assert_eq!(r.info(a1, "y"), Err(RoomError::NotIn));
    assert_eq!(r.info(a2, "y"), Ok(2));
    assert_eq!(
        r.room_count(),
        2,
        "x went with its only member; lobby stays"
    );
    assert_eq!(reached(&r.send(b, BOB, "y", 0).unwrap(), b), vec![a2]);
    r.close(a1, ALICE, 0);
    r.close(conn(5, 5), CAROL, 0);
}

#[test]
fn limits() {
    let mut r = Registry::new(config(), 0);
    // members_max = 3 users; a member's second session still gets in.
    r.join(conn(0, 1), ALICE, PEER, "x", 0).unwrap();
    r.join(conn(0, 2), BOB, PEER, "x", 0).unwrap();
    r.join(conn(0, 3), CAROL, PEER, "x", 0).unwrap();
    assert_eq!(
        r.join(conn(0, 4), 100_000_004, PEER, "x", 0),
        Err(RoomError::Full(3))
    );
    assert_eq!(r.join(conn(1, 1), ALICE, PEER, "x", 0), Ok(3));
    // per_user_max = 2 rooms, over all the user's sessions.
    r.join(conn(0, 1), ALICE, PEER, "y", 0).unwrap();
    assert_eq!(
        r.join(conn(1, 1), ALICE, PEER, "z", 0),
        Err(RoomError::UserHasTooMany(2))
    );
    assert_eq!(
        r.join(conn(1, 1), ALICE, PEER, "y", 0),
        Ok(1),
        "a room the user is in"
    );
    // max = 4 rooms on the server: lobby, x, y, and one more.
    r.join(conn(0, 2), BOB, PEER, "z", 0).unwrap();
    assert_eq!(
        r.join(conn(0, 3), CAROL, PEER, "w", 0),
        Err(RoomError::ServerHasTooMany(4))
    );
    assert_eq!(
        r.join(conn(0, 3), CAROL, PEER, "lobby", 0),
        Ok(1),
        "existing rooms"
    );
    // A refused join left nothing behind.
    assert_eq!(r.room_count(), 4);
    assert_eq!(r.info(conn(0, 4), "x"), Err(RoomError::NotIn));
}

#[test]
fn budgets_per_room_and_per_user() {
    let mut r = Registry::new(config(), 0);
    let (a, b, c) = (conn(0, 1), conn(0, 2), conn(0, 3));
    for who in [(a, ALICE), (b, BOB), (c, CAROL)] {
        r.join(who.0, who.1, PEER, "x", 0).unwrap();
    }
    // A user: 3 a second.
    for _ in 0..3 {
        r.send(a, ALICE, "x", 0).unwrap();
    }
    let err = r.send(a, ALICE, "x", 0).unwrap_err();
    assert_eq!(
        err,
        RoomError::UserRate {
            per_s: 3,
            retry_after_ms: 334
        }
    );
    // The room: 5 a second from everyone together.
    r.send(b, BOB, "x", 0).unwrap();
    r.send(b, BOB, "x", 0).unwrap();
    assert_eq!(
        r.send(c, CAROL, "x", 0).unwrap_err(),
        RoomError::RoomRate {
            per_s: 5,
            retry_after_ms: 200
        }
    );
    // Refusals spent nothing: after 200 ms one room token, and Carol's budget is intact.
    let out = r.send(c, CAROL, "x", 200).unwrap();
    assert_eq!(out.room_seq, 6, "gap-free: refused sends took no seq");
    // The user budget is shared by the user's rooms.
    r.join(a, ALICE, PEER, "y", 0).unwrap();
    assert!(matches!(
        r.send(a, ALICE, "y", 200),
        Err(RoomError::UserRate { .. })
    ));
}

#[test]
fn leaving_and_joining_again_brings_no_fresh_budget() {
    let mut r = Registry::new(config(), 0);
    let a = conn(0, 1);
    r.join(a, ALICE, PEER, "x", 0).unwrap();
    for _ in 0..3 {
        r.send(a, ALICE, "x", 0).unwrap();
    }
    // In no room for a moment, and back: the spent budget is still spent.
    r.leave(a, ALICE, "x", 10);
    r.join(a, ALICE, PEER, "x", 20).unwrap();
    assert!(matches!(
        r.send(a, ALICE, "x", 20),
        Err(RoomError::UserRate { .. })
    ));
    // So after a close (a reconnect).
    r.close(a, ALICE, 30);
    let a2 = conn(0, 2);
    r.join(a2, ALICE, PEER, "x", 40).unwrap();
    assert!(matches!(
        r.send(a2, ALICE, "x", 40),
        Err(RoomError::UserRate { .. })
    ));
    // A user away past the rest is forgotten (the entry goes, not kept forever).
    r.close(a2, ALICE, 50);
    r.close(conn(0, 9), BOB, 50 + BUDGET_REST_MS);
    assert!(r.users.is_empty() && r.resting.is_empty());
}

#[test]
fn one_network_makes_at_most_per_network_max_rooms_and_a_room_that_goes_frees_its_place() {
    let mut r = Registry::new(
        RoomsConfig {
            max: 100,
            per_user_max: 1,
            per_network_max: 3,
            ..config()
        },
        0,
    );
    // Users from three /64s of one /48, then a fourth: the /48's rooms are used up.
    let site = |i: u16| IpAddr::from([0x2001, 0xdb8, 1, i, 0, 0, 0, 1]);
    for i in 0..3u16 {
        let user = 200 + UserId::from(i);
        assert_eq!(
            r.join(conn(0, i.into()), user, site(i), &format!("r{i}"), 0),
            Ok(1)
        );
    }
    assert_eq!(
        r.join(conn(0, 9), 209, site(9), "r9", 0),
        Err(RoomError::NetworkHasTooMany(3))
    );
    assert_eq!(
        r.join(conn(0, 9), 209, site(9), "r0", 0),
        Ok(2),
        "a room that exists may be joined"
    );
    let elsewhere = IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, 0, 1]);
    assert_eq!(
        r.join(conn(0, 10), 210, elsewhere, "e", 0),
        Ok(1),
        "another network"
    );
    // r1's maker leaves: r1 goes, and the /48 may make one again.
    r.leave(conn(0, 1), 201, "r1", 0);
    assert_eq!(r.join(conn(0, 11), 211, site(11), "r11", 0), Ok(1));
    // r0's maker leaves but 209 stays: r0 still counts.
    r.leave(conn(0, 0), 200, "r0", 0);
    assert_eq!(
        r.join(conn(0, 12), 212, site(12), "r12", 0),
        Err(RoomError::NetworkHasTooMany(3))
    );
    r.close(conn(0, 9), 209, 0);
    assert_eq!(r.join(conn(0, 12), 212, site(12), "r12", 0), Ok(1));
}

#[test]
fn persistent_rooms_count_against_no_network() {
    let mut r = Registry::new(
        RoomsConfig {
            per_network_max: 1,
            persistent: vec!["lobby".into(), "news".into()],
            ..config()
        },
        0,
    );
    assert_eq!(r.join(conn(0, 1), ALICE, PEER, "lobby", 0), Ok(1));
    assert_eq!(r.join(conn(0, 2), BOB, PEER, "news", 0), Ok(1));
    assert_eq!(r.join(conn(0, 3), CAROL, PEER, "x", 0), Ok(1));
    assert_eq!(
        r.join(conn(0, 4), 100_000_004, PEER, "y", 0),
        Err(RoomError::NetworkHasTooMany(1))
    );
}

#[test]
fn joining_and_leaving_over_and_over_keeps_at_most_a_rest_of_leaves() {
    let mut r = Registry::new(config(), 0);
    let (a, b) = (conn(0, 1), conn(0, 2));
    // One leave per millisecond for ten rests: each leave moves Alice's rest on, but the
    // queue only keeps the leaves of the last rest.
    let leaves = 10 * BUDGET_REST_MS;
    for now in 0..leaves {
        r.join(a, ALICE, PEER, "x", now).unwrap();
        r.leave(a, ALICE, "x", now);
        if now == 1 {
            // Bob leaves once, behind Alice's first leave: forgotten after his rest.
            r.join(b, BOB, PEER, "y", now).unwrap();
            r.leave(b, BOB, "y", now);
        }
        assert!(
            r.resting.len() as u64 <= BUDGET_REST_MS + 1,
            "{}",
            r.resting.len()
        );
    }
    assert!(!r.users.contains_key(&BOB) && r.users.contains_key(&ALICE));
    // Alice too, once her last rest is over.
    r.close(conn(0, 9), CAROL, leaves + BUDGET_REST_MS);
    assert!(
        r.users.is_empty() && r.resting.is_empty(),
        "{:?}",
        r.resting
    );
}

#[test]
fn cluster_delivery_never_goes_back_and_parts_count_this_node_only() {
    let mut r = Registry::new(config(), 0);
    let (a1, a2, b) = (conn(0, 1), conn(1, 2), conn(0, 3));
    r.join(a1, ALICE, PEER, "tea", 0).unwrap();
    r.join(a2, ALICE, PEER, "tea", 0).unwrap();
    r.join(b, BOB, PEER, "tea", 0).unwrap();
    let (part, delivered) = r.part("tea");
    assert_eq!((part.users, part.sessions, delivered), (2, 3, 0));
    assert_eq!(r.presence("tea", ALICE, a1), (true, true));
    assert_eq!(r.presence("tea", CAROL, conn(0, 9)), (false, false));
    let shards = |t: Option<Targets>| t.map(|t| t.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    assert_eq!(shards(r.deliver("tea", 5, None)), Some(vec![0, 1]));
    assert_eq!(
        r.part("tea").1,
        5,
        "what was delivered is reported to a new owner"
    );
    assert!(
        r.deliver("tea", 5, None).is_none(),
        "the same room_seq again"
    );
    assert!(
        r.deliver("tea", 3, None).is_none(),
        "an older owner's straggler"
    );
    assert_eq!(r.deliveries, 3);
    // The sender's own session here is skipped by its shard: not a delivery.
    assert!(r.deliver("tea", 6, Some(b)).is_some());
    assert_eq!(r.deliveries, 3 + 2);
    assert!(
        r.deliver("tea", 7, Some(conn(0, 9))).is_some(),
        "a sender not here"
    );
    assert_eq!(r.deliveries, 3 + 2 + 3);
    assert!(r.deliver("coffee", 1, None).is_none(), "nobody here");
    // Membership and the user's budget (3 a second) are this node's; the room's is not.
    for _ in 0..3 {
        r.may_send(b, BOB, "tea", 0).unwrap();
    }
    assert!(matches!(
        r.may_send(b, BOB, "tea", 0),
        Err(RoomError::UserRate { per_s: 3, .. })
    ));
    assert_eq!(
        r.may_send(conn(0, 9), CAROL, "tea", 0),
        Err(RoomError::NotIn)
    );
    let left = r.close(a1, ALICE, 0);
    assert_eq!(left.iter().map(|k| &**k).collect::<Vec<_>>(), vec!["tea"]);
    assert_eq!(r.rooms_here(), vec![Arc::<str>::from("tea")]);
}

#[test]
fn cluster_a_users_joins_wait_while_the_owner_decides_on_their_first() {
    let mut r = Registry::new(config(), 0);
    let (a1, a2, b) = (conn(0, 1), conn(1, 2), conn(0, 3));
    let made = |new_user, fresh| Ok(JoinMade { new_user, fresh });
    assert_eq!(r.join_to_ask(a1, ALICE, PEER, "tea", 0), made(true, true));
    // Neither the same session again nor another of Alice's may be asked as a member's.
    assert_eq!(
        r.join_to_ask(a1, ALICE, PEER, "tea", 0),
        Err(RoomError::JoinAsked)
    );
    assert_eq!(
        r.join_to_ask(a2, ALICE, PEER, "tea", 0),
        Err(RoomError::JoinAsked)
    );
    assert_eq!(
        r.part("tea").0.sessions,
        1,
        "the refused joins made nothing"
    );
    // Other users and other rooms are not held up.
    assert_eq!(r.join_to_ask(b, BOB, PEER, "tea", 0), made(true, true));
    assert_eq!(
        r.join_to_ask(a1, ALICE, PEER, "coffee", 0),
        made(true, true)
    );
    // Also when Alice left meanwhile (the room gone here with her): only the answer ends it.
    r.leave(a1, ALICE, "coffee", 0);
    assert_eq!(
        r.join_to_ask(a2, ALICE, PEER, "coffee", 0),
        Err(RoomError::JoinAsked)
    );
    r.join_answered("coffee", ALICE);
    assert_eq!(
        r.join_to_ask(a2, ALICE, PEER, "coffee", 0),
        made(true, true)
    );
    // Admitted: her other session joins as a member's, her first again changes nothing.
    r.join_answered("tea", ALICE);
    assert_eq!(r.join_to_ask(a2, ALICE, PEER, "tea", 0), made(false, true));
    assert_eq!(r.join_to_ask(a1, ALICE, PEER, "tea", 0), made(false, false));
    r.join_answered("tea", BOB);
    r.join_answered("coffee", ALICE);
    assert!(r.asked.is_empty(), "nothing kept once answered");
}

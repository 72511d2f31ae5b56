//! Cluster mode: a room name means one room across the nodes (real `ringchat` nodes on one
//! PostgreSQL database and Redis). Members on three nodes see one member count and every
//! message once, in one `room_seq` order; `rooms.members_max` holds over the nodes; a leave or
//! a disconnect on one node shows on the others, also when it happened while the link to the
//! room's owner was down; and when the room's owner node is killed
//! (kill -9) the room carries on with a new owner, `room_seq` still rising, sends answered
//! UNAVAILABLE (never left hanging) while ownership moves. Needs the servers `scripts/test.sh`
//! starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{fresh_nodes, metric_sum, owner, two_nodes_behind_proxy};
use common::contacts::{ask, code};
use common::rooms::{WAIT, count, info, join, joined, leave, say, text, wait_for_count};
use common::{TestServer, wait_until_async};
use ringchat_backend::cluster::rendezvous::room_key;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

const IDS: [&str; 3] = ["n1", "n2", "n3"];
/// Budgets a test's bursts never meet.
const RATES: [(&str, &str); 2] = [
    ("ROOMS__MESSAGES_PER_S_MAX", "10000"),
    ("ROOMS__USER_MESSAGES_PER_S_MAX", "10000"),
];

/// The next room message of `c`, within `WAIT`, skipping other events (a node whose link to
/// a peer came back tells its sessions to Sync).
async fn next_message(c: &mut Client) -> v1::RoomMessage {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, c.next_event_untimed())
            .await
            .expect("a room message in time")
            .unwrap()
            .expect("open");
        if let Some(Body::RoomMessage(m)) = frame.body {
            return m;
        }
    }
}

/// The next `n` room messages of `c`.
async fn messages(c: &mut Client, n: usize) -> Vec<v1::RoomMessage> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_message(c).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_across_three_nodes_one_count_one_order_every_message_once() {
    let mut env = RATES.to_vec();
    env.push(("ROOMS__MEMBERS_MAX", "4"));
    let nodes = fresh_nodes("rooms", &IDS, &env);
    let room = "hall";
    // One member on each node.
    let mut members: Vec<(Client, u64)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (c, me) = node.user(&format!("member{i}")).await;
        members.push((c, me.user_id));
    }
    for (i, (c, _)) in members.iter_mut().enumerate() {
        assert_eq!(joined(c, room).await, i as u32 + 1, "member {i} joins");
    }
    for (c, _) in &mut members {
        assert_eq!(count(c, room).await, 3, "one count on every node");
    }

    // Each member sends in turn; every other member gets each message once, in room_seq
    // order, and the room_seqs are 1, 2, 3, … over the nodes.
    const ROUNDS: usize = 5;
    let mut sent: Vec<(u64, usize, String)> = Vec::new();
    for round in 0..ROUNDS {
        for (i, (c, _)) in members.iter_mut().enumerate() {
            let words = format!("r{round} from {i}");
            sent.push((say(c, room, &words).await, i, words));
        }
    }
    let seqs: Vec<u64> = sent.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one numbering"
    );
    for (i, (c, _)) in members.iter_mut().enumerate() {
        let got = messages(c, ROUNDS * 2).await;
        let want: Vec<(u64, String)> = sent
            .iter()
            .filter(|(_, from, _)| *from != i)
            .map(|(s, _, w)| (*s, w.clone()))
            .collect();
        let got: Vec<(u64, String)> = got
            .into_iter()
            .map(|m| (m.room_seq, String::from_utf8_lossy(&m.content).into_owned()))
            .collect();
        assert_eq!(got, want, "member {i}: every other message once, in order");
    }

    // members_max (4) over the nodes: a fourth user on node 0 fits, a fifth on node 1 not.
    let (mut fourth, _) = nodes[0].user("fourth").await;
    assert_eq!(joined(&mut fourth, room).await, 4);
    let (mut fifth, _) = nodes[1].user("fifth").await;
    assert_eq!(code(join(&mut fifth, room).await), ErrorCode::RoomFull);
    assert_eq!(
        count(&mut members[2].0, room).await,
        4,
        "the refused join is not counted"
    );
    // A leave on node 2 makes room, seen from node 0; then the fifth fits.
    leave(&mut members[2].0, room).await;
    wait_for_count(&mut members[0].0, room, 3).await;
    assert_eq!(joined(&mut fifth, room).await, 4);
    // A disconnect on node 0 lowers the count seen on node 1.
    drop(fourth);
    wait_for_count(&mut fifth, room, 3).await;
}

/// Sends until RoomSent, resending after the pause an UNAVAILABLE asks for; every answer comes
/// within `WAIT` (never a hang). Returns the room_seq and how many UNAVAILABLEs came first.
async fn say_until_sent(c: &mut Client, room: &str, words: &str) -> (u64, u32) {
    let deadline = tokio::time::Instant::now() + common::WAIT_DEADLINE;
    let mut unavailable = 0;
    loop {
        let answer = tokio::time::timeout(WAIT, ask(c, text(room, words)))
            .await
            .expect("a send is answered, never left hanging");
        match answer {
            Body::RoomSent(s) => return (s.room_seq, unavailable),
            Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(
                    e.retry_after_ms > 0,
                    "UNAVAILABLE says when to retry: {e:?}"
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still UNAVAILABLE at the deadline"
                );
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms.min(200))).await;
            }
            other => panic!("expected RoomSent or UNAVAILABLE, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_carries_on_when_its_owner_node_is_killed() {
    let mut env = RATES.to_vec();
    env.push(("CLUSTER__FORWARD_TIMEOUT_MS", "1000"));
    let mut nodes: Vec<TestServer> = fresh_nodes("rooms_kill", &IDS, &env);
    let room = "hall";
    let lost = owner(room_key(room), &IDS);
    let stay: Vec<usize> = (0..IDS.len()).filter(|i| *i != lost).collect();
    let (mut on_owner, _) = nodes[lost].user("on-owner").await;
    let (mut a, _) = nodes[stay[0]].user("stays-a").await;
    let (mut b, _) = nodes[stay[1]].user("stays-b").await;
    assert_eq!(joined(&mut on_owner, room).await, 1);
    assert_eq!(joined(&mut a, room).await, 2);
    assert_eq!(joined(&mut b, room).await, 3);
    let mut last = 0;
    for i in 0..3 {
        last = say(&mut a, room, &format!("before {i}")).await;
    }
    let before: Vec<u64> = messages(&mut b, 3)
        .await
        .iter()
        .map(|m| m.room_seq)
        .collect();
    assert_eq!(before, vec![1, 2, 3]);

    nodes[lost].kill9();
    drop(on_owner);
    // Right away, sends get UNAVAILABLE (the link is down or the owner silent) or, once the
    // view has moved ownership, RoomSent with a room_seq past everything seen.
    let (seq, refused) = say_until_sent(&mut a, room, "after").await;
    assert!(
        refused > 0,
        "the owner is gone for node_ttl_ms before another takes over: UNAVAILABLE meanwhile"
    );
    assert!(seq > last, "room_seq goes on rising: {seq} after {last}");
    // Both parts reach the new owner (every node re-registers on the view change).
    wait_for_count(&mut a, room, 2).await;
    wait_for_count(&mut b, room, 2).await;
    let (next, _) = say_until_sent(&mut a, room, "settled").await;
    assert!(next > seq);
    // b got whatever reached it in rising room_seq order, "settled" among it, nothing twice.
    let mut got = Vec::new();
    loop {
        let m = next_message(&mut b).await;
        let done = m.content.as_ref() == b"settled";
        got.push(m.room_seq);
        if done {
            break;
        }
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "rising: {got:?}");
    assert!(got[0] > last, "after what b had: {got:?}");
    assert_eq!(got.last(), Some(&next));
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len());
}

/// A leave on n2 while n2's link to the room's owner n1 is down (a proxy in front of n1's gRPC
/// listener is cut) empties the room on n2: once the link is back, n2 sends that empty part
/// again and n1 counts one member (not the one that left, for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_while_the_owners_link_is_down_reaches_the_owner_once_it_is_back() {
    let ids = ["n1", "n2"];
    let fast = [("CLUSTER__PEER_BACKOFF_MAX_MS", "200")];
    let (nodes, proxy) = two_nodes_behind_proxy("rooms_cut", 0, &fast).await;
    let room = (0..)
        .map(|i| format!("hall{i}"))
        .find(|r| owner(room_key(r), &ids) == 0)
        .expect("n1 owns some room");
    let (mut on_owner, _) = nodes[0].user("on-owner").await;
    let (mut away, _) = nodes[1].user("away").await;
    assert_eq!(joined(&mut on_owner, &room).await, 1);
    assert_eq!(joined(&mut away, &room).await, 2);

    let downs = |n: &TestServer| metric_sum(n, "ringchat_cluster_peer_links_down_total");
    let before = downs(&nodes[1]);
    proxy.cut();
    wait_until_async("n2 sees its link to n1 go down", || {
        downs(&nodes[1]) > before
    })
    .await;
    // Answered on n2 at once; its part for n1 cannot reach it now.
    leave(&mut away, &room).await;
    proxy.restore();
    wait_for_count(&mut on_owner, &room, 1).await;
}

/// A user's second join of a room while the owner has not yet answered their first (held on
/// its way, the room full) is refused UNAVAILABLE at once: from the same session, and from
/// another session of the user on that node. Asked as a member's, it would be admitted
/// uncounted: the same session answered RoomJoined (past `members_max`) while the refusal of
/// its first join took it out of the room (its RoomSend then NOT_FOUND); another session let
/// in past `members_max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_the_users_first_is_being_asked_is_refused_not_let_in_uncounted() {
    let ids = ["n1", "n2"];
    let (nodes, proxy) =
        two_nodes_behind_proxy("rooms_twice", 0, &[("ROOMS__MEMBERS_MAX", "1")]).await;
    let room = (0..)
        .map(|i| format!("hall{i}"))
        .find(|r| owner(room_key(r), &ids) == 0)
        .expect("n1 owns some room");
    let (mut on_owner, _) = nodes[0].user("on-owner").await;
    assert_eq!(joined(&mut on_owner, &room).await, 1, "the room is full");
    let (mut b, _) = nodes[1].device("bob", "bob-phone").await;
    let (mut b2, _) = nodes[1].device("bob", "bob-laptop").await;
    let unavailable = |reply: Body| {
        let e = common::contacts::error(reply);
        assert_eq!(e.code, ErrorCode::Unavailable as i32, "{e:?}");
        assert!(e.retry_after_ms > 0, "says when to retry: {e:?}");
    };
    // The answer to `c`'s info of a room it is not in (n2 answers it at once): n2's request
    // loop takes a connection's requests in order, so the requests before it were taken.
    async fn taken(c: &mut Client) {
        assert_eq!(code(info(c, "elsewhere").await), ErrorCode::NotFound);
    }
    let join_body = || Body::RoomJoin(v1::RoomJoin { room: room.clone() });

    // Two joins back to back from one session, the first's ask held on its way to n1.
    proxy.hold();
    let first = b.send(join_body()).await.unwrap();
    let second = b.send(join_body()).await.unwrap();
    taken(&mut b).await;
    proxy.release();
    assert_eq!(code(b.reply_to(first).await.unwrap()), ErrorCode::RoomFull);
    unavailable(b.reply_to(second).await.unwrap());
    // As both answers say, the session is not in the room.
    assert_eq!(code(info(&mut b, &room).await), ErrorCode::NotFound);
    assert_eq!(
        code(ask(&mut b, text(&room, "in?")).await),
        ErrorCode::NotFound
    );

    // One session's join held, another session of the same user joins meanwhile.
    proxy.hold();
    let first = b.send(join_body()).await.unwrap();
    taken(&mut b).await;
    let other = b2.send(join_body()).await.unwrap();
    taken(&mut b2).await;
    proxy.release();
    assert_eq!(code(b.reply_to(first).await.unwrap()), ErrorCode::RoomFull);
    unavailable(b2.reply_to(other).await.unwrap());
    assert_eq!(code(info(&mut b2, &room).await), ErrorCode::NotFound);
    wait_for_count(&mut on_owner, &room, 1).await;

    // Once the room has space (the leave is on its owner: counted at once), the retry gets in
    // and may send.
    leave(&mut on_owner, &room).await;
    assert_eq!(joined(&mut b2, &room).await, 1);
    say(&mut b2, &room, "in").await;
}

//! Read state in groups over the real server: GroupReadCount from the histogram the sequencer
//! keeps (exact inside `groups.read_count_window`, a lower bound below it, following reads,
//! sends, joins and leaves, and kept across a restart); receipts pushed to the group only up
//! to `groups.receipts_members_max` members.

mod common;

use common::TestServer;
use common::contacts::{ask, code};
use common::groups::{ack, create_id, join, leave, ok, read_count, send};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// (read_count, exact) at `seq`, and the member count.
async fn counted(c: &mut ringchat_bench::client::Client, g: u64, seq: u64) -> (u32, bool, u32) {
    let r = read_count(c, g, seq).await;
    assert_eq!((r.conversation_id, r.seq), (g, seq));
    (r.read_count, r.exact, r.member_count)
}

#[tokio::test]
async fn read_counts_are_exact_in_the_window_and_follow_the_members() {
    let mut server = TestServer::start(&[("GROUPS__READ_COUNT_WINDOW", "4")]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let (mut d, _dave) = server.user("dave").await;
    let g = create_id(&mut a, &[bob.user_id, carol.user_id], v1::JoinPolicy::Open).await;
    assert_eq!(
        counted(&mut a, g, 1).await,
        (0, true, 3),
        "nobody read the CREATED event"
    );
    for i in 0..10 {
        ack(send(&mut a, g, &format!("m{i}"), "x").await);
    }
    // Alice's own sends marked seq 11 read for her; Bob reads it all, Carol up to 3.
    b.read(g, 11).await.unwrap();
    c.read(g, 3).await.unwrap();
    assert_eq!(counted(&mut a, g, 11).await, (2, true, 3));
    assert_eq!(
        counted(&mut b, g, 3).await,
        (2, false, 3),
        "3 is below [8, 12)"
    );
    assert_eq!(counted(&mut c, g, 0).await, (3, true, 3));
    c.read(g, 10).await.unwrap();
    assert_eq!(
        counted(&mut a, g, 3).await,
        (3, true, 3),
        "nobody below the window"
    );
    assert_eq!(counted(&mut a, g, 10).await, (3, true, 3));
    assert_eq!(counted(&mut a, g, 11).await, (2, true, 3));
    // Dave joins (JOINED at 12): his read cursor starts right before it, at 11, so he
    // counts for everything before; Bob leaves (LEFT at 13).
    ok(ask(&mut d, join(g)).await);
    assert_eq!(
        counted(&mut a, g, 3).await,
        (4, true, 4),
        "nobody below the window"
    );
    assert_eq!(counted(&mut a, g, 12).await, (0, true, 4));
    ok(ask(&mut b, leave(g)).await);
    assert_eq!(counted(&mut a, g, 11).await, (2, true, 3));
    assert_eq!(counted(&mut a, g, 10).await, (3, true, 3));
    // A former member, like a stranger, gets no count.
    let refused = ask(
        &mut b,
        Body::GroupReadCount(v1::GroupReadCount {
            conversation_id: g,
            seq: 1,
        }),
    )
    .await;
    assert_eq!(code(refused), ErrorCode::NotFound);
    // Kept across a restart.
    server.stop();
    server.restart();
    let (mut a, _) = server.device("alice", "alice-dev1").await;
    assert_eq!(counted(&mut a, g, 10).await, (3, true, 3));
    assert_eq!(counted(&mut a, g, 3).await, (3, true, 3));
}

#[tokio::test]
async fn receipts_reach_the_group_only_while_it_is_small() {
    // One shard: frames reach a connection in commit order.
    let server = TestServer::start(&[
        ("GROUPS__RECEIPTS_MEMBERS_MAX", "2"),
        ("GATEWAY__CORES", "[0]"),
    ]);
    let (mut a, _alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, carol) = server.user("carol").await;
    let big = create_id(&mut a, &[bob.user_id, carol.user_id], v1::JoinPolicy::Open).await;
    let small = create_id(&mut a, &[bob.user_id], v1::JoinPolicy::Open).await;
    let in_big = ack(send(&mut a, big, "b", "x").await).seq;
    let in_small = ack(send(&mut a, small, "s", "x").await).seq;
    c.read(big, in_big).await.unwrap();
    b.read(small, in_small).await.unwrap();
    // Alice gets Bob's receipt of the small group, and none of the big one before it.
    loop {
        let frame = a.next_event().await.unwrap().expect("open");
        if let Some(Body::Receipt(r)) = frame.body {
            assert_eq!(
                (r.conversation_id, r.user_id, r.read_seq),
                (small, bob.user_id, in_small),
                "only the small group's receipt"
            );
            break;
        }
    }
}

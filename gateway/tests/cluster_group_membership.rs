//! Cluster mode: what another node's group frames may reach here (real `ringchat` nodes on one
//! PostgreSQL database and Redis). A member removed while the owner's frames to this node were
//! being dropped gets nothing past its REMOVED event; a member who logs in here while the
//! owner's frames of earlier messages are still on their way is not pushed those; typing into
//! one's own system conversation is refused before it costs a read or a link item. Needs the
//! servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::time::Duration;

use common::WAIT_DEADLINE;
use common::cluster::{acked, fresh_nodes, metric_sum, owner, two_nodes_behind_proxy};
use common::contacts::{ask, code};
use common::groups::{create_id, frames_so_far, invite, ok, push_at, remove, send_body};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::time::Instant;

const IDS: [&str; 2] = ["n1", "n2"];

/// A group with `members`, made by `c`, that node `by` (an index into `IDS`) owns.
async fn group_owned_by(c: &mut Client, members: &[u64], by: usize) -> u64 {
    for _ in 0..64 {
        let g = create_id(c, members, v1::JoinPolicy::Open).await;
        if owner(g, &IDS) == by {
            return g;
        }
    }
    panic!("none of 64 groups is owned by {}", IDS[by]);
}

/// Whether `c` gets a push of group `g` at or past `seq` within `wait`; every frame read on
/// the way is added to `seen`.
async fn pushed_within(
    c: &mut Client,
    g: u64,
    seq: u64,
    wait: Duration,
    seen: &mut Vec<v1::Frame>,
) -> bool {
    tokio::time::timeout(wait, async {
        loop {
            let frame = c.next_event_untimed().await.expect("read").expect("open");
            let done = matches!(&frame.body, Some(Body::Push(v1::Push { message: Some(m) }))
                if m.conversation_id == g && m.seq >= seq);
            seen.push(frame);
            if done {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// The pushes of group `g` among `frames`.
fn pushes_of(frames: Vec<v1::Frame>, g: u64) -> Vec<v1::Message> {
    frames
        .into_iter()
        .filter_map(|f| match f.body {
            Some(Body::Push(v1::Push { message: Some(m) })) if m.conversation_id == g => Some(m),
            _ => None,
        })
        .collect()
}

/// Sends `after-{i}` into `g` until `witness` (a member on the other node) is pushed one:
/// the owner's frames flow to that node again. Returns that message's seq.
async fn until_frames_flow(admin: &mut Client, witness: &mut Client, g: u64) -> u64 {
    let deadline = Instant::now() + WAIT_DEADLINE;
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "no group push reached the other node in time"
        );
        let id = format!("after-{i}");
        let ack = acked(admin, send_body(g, &id, &id, &[], false)).await;
        if pushed_within(
            witness,
            g,
            ack.seq,
            Duration::from_millis(500),
            &mut Vec::new(),
        )
        .await
        {
            return ack.seq;
        }
    }
    unreachable!()
}

/// Finding 1: `member` on n2 is removed from a group n1 owns in the middle of a burst that
/// overflows n1's queue to n2 (the batch with the REMOVED event and the `MemberChange` is
/// dropped); nothing of the group past the REMOVED seq is pushed to it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_its_node_missed_the_change_gets_nothing_after_it() {
    let nodes = fresh_nodes(
        "grp_removed",
        &IDS,
        &[
            ("CLUSTER__PEER_QUEUE_ITEMS_MAX", "16"),
            ("CLUSTER__SYNC_HINT_INTERVAL_MS", "200"),
            ("GROUPS__WRITES_PER_MIN_MAX", "100000"),
        ],
    );
    let (mut admin, _) = nodes[0].user("admin").await;
    let (mut member, m) = nodes[1].user("member").await;
    let (mut witness, w) = nodes[1].user("witness").await;
    let g = group_owned_by(&mut admin, &[m.user_id, w.user_id], 0).await;
    // Both are in n2's audience of the group.
    let hello = acked(&mut admin, send_body(g, "hello", "hello", &[], false)).await;
    push_at(&mut member, g, hello.seq).await;
    push_at(&mut witness, g, hello.seq).await;

    // One pipelined burst: messages, the removal, more messages. Its commit groups carry far
    // more than 16 items for n2: they are dropped whole, the removal's among them.
    let mut sends = Vec::new();
    for i in 0..150 {
        let id = format!("pre-{i}");
        sends.push(
            admin
                .send(send_body(g, &id, &id, &[], false))
                .await
                .unwrap(),
        );
    }
    let removal = admin.send(remove(g, &[m.user_id])).await.unwrap();
    for i in 0..150 {
        let id = format!("post-{i}");
        sends.push(
            admin
                .send(send_body(g, &id, &id, &[], false))
                .await
                .unwrap(),
        );
    }
    let removed_seq = ok(admin.reply_to(removal).await.unwrap()).event_seq;
    assert!(removed_seq > hello.seq);
    for request in sends {
        let reply = admin.reply_to(request).await.unwrap();
        assert!(matches!(reply, Body::SendAck(_)), "{reply:?}");
    }

    let after = until_frames_flow(&mut admin, &mut witness, g).await;
    assert!(
        metric_sum(&nodes[1], "ringchat_cluster_peer_missed_total") > 0.0,
        "the burst overflowed n1's queue to n2"
    );
    // The member's pushes up to now: whatever it got, nothing past its removal.
    let leaked: Vec<u64> = pushes_of(frames_so_far(&mut member).await, g)
        .iter()
        .map(|m| m.seq)
        .filter(|seq| *seq > removed_seq)
        .collect();
    assert!(
        leaked.is_empty(),
        "removed at seq {removed_seq}, pushed seqs {leaked:?} (the last sent: {after})"
    );
}

/// Finding 2: a group n1 owns hides its history. While n1's frames to n2 are held, a message
/// is sent, then a user is invited, who then logs in on n2 (its login reads the store: a
/// member from the invite on). When the held frames arrive, the earlier message is not pushed
/// to the new member; the later ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_logging_in_on_another_node_is_not_pushed_messages_from_before_it_joined() {
    let (nodes, proxy) = two_nodes_behind_proxy("grp_late", 1, &[]).await;
    let (mut admin, _) = nodes[0].user("admin").await;
    let (mut witness, w) = nodes[1].user("witness").await;
    // The newcomer's account exists; it is not online while it is invited.
    let (newcomer, u) = nodes[1].user("newcomer").await;
    drop(newcomer);
    let g = group_owned_by(&mut admin, &[w.user_id], 0).await;
    until_frames_flow(&mut admin, &mut witness, g).await;

    let missed = || metric_sum(&nodes[1], "ringchat_cluster_peer_missed_total");
    let missed_before = missed();
    let held = || metric_sum(&nodes[1], "ringchat_group_remote_frames_held_total");
    let held_before = held();
    proxy.hold();
    let before = acked(&mut admin, send_body(g, "before", "before", &[], false)).await;
    let invited = ok(ask(&mut admin, invite(g, &[u.user_id])).await);
    assert!(invited.event_seq > before.seq);
    let (mut newcomer, _) = nodes[1].device("newcomer", "newcomer-dev2").await;
    let visible_from = match ask(
        &mut newcomer,
        Body::GroupInfo(v1::GroupInfo { conversation_id: g }),
    )
    .await
    {
        Body::Group(info) => info.my_visible_from_seq,
        other => panic!("expected Group, got {other:?}"),
    };
    assert!(
        visible_from > before.seq,
        "the history before the invite is hidden"
    );
    proxy.release();

    let after = until_frames_flow(&mut admin, &mut witness, g).await;
    // Everything the newcomer was pushed up to what came after it joined.
    let mut frames = Vec::new();
    assert!(
        pushed_within(&mut newcomer, g, after, WAIT_DEADLINE, &mut frames).await,
        "the new member is pushed what comes after it joined"
    );
    let hidden: Vec<u64> = pushes_of(frames, g)
        .iter()
        .map(|m| m.seq)
        .filter(|seq| *seq < visible_from)
        .collect();
    assert!(
        hidden.is_empty(),
        "visible from seq {visible_from}, pushed hidden seqs {hidden:?}"
    );
    assert_eq!(
        missed(),
        missed_before,
        "nothing was lost on the way: the frames were only late"
    );
    assert_eq!(
        held(),
        held_before,
        "no repair held frames: the floor kept the late one out"
    );
}

/// Finding 3: `Typing` in one's own system conversation is refused (FORBIDDEN), as `Send`
/// there is, and puts nothing on the link to the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_ones_own_system_conversation_is_refused_and_not_relayed() {
    let nodes = fresh_nodes("sys_typing", &IDS, &[]);
    let (mut me, login) = nodes[0].user("typist").await;
    let system = (2u64 << 62) | login.user_id;
    let sent_before = metric_sum(&nodes[0], "ringchat_cluster_peer_items_sent_total");
    let mut requests = Vec::new();
    for _ in 0..1_000 {
        requests.push(
            me.send(Body::Typing(v1::Typing {
                conversation_id: system,
                from_user_id: 0,
            }))
            .await
            .unwrap(),
        );
    }
    for request in requests {
        assert_eq!(
            code(me.reply_to(request).await.expect("an answer")),
            ErrorCode::Forbidden
        );
    }
    me.ping().await.unwrap();
    assert_eq!(
        metric_sum(&nodes[0], "ringchat_cluster_peer_items_sent_total"),
        sent_before,
        "no typing item went to n2"
    );
}

//! Cluster mode: contacts rules hold whichever node applies a write (real `ringchat` nodes on
//! one PostgreSQL database and Redis). A user's DM policy is set by the node their device is
//! on; conversations are written by their owners, which may have read the old policy before.
//! Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{acked, direct, fresh_nodes, owner};
use common::contacts::{request, set_privacy};
use common::groups::create;
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

const IDS: [&str; 2] = ["n1", "n2"];

/// Strangers on `node` whose direct conversation with `with` that node owns, `n` of them.
async fn strangers_owned_by(
    node: &TestServer,
    at: usize,
    with: u64,
    n: usize,
) -> Vec<(Client, u64)> {
    let mut out = Vec::new();
    for i in 0..64 {
        let (c, login) = node.user(&format!("stranger{i}")).await;
        if owner(conversation_id(with, login.user_id), &IDS) == at {
            out.push((c, login.user_id));
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("fewer than {n} of 64 users' conversations with {with} are owned by node {at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_policy_set_on_one_node_holds_where_conversations_are_owned_on_another() {
    let nodes = fresh_nodes("contacts", &IDS, &[]);
    let (mut bob, b) = nodes[0].user("bob").await;
    let mut strangers = strangers_owned_by(&nodes[1], 1, b.user_id, 3).await;
    // n2 owns carol's conversation with bob: her first message makes n2 read bob's policy.
    let (carol, _) = &mut strangers[0];
    let first = acked(carol, direct(b.user_id, "hello")).await;
    assert_eq!(first.seq, 1);

    // Bob, on n1, takes new conversations from friends only from now on.
    assert!(matches!(
        set_privacy(&mut bob, v1::DmPolicy::Friends).await,
        Body::Privacy(_)
    ));
    // Dave's first message is written by n2, which read bob's policy before the change.
    let (dave, _) = &mut strangers[1];
    match dave
        .request(direct(b.user_id, "hi bob"))
        .await
        .expect("a reply")
    {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::NotAllowed as i32, "{e:?}"),
        other => panic!("a stranger opened a conversation with a friends-only user: {other:?}"),
    }
    // Carol's conversation exists: she may go on writing in it.
    let (carol, _) = &mut strangers[0];
    assert_eq!(acked(carol, direct(b.user_id, "again")).await.seq, 2);
    // Nor may a stranger on n2 put bob in a group.
    let (erin, _) = &mut strangers[2];
    let created = create(erin, "g", &[b.user_id], v1::JoinPolicy::InviteOnly, false).await;
    assert_eq!(
        created.results,
        [v1::MemberResult {
            user_id: b.user_id,
            code: ErrorCode::NotAllowed as i32
        }]
    );
}

/// Strangers on `node`, `n` whose conversation with `with` node 0 owns and `n` node 1 does.
async fn strangers_on_both_owners(node: &TestServer, with: u64, n: usize) -> Vec<(Client, u64)> {
    let (mut by_first, mut by_second) = (Vec::new(), Vec::new());
    for i in 0..128 {
        let (c, login) = node.user(&format!("asker{i}")).await;
        let side = match owner(conversation_id(with, login.user_id), &IDS) {
            0 => &mut by_first,
            _ => &mut by_second,
        };
        if side.len() < n {
            side.push((c, login.user_id));
        }
        if by_first.len() == n && by_second.len() == n {
            by_first.append(&mut by_second);
            return by_first;
        }
    }
    panic!("fewer than {n} of 128 users' conversations with {with} on each owner");
}

/// Friend requests to one user are written by the owners of each pair: both nodes change the
/// user's request count at once, and every change counts (the limit on requests received
/// holds exactly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_written_by_two_owners_at_once_all_count_toward_the_limit() {
    const ASKERS_PER_OWNER: usize = 4;
    let received_max = (2 * ASKERS_PER_OWNER).to_string();
    let nodes = fresh_nodes(
        "contacts",
        &IDS,
        &[("CONTACTS__FRIEND_REQUESTS_RECEIVED_MAX", &received_max)],
    );
    let (_bob, b) = nodes[0].user("bob").await;
    let mut askers = strangers_on_both_owners(&nodes[1], b.user_id, ASKERS_PER_OWNER).await;
    let answers =
        futures_util::future::join_all(askers.iter_mut().map(|(c, _)| request(c, b.user_id, "")))
            .await;
    for answer in answers {
        assert!(matches!(answer, Body::FriendOk(_)), "{answer:?}");
    }
    // Bob has received as many requests as he may: the next is refused.
    let (mut late, _) = nodes[1].user("late").await;
    match request(&mut late, b.user_id, "").await {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::TooManyFriendRequests as i32, "{e:?}"),
        other => panic!("a request past friend_requests_received_max: {other:?}"),
    }
}

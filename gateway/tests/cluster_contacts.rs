//! Cluster mode: contacts rules hold whichever node applies a write (real `ringchat` nodes on
//! one PostgreSQL database and Redis). A user's DM policy is set by the node their device is
//! on; conversations are written by their owners, which may have read the old policy before.
//! Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{acked, direct, owner, redis_url, start_nodes, unique, wait_for_views};
use common::contacts::set_privacy;
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
    let db = common::store::fresh_database();
    let prefix = format!("rc_contacts_{}", unique());
    let nodes: Vec<TestServer> = start_nodes(&db, &redis_url(), &prefix, &IDS)
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, IDS.len());
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

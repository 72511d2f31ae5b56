//! Cluster mode: system notifications are written by the owner of each recipient's system
//! conversation, whichever node runs the job (real `ringchat` nodes on one PostgreSQL database
//! and Redis). Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{fresh_nodes, metric_sum, owner};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1;
use serde_json::json;

fn system_conv(user: u64) -> u64 {
    (2 << 62) | user
}

fn fenced(nodes: &[TestServer]) -> f64 {
    nodes
        .iter()
        .map(|n| metric_sum(n, "ringchat_cluster_fenced_groups_total"))
        .sum()
}

/// A notification from n1 to users on n2, six of whose system conversations n2 owns (the
/// others n1 owns): every recipient gets it (done == N); they read it (a write of their system
/// conversation by its owner); a second notification from n1 also completes; no commit group
/// is fenced on either node (n1 never writes a system conversation n2 owns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_from_one_node_is_written_by_each_recipients_owner() {
    let ids = ["n1", "n2"];
    let nodes = fresh_nodes("notify", &ids, &[("NOTIFICATIONS__BATCH_USERS", "4")]);
    let mut owned_by_n2: Vec<(Client, u64)> = Vec::new();
    let mut owned_by_n1: Vec<(Client, u64)> = Vec::new();
    for i in 0..64 {
        if owned_by_n2.len() >= 6 && owned_by_n1.len() >= 2 {
            break;
        }
        let (c, login) = nodes[1].user(&format!("user{i}")).await;
        let list = match owner(system_conv(login.user_id), &ids) {
            1 => &mut owned_by_n2,
            _ => &mut owned_by_n1,
        };
        if list.len() < 6 {
            list.push((c, login.user_id));
        }
    }
    assert!(
        owned_by_n2.len() >= 6 && owned_by_n1.len() >= 2,
        "not enough users"
    );
    let mut users: Vec<(Client, u64)> = owned_by_n2.into_iter().chain(owned_by_n1).collect();
    let ids_json: Vec<u64> = users.iter().map(|(_, u)| *u).collect();
    let admin = nodes[0].api_key("ops", "admin");
    let fenced_before = fenced(&nodes);
    for (round, text) in [(1, "first"), (2, "second")] {
        let (status, accepted) = admin.post(
            "/api/notifications",
            json!({"text": text, "to": {"users": ids_json}}),
        );
        assert_eq!(status, 202, "{accepted}");
        let view = admin.notification_when_done(accepted["notification_id"].as_str().unwrap());
        assert_eq!(view["state"], "done", "{view}");
        assert_eq!(view["recipients_done"], ids_json.len(), "{view}");
        for (c, user) in &mut users {
            let pushed = c.next_push().await.expect("pushed");
            assert_eq!(
                (pushed.conversation_id, pushed.seq),
                (system_conv(*user), round)
            );
            // Read: a write of the system conversation, by its owner.
            let reply = c
                .request(Body::Read(v1::Read {
                    conversation_id: system_conv(*user),
                    seq: pushed.seq,
                }))
                .await
                .expect("a reply");
            assert!(!matches!(reply, Body::Error(_)), "{reply:?}");
        }
    }
    assert_eq!(fenced(&nodes), fenced_before, "no commit group fenced");
    for (c, user) in &mut users {
        let got = c.sync_all(system_conv(*user), 0).await.expect("sync");
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    }
}

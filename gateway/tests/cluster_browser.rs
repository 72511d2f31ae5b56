//! The chat page started from the status service, in a real browser (issue 14): two chat
//! nodes and a status-only node on PostgreSQL and Redis; `web-tests/cluster.e2e.mjs` opens the
//! page on the status node, whose `/assign` sends each page's WebSocket to a chat node; Alice's
//! message reaches Bob; Bob's node is stopped and his page reconnects through the status
//! service to the node that is left. The status node serves no `/files`: its pages offer no
//! attach button and no download. Needs Chromium and playwright-core (like browser.rs) and
//! the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use common::browser::run_script;
use common::cluster::{StatusNode, redis_url, start_nodes, unique};
use common::{http_get, wait_until};

#[test]
fn a_page_opened_on_the_status_node_chats_through_the_chat_nodes_and_moves_when_one_stops() {
    let db = common::store::fresh_database();
    let prefix = format!("br_{}", unique());
    let mut nodes = start_nodes(&db, &redis_url(), &prefix, &["c1", "c2"]);
    for (_, s) in &nodes {
        wait_until("both chat nodes see each other", || {
            s.metric("ringchat_cluster_nodes") == 2.0
        });
    }
    let status = StatusNode::start(&db, &redis_url(), &prefix);
    let addr = |s: &common::TestServer| format!("ws://{}/ws", s.ws);
    let chat_nodes: Vec<String> = nodes.iter().map(|(_, s)| addr(s)).collect();
    wait_until("the status node sees both chat nodes", || {
        let answers: Vec<String> = (0..4).map(|_| http_get(status.ws, "/assign")).collect();
        chat_nodes
            .iter()
            .all(|a| answers.iter().any(|x| x.contains(a.as_str())))
    });
    run_script(
        "cluster.e2e.mjs",
        &format!("http://{}/", status.ws),
        &[("CHAT_NODES", chat_nodes.join(","))],
        &["cluster-chat", "cluster-files-elsewhere", "cluster-moved"],
        |command| {
            let gone = command
                .strip_prefix("stop-node ")
                .unwrap_or_else(|| panic!("the browser test asked for {command:?}"));
            let (_, node) = nodes
                .iter_mut()
                .find(|(_, s)| addr(s) == gone)
                .unwrap_or_else(|| panic!("{gone} is no chat node"));
            // SIGTERM: the node deregisters at once, its clients are told and reconnect.
            node.stop();
            "stopped".to_owned()
        },
    );
}

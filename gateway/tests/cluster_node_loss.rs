//! Node loss under load: three real `ringchat` nodes on one PostgreSQL database and Redis,
//! `ringchat-bench`'s cluster scenario driving cross-node pairs and a group through the status
//! service, and one node killed with SIGKILL mid-load. Its clients must reconnect through the
//! status service to the survivors, the conversations it owned must move (the new owner fences
//! it by epoch), the load must finish, and afterwards every acked message must be stored exactly
//! once with gap-free seqs, as Sync on a surviving node shows. Needs the servers
//! `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::cluster::{redis_url, start_nodes, unique, wait_for_views};
use common::kill9::assert_gap_free;
use common::{PASSWORD, TestServer, wait_until};
use ringchat_bench::scenario::Progress;
use ringchat_bench::scenario::cluster::{self, ClusterConfig, Placement, status::Retry};

const PAIRS: usize = 6;
const GROUP_MEMBERS: usize = 6;
/// Acks before the kill: the load is well under way.
const ACKS_BEFORE_KILL: u64 = 60;
const NODES: [&str; 3] = ["n1", "n2", "n3"];

#[test]
fn a_node_killed_under_load_loses_no_acked_message_and_its_clients_come_back() {
    let db = common::store::fresh_database();
    let prefix = format!("rc_loss_{}", unique());
    let mut nodes: Vec<TestServer> = start_nodes(&db, &redis_url(), &prefix, &NODES)
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, 3);

    let cfg = ClusterConfig {
        status_urls: nodes
            .iter()
            .map(|n| format!("http://{}/assign", n.ws))
            .collect(),
        pairs: PAIRS,
        placement: Placement::Cross,
        group_members: GROUP_MEMBERS,
        group_only: false,
        size: 64,
        window: 4,
        duration: Duration::from_secs(8),
        drain_timeout: Duration::from_secs(15),
        user_prefix: "loss_".into(),
        password: PASSWORD.into(),
        retry: Retry {
            deadline: Duration::from_secs(15),
            ..Retry::default()
        },
        server_pids: Vec::new(),
        expect_drops: true,
    };
    let progress = Arc::new(Progress::default());
    let load = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cluster::run(cfg, progress))
        })
    };
    wait_until("the load is under way", || {
        progress.done.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL
    });
    assert!(!load.is_finished(), "the load ended before the kill");
    let victim = 2;
    nodes[victim].kill9();
    let acked_at_kill = progress.done.load(Ordering::Relaxed);

    let r = load.join().expect("the load thread").expect("the run");
    eprint!("{}", cluster::table(&r));
    assert!(r.acked > acked_at_kill, "the load went on after the kill");
    assert_eq!(r.cross_node_pairs, PAIRS, "every pair spans two nodes");
    assert!(r.group_nodes >= 2, "the group spans nodes");
    let on_victim = r
        .clients_per_node_start
        .get(NODES[victim])
        .copied()
        .unwrap_or(0);
    assert!(on_victim > 0, "the killed node had clients: {r:?}");
    assert!(
        r.clients_reconnected >= on_victim,
        "every client of the killed node reconnected: {r:?}"
    );
    assert!(!r.clients_per_node_end.contains_key(NODES[victim]));
    assert_eq!(r.unserved_clients, 0);
    assert!(r.served_again_ms.is_some());
    assert!(r.clean(), "{r:#?}");
    assert_eq!(r.conversations_checked, PAIRS + 1);

    // Independently of the bench: Sync on a surviving node shows every acked message once, at
    // its acked seq, gap-free.
    let mut by_conv: BTreeMap<u64, Vec<&cluster::Acked>> = BTreeMap::new();
    for a in &r.acked_messages {
        by_conv.entry(a.conversation_id).or_default().push(a);
    }
    assert_eq!(
        by_conv.len(),
        PAIRS + 1,
        "every pair and the group got acks"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // User a0 is in pair 0 and the group; each pair's first user reads its own pair.
        for (conv, acked) in &by_conv {
            let reader = acked[0].sender & !1;
            let name = format!("loss_a{}", reader / 2);
            let (mut c, _) = nodes[0].device(&name, "checker").await;
            let stored = c.sync_all(*conv, 0).await.expect("sync");
            assert_gap_free(&stored);
            let ids: HashMap<&str, u64> = stored
                .iter()
                .filter(|m| !m.client_msg_id.is_empty())
                .map(|m| (m.client_msg_id.as_str(), m.seq))
                .collect();
            let unique: HashSet<&str> = ids.keys().copied().collect();
            assert_eq!(
                unique.len(),
                stored
                    .iter()
                    .filter(|m| !m.client_msg_id.is_empty())
                    .count(),
                "no client_msg_id stored twice in {conv}"
            );
            for a in acked {
                assert_eq!(
                    ids.get(a.client_msg_id.as_str()),
                    Some(&a.seq),
                    "acked {} in {conv}",
                    a.client_msg_id
                );
            }
        }
    });
    // The killed node's conversations moved: the survivors forwarded or took them over, and
    // still serve.
    for n in &nodes[..victim] {
        wait_until("the survivors see two nodes", || {
            n.metric("ringchat_cluster_nodes") == 2.0
        });
    }
    eprintln!(
        "every client served again {} ms after the first drop; {} reconnects",
        r.served_again_ms.unwrap_or_default(),
        r.reconnects
    );
}

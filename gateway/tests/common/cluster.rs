//! Cluster tests' harness: real `ringchat` nodes on one PostgreSQL database and Redis (the
//! servers `scripts/test.sh` starts: RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL). The
//! database: `common::store::fresh_database`.

use super::{TestServer, wait_until};

pub const HEARTBEAT_MS: &str = "200";
pub const NODE_TTL_MS: u64 = 1_500;
/// `cluster.peer_secret` of every test node.
pub const PEER_SECRET: &str = "test-peer-secret-0123456789abcdef";

pub fn redis_url() -> String {
    std::env::var("RINGCHAT_TEST_REDIS_URL").expect(
        "RINGCHAT_TEST_REDIS_URL is not set: this test needs Redis (`bash scripts/test.sh` \
         starts one; scripts/redis-test-server.sh)",
    )
}

pub fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node's settings: the shared store and Redis, its own id, ports and key prefix.
pub struct NodeEnv {
    pub vars: Vec<(String, String)>,
}

impl NodeEnv {
    pub fn new(db: &str, redis: &str, prefix: &str, id: &&str) -> Self {
        let (ws, grpc) = (free_port(), free_port());
        let vars = [
            ("STORAGE__ENGINE", "postgres".to_owned()),
            ("STORAGE__POSTGRES__URL", db.to_owned()),
            ("CLUSTER__ENABLED", "true".to_owned()),
            ("CLUSTER__NODE_ID", (*id).to_owned()),
            ("CLUSTER__REDIS_URL", redis.to_owned()),
            ("CLUSTER__PEER_SECRET", PEER_SECRET.to_owned()),
            ("CLUSTER__REDIS_KEY_PREFIX", prefix.to_owned()),
            ("CLUSTER__GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
            (
                "CLUSTER__CLIENT_ADDRS",
                format!("[\"ws://127.0.0.1:{ws}/ws\"]"),
            ),
            ("CLUSTER__HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_owned()),
            ("CLUSTER__NODE_TTL_MS", NODE_TTL_MS.to_string()),
            ("CLUSTER__REDIS_TIMEOUT_MS", "150".to_owned()),
            ("CLUSTER__REDIS_BREAKER_OPEN_MS", "300".to_owned()),
            ("GATEWAY__WS_LISTEN", format!("127.0.0.1:{ws}")),
        ];
        Self {
            vars: vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn grpc(&self) -> String {
        self.vars
            .iter()
            .find(|(k, _)| k == "CLUSTER__GRPC_LISTEN")
            .map(|(_, v)| v.clone())
            .unwrap()
    }
}

pub fn start_nodes(
    db: &str,
    redis: &str,
    prefix: &str,
    ids: &[&str],
) -> Vec<(NodeEnv, TestServer)> {
    ids.iter()
        .map(|id| {
            let env = NodeEnv::new(db, redis, prefix, id);
            let server = TestServer::start(&env.pairs());
            (env, server)
        })
        .collect()
}

/// Waits until every node sees `n` live nodes (then they agree on every conversation's owner).
pub fn wait_for_views(nodes: &[TestServer], n: usize) {
    wait_until(&format!("every node sees {n} nodes"), || {
        nodes
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == n as f64)
    });
}

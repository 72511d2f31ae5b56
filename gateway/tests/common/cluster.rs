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

/// A `ringchat serve --role status` node of the cluster `prefix` names: the status service
/// only (`GET /assign`, the chat page, gRPC `Assign`). Killed when dropped.
pub struct StatusNode {
    child: std::process::Child,
    /// Its HTTP listener (`gateway.ws_listen`).
    pub ws: std::net::SocketAddr,
    /// Its gRPC listener.
    pub grpc: String,
    _data: tempfile::TempDir,
}

impl StatusNode {
    pub fn start(db: &str, redis: &str, prefix: &str) -> Self {
        use std::process::{Command, Stdio};
        let env = NodeEnv::new(db, redis, prefix, &"status1");
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringchat"))
            .args(["serve", "--role", "status"])
            .env_clear()
            .envs(
                env.vars
                    .iter()
                    .map(|(k, v)| (format!("RINGCHAT_{k}"), v.clone())),
            )
            .env("RINGCHAT_STORAGE__DATA_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringchat --role status");
        let line = super::ready_line(&mut child)
            .unwrap_or_else(|e| panic!("the status node did not get ready: {e}"));
        let fields: std::collections::HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        Self {
            ws: fields["ws"].parse().unwrap(),
            grpc: fields["grpc"].to_owned(),
            child,
            _data: data,
        }
    }
}

impl Drop for StatusNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node sees `n` live nodes (then they agree on every conversation's owner).
pub fn wait_for_views(nodes: &[TestServer], n: usize) {
    wait_until(&format!("every node sees {n} nodes"), || {
        nodes
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == n as f64)
    });
}

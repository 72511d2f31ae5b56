//! Cluster tests' harness: real `ringchat` nodes on one PostgreSQL database and Redis (the
//! servers `scripts/test.sh` starts: RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL). The
//! database: `common::store::fresh_database`.

use std::time::Duration;

use ringchat_backend::cluster::rendezvous::{node_number, owner_index};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::time::Instant;

use super::proxy::CutProxy;
use super::{TestServer, WAIT_DEADLINE, wait_until};

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

pub use super::free_port;

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
            // Local file storage is refused in cluster mode (files need shared storage).
            ("FILES__ENABLED", "false".to_owned()),
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

    /// Adds `extra` settings (as ("CLUSTER__PEER_QUEUE_ITEMS_MAX", "16")).
    pub fn extend(&mut self, extra: &[(&str, &str)]) {
        self.vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
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
    start_nodes_with(db, redis, prefix, ids, &[])
}

/// [`start_nodes`] with `extra` settings (as ("CLUSTER__PEER_QUEUE_ITEMS_MAX", "16")) on
/// every node.
pub fn start_nodes_with(
    db: &str,
    redis: &str,
    prefix: &str,
    ids: &[&str],
    extra: &[(&str, &str)],
) -> Vec<(NodeEnv, TestServer)> {
    ids.iter()
        .map(|id| {
            let mut env = NodeEnv::new(db, redis, prefix, id);
            env.extend(extra);
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
        Self::start_with(db, redis, prefix, &[])
    }

    /// [`Self::start`] with `extra` settings (as ("GATEWAY__STATUS_HTTP__CONNS_MAX", "16")).
    pub fn start_with(db: &str, redis: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        use std::process::{Command, Stdio};
        let mut env = NodeEnv::new(db, redis, prefix, &"status1");
        env.extend(extra);
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

impl StatusNode {
    /// Sends signal `name` (as `kill -NAME`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the status node did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for StatusNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nodes `ids` on a fresh database and Redis prefix (`kind` names the test's keys), with
/// `extra` settings, once each sees them all.
#[allow(dead_code)] // Not every cluster test crate starts its nodes this way.
pub fn fresh_nodes(kind: &str, ids: &[&str], extra: &[(&str, &str)]) -> Vec<TestServer> {
    let db = super::store::fresh_database();
    let prefix = format!("rc_{kind}_{}", unique());
    let nodes: Vec<TestServer> = start_nodes_with(&db, &redis_url(), &prefix, ids, extra)
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, ids.len());
    nodes
}

/// Nodes n1 and n2 on a fresh database and Redis prefix (`kind` names the test's keys), with
/// `extra` settings, once each sees both. Node `behind` (0 or 1) advertises a [`CutProxy`] in
/// front of its gRPC listener: the test can cut or hold the other's link to it while both run.
pub async fn two_nodes_behind_proxy(
    kind: &str,
    behind: usize,
    extra: &[(&str, &str)],
) -> (Vec<TestServer>, CutProxy) {
    let db = super::store::fresh_database();
    let prefix = format!("rc_{kind}_{}", unique());
    let mut envs: Vec<NodeEnv> = ["n1", "n2"]
        .iter()
        .map(|id| NodeEnv::new(&db, &redis_url(), &prefix, id))
        .collect();
    let proxy = CutProxy::start(envs[behind].grpc().parse().unwrap()).await;
    envs[behind].extend(&[("CLUSTER__ADVERTISE_ADDR", &proxy.addr.to_string())]);
    let nodes: Vec<TestServer> = envs
        .iter_mut()
        .map(|env| {
            env.extend(extra);
            TestServer::start(&env.pairs())
        })
        .collect();
    wait_for_views(&nodes, 2);
    (nodes, proxy)
}

/// Waits until every node sees `n` live nodes (then they agree on every conversation's owner)
/// and the start-up has settled: a node that entered another's view after it joined is told
/// it may have missed pushes (`cluster/link/newcomers.rs`), which makes it hold other nodes'
/// group frames for a repair and tell its sessions to Sync. Each such announcement has
/// arrived before this returns, so a test that counts `missed` batches or waits for live
/// group pushes does not meet one half-way.
pub fn wait_for_views(nodes: &[TestServer], n: usize) {
    wait_until(&format!("every node sees {n} nodes"), || {
        nodes.iter().all(|s| {
            s.metric("ringchat_cluster_nodes") == n as f64
                && s.metric("ringchat_cluster_peers_welcomed") == (n - 1) as f64
        })
    });
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    wait_until("every node's start-up announcements arrived", || {
        let metrics: Vec<_> = nodes.iter().map(TestServer::metrics).collect();
        let count = |at: usize, family: &str, peer: usize| {
            let key = format!("{family}{{peer=\"{}\"}}", ids[peer]);
            metrics[at].get(&key).copied().unwrap_or(0.0)
        };
        (0..nodes.len()).all(|to| {
            (0..nodes.len()).filter(|from| *from != to).all(|from| {
                count(to, "ringchat_cluster_peer_missed_total", from)
                    >= count(from, "ringchat_cluster_peers_new_in_view_total", to)
            })
        })
    });
}

/// The node id a test server was started with.
fn node_id(node: &TestServer) -> String {
    node.env_var("RINGCHAT_CLUSTER__NODE_ID")
        .expect("a cluster node has an id")
        .to_owned()
}

/// The node (index into `ids`) that owns conversation `conv` by rendezvous.
pub fn owner(conv: u64, ids: &[&str]) -> usize {
    let numbers: Vec<u64> = ids.iter().map(|id| node_number(id)).collect();
    owner_index(conv, &numbers).expect("nodes")
}

/// A text `Send` to `to` whose content is its `client_msg_id`.
pub fn direct(to: u64, id: &str) -> Body {
    Body::Send(v1::Send {
        client_msg_id: id.into(),
        to_user_id: to,
        content_type: v1::ContentType::Text as i32,
        content: id.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

/// Sends until acked, resending (same `client_msg_id`) after the pause an UNAVAILABLE asks
/// for, as a client does; panics on any other refusal or past the deadline.
pub async fn acked(c: &mut Client, body: Body) -> v1::SendAck {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        match c.request(body.clone()).await.expect("a reply") {
            Body::SendAck(ack) => return ack,
            Body::Error(e)
                if e.code == ErrorCode::Unavailable as i32 && Instant::now() < deadline =>
            {
                assert!(
                    e.retry_after_ms > 0,
                    "UNAVAILABLE says when to retry: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms)).await;
            }
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
}

/// The conversation's text messages as a node serves them: (seq, text).
pub async fn synced(c: &mut Client, conv: u64) -> Vec<(u64, String)> {
    c.sync_all(conv, 0)
        .await
        .expect("sync")
        .into_iter()
        .filter(|m| m.content_type == v1::ContentType::Text as i32)
        .map(|m| (m.seq, String::from_utf8_lossy(&m.content).into_owned()))
        .collect()
}

/// A metric summed over its labels (`name` and every `name{…}`).
pub fn metric_sum(node: &TestServer, name: &str) -> f64 {
    node.metrics()
        .into_iter()
        .filter(|(k, _)| k == name || k.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .map(|(_, v)| v)
        .sum()
}

/// The highest seq of `conv` a device holds with none missing before it, from the messages
/// it got (pushed or synced): where a catch-up `Sync` starts.
pub fn contiguous_seq(got: &[v1::Message], conv: u64) -> u64 {
    let mut seqs: Vec<u64> = got
        .iter()
        .filter(|m| m.conversation_id == conv)
        .map(|m| m.seq)
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut have = 0;
    for s in seqs {
        if s != have + 1 {
            break;
        }
        have = s;
    }
    have
}

/// Checks that `stored` (the conversation's text messages, as Sync returns them) has gap-free
/// seqs and holds each acked `(seq, client_msg_id)` exactly once, at its acked seq.
pub fn every_ack_once(stored: &[(u64, String)], acks: &[(u64, String)]) {
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free seqs: {seqs:?}"
    );
    for (seq, id) in acks {
        let at: Vec<&(u64, String)> = stored.iter().filter(|(_, t)| t == id).collect();
        assert_eq!(
            at,
            vec![&(*seq, id.clone())],
            "{id} stored once, at its acked seq"
        );
    }
}

/// The fields of a user's route hash in Redis (`cluster/routes/wire.rs`), sorted; none when
/// Redis does not answer.
pub fn route_fields(redis: &str, prefix: &str, user: u64) -> Vec<String> {
    let fields = redis::Client::open(redis)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| {
            redis::cmd("HKEYS")
                .arg(format!("{prefix}:route:{user}"))
                .query::<Vec<String>>(&mut c)
        });
    let mut fields = fields.unwrap_or_default();
    fields.sort();
    fields
}

/// Waits for the push of message `id` (its `client_msg_id`) on `c`, skipping others.
pub async fn pushed(c: &mut Client, id: &str) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, c.next_push())
            .await
            .unwrap_or_else(|_| panic!("no push of {id} in time"))
            .expect("a push");
        if m.client_msg_id == id {
            return;
        }
    }
}

//! `[cluster]`: this server as one node of many (issue 14). Off by default: one box, nothing
//! changes.

use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Join a cluster. Needs a shared store of record (`storage.engine` postgres or scylla).
    pub enabled: bool,
    /// This node's name, unique in the cluster (letters, digits, `-`, `_`, `.`; 1 to 64 bytes).
    pub node_id: String,
    /// The gRPC listener (the status service now; node-to-node services later), `IP:PORT`.
    pub grpc_listen: String,
    /// What other nodes dial to reach `grpc_listen`, `host:port` (empty: `grpc_listen`).
    pub advertise_addr: String,
    /// The addresses this node tells clients to connect to (the status service hands them
    /// out), e.g. "tcp://chat1.example.com:7000", "ws://chat1.example.com:7001/ws".
    pub client_addrs: Vec<String>,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`; a password is better kept in
    /// the `RINGCHAT_CLUSTER__REDIS_URL` environment variable. Serialised hidden.
    #[serde(serialize_with = "hidden")]
    pub redis_url: String,
    /// Shared by every node of the cluster: a node accepts a `Node/Link` stream (forwarded
    /// writes name their user) only from a peer that proves it holds it (`link/secret.rs`;
    /// never sent itself). 32 to 1024 visible ASCII
    /// bytes; keep it in the `RINGCHAT_CLUSTER__PEER_SECRET` environment variable. Serialised
    /// hidden.
    #[serde(serialize_with = "hidden")]
    pub peer_secret: String,
    /// Redis Sentinel, instead of `redis_url`: the sentinels, `host:port` or
    /// `redis://[user:password@]host:port` (1 to 16). The node asks them for the primary of
    /// `sentinel_master` and asks again after a call fails on it (a failover).
    #[serde(serialize_with = "hidden_credentials")]
    pub sentinel_addrs: Vec<String>,
    /// The master name the sentinels monitor (`sentinel monitor NAME …`); with `sentinel_addrs`.
    pub sentinel_master: String,
    /// Redis Cluster (sharded): refused. Route and presence changes go over pub/sub and the
    /// route update is one Lua script, both over one key space; for high availability, use a
    /// primary with replicas under Redis Sentinel.
    pub redis_cluster: bool,
    /// Prefix of every Redis key this cluster uses, so that clusters (or test runs) can share
    /// one Redis.
    pub redis_key_prefix: String,
    /// Each Redis call's deadline, connecting included, in milliseconds.
    pub redis_timeout_ms: u64,
    /// After this many Redis calls failed in a row, calls fail at once (the breaker opens) for
    /// `redis_breaker_open_ms`, then one call tries again.
    pub redis_breaker_failures: u32,
    pub redis_breaker_open_ms: u64,
    /// How often the node refreshes its own record and reads the others', in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A node that stops heartbeating leaves the view after this long (its record's TTL), in
    /// milliseconds. More than twice `heartbeat_interval_ms` plus `redis_timeout_ms`: a live
    /// node's heartbeats land up to an interval plus a call's deadline apart, and another node
    /// sees each up to an interval late (`view::may_have_been_dropped`).
    pub node_ttl_ms: u64,
    /// Nodes read into the view, at most (a typo or a leak in Redis cannot grow it further).
    pub nodes_max: usize,
    /// gRPC: requests served at once per connection, and each request's deadline.
    pub grpc_concurrency_per_connection: usize,
    pub grpc_timeout_ms: u64,
    /// Connections the gRPC listener holds at once, at most (peers, status clients and
    /// strangers alike); past it a new one is closed at once. At least `nodes_max`: every
    /// other node holds one here.
    pub grpc_conns_max: usize,
    /// A connection to the gRPC listener whose client has not started its handshake (the TLS
    /// ClientHello, or the HTTP/2 preface) within this many milliseconds is closed; also the
    /// deadline of the whole TLS handshake.
    pub grpc_handshake_timeout_ms: u64,
    /// A connection to the gRPC listener that served no request (a status call, or a peer's
    /// link stream) for this many milliseconds is closed: idle connections hold no place a
    /// peer needs.
    pub grpc_idle_timeout_ms: u64,
    /// Message and group ids leased from the store of record per lease, in ids: each node
    /// hands out ids from its own block (ids left in it at a restart are skipped).
    pub id_block_size: u64,
    /// Node-to-node links (`cluster/link/`): items (forwarded writes, answers, frames) queued
    /// per peer, at most; past it a forwarded write is answered UNAVAILABLE and frames are
    /// dropped (their recipients catch up by seq).
    pub peer_queue_items_max: usize,
    /// Users whose kicks (a revocation, a disable, an operator's kick) wait per peer until
    /// that node confirms them, at most; each new stream to the peer sends them again.
    pub peer_kicks_pending_max: usize,
    /// One batch on a link, at most, in bytes (what is queued is drained into batches).
    pub peer_batch_bytes_max: usize,
    /// Dialing a peer, and each batch's hand-over to its stream, in milliseconds.
    pub peer_connect_timeout_ms: u64,
    /// Longest pause between reconnects to a peer (doubling from 50 ms), in milliseconds;
    /// while a link is down, writes for that peer are refused at once (the breaker).
    pub peer_backoff_max_ms: u64,
    /// A forwarded write not answered by its owner within this many milliseconds is answered
    /// UNAVAILABLE (the client resends with the same client_msg_id; dedup keeps it once).
    pub forward_timeout_ms: u64,
    /// Forwarded writes awaiting their owner's answer on this node, at most.
    pub forwards_pending_max: usize,
    /// `SyncNeeded` hints (pushes from a peer were lost on the way here) reach each session at
    /// most once per this many milliseconds; a loss within the interval is announced at its
    /// end. Also the `spread_ms` clients spread their catch-up over.
    pub sync_hint_interval_ms: u64,
    /// `[cluster.routes]`: where users' devices are (`routes/config.rs`); last, as a table
    /// follows the plain keys in TOML.
    pub routes: super::routes::RoutesConfig,
    /// `[cluster.tls]`: mutual TLS between nodes (`tls.rs`), off by default.
    pub tls: super::tls::ClusterTlsConfig,
}

fn hidden<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { "(hidden)" })
}

/// Sentinel addresses as shown (admin config view): any `user:password@` replaced.
fn hidden_credentials<S: serde::Serializer>(addrs: &[String], s: S) -> Result<S::Ok, S::Error> {
    // The one rule every shown secret follows (`live::credentials_hidden`).
    s.collect_seq(addrs.iter().map(|a| crate::live::credentials_hidden(a)))
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: String::new(),
            grpc_listen: "0.0.0.0:7100".to_owned(),
            advertise_addr: String::new(),
            client_addrs: Vec::new(),
            redis_url: String::new(),
            peer_secret: String::new(),
            sentinel_addrs: Vec::new(),
            sentinel_master: String::new(),
            redis_cluster: false,
            redis_key_prefix: "ringchat".to_owned(),
            redis_timeout_ms: 500,
            redis_breaker_failures: 3,
            redis_breaker_open_ms: 2_000,
            heartbeat_interval_ms: 1_000,
            node_ttl_ms: 5_000,
            nodes_max: 1_024,
            grpc_concurrency_per_connection: 64,
            grpc_timeout_ms: 5_000,
            grpc_conns_max: 4_096,
            grpc_handshake_timeout_ms: 5_000,
            grpc_idle_timeout_ms: 10_000,
            id_block_size: 1_024,
            peer_queue_items_max: 65_536,
            peer_kicks_pending_max: 65_536,
            peer_batch_bytes_max: 1 << 20,
            peer_connect_timeout_ms: 1_000,
            peer_backoff_max_ms: 2_000,
            forward_timeout_ms: 5_000,
            forwards_pending_max: 65_536,
            sync_hint_interval_ms: 5_000,
            routes: super::routes::RoutesConfig::default(),
            tls: super::tls::ClusterTlsConfig::default(),
        }
    }
}

/// Longest `node_id`, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 64;

impl ClusterConfig {
    /// The address other nodes dial.
    pub fn advertised(&self) -> &str {
        if self.advertise_addr.is_empty() {
            &self.grpc_listen
        } else {
            &self.advertise_addr
        }
    }

    /// Every problem of the section, as `key: problem` lines (only when `enabled`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.node_id.is_empty()
            || self.node_id.len() > NODE_ID_BYTES_MAX
            || !self.node_id.chars().all(id_ok)
        {
            out.push(
                "cluster.node_id: required, 1 to 64 of letters, digits, '-', '_' and '.'".into(),
            );
        }
        if let Err(e) = self.grpc_listen.parse::<std::net::SocketAddr>() {
            out.push(format!(
                "cluster.grpc_listen: {e}: expected IP:PORT such as 0.0.0.0:7100"
            ));
        }
        if !self.advertise_addr.is_empty() && !host_port(&self.advertise_addr) {
            out.push(
                "cluster.advertise_addr: expected host:port, such as chat1.internal:7100".into(),
            );
        }
        if self.client_addrs.is_empty() || self.client_addrs.len() > 16 {
            out.push("cluster.client_addrs: list 1 to 16 addresses clients can reach this node at, such as \"ws://chat1.example.com:7001/ws\"".into());
        }
        for a in &self.client_addrs {
            let known = ["tcp://", "tls://", "ws://", "wss://"];
            if a.len() > 256 || !known.iter().any(|s| a.starts_with(s)) {
                out.push(format!(
                    "cluster.client_addrs: {a:?}: expected tcp://, tls://, ws:// or wss:// and at most 256 bytes"
                ));
            }
        }
        out.extend(self.redis_problems());
        let secret_ok = (32..=1024).contains(&self.peer_secret.len())
            && self.peer_secret.bytes().all(|b| b.is_ascii_graphic());
        if !secret_ok {
            out.push("cluster.peer_secret: required with [cluster] enabled, 32 to 1024 visible ASCII characters shared by every node (set RINGCHAT_CLUSTER__PEER_SECRET; e.g. `openssl rand -hex 32`): a node takes forwarded writes only from peers that present it".into());
        }
        if self.redis_cluster {
            out.push("cluster.redis_cluster: Redis Cluster (sharded) is not supported: route and presence changes go over pub/sub and the route update is one Lua script, both over one key space; for high availability run a primary with replicas under Redis Sentinel (sentinel_addrs, sentinel_master)".into());
        }
        let prefix_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if self.redis_key_prefix.is_empty()
            || self.redis_key_prefix.len() > 64
            || !self.redis_key_prefix.chars().all(prefix_ok)
        {
            out.push(
                "cluster.redis_key_prefix: 1 to 64 of letters, digits, '-', '_', '.', ':'".into(),
            );
        }
        let mut range = |v: u64, lo: u64, hi: u64, key: &str| {
            if !(lo..=hi).contains(&v) {
                out.push(format!("cluster.{key}: must be between {lo} and {hi}"));
            }
        };
        range(self.redis_timeout_ms, 1, 60_000, "redis_timeout_ms");
        range(
            self.redis_breaker_failures.into(),
            1,
            1_000,
            "redis_breaker_failures",
        );
        range(
            self.redis_breaker_open_ms,
            1,
            600_000,
            "redis_breaker_open_ms",
        );
        range(
            self.heartbeat_interval_ms,
            50,
            600_000,
            "heartbeat_interval_ms",
        );
        range(self.node_ttl_ms, 100, 3_600_000, "node_ttl_ms");
        range(self.nodes_max as u64, 1, 100_000, "nodes_max");
        range(
            self.grpc_concurrency_per_connection as u64,
            1,
            100_000,
            "grpc_concurrency_per_connection",
        );
        range(self.grpc_timeout_ms, 1, 600_000, "grpc_timeout_ms");
        range(self.grpc_conns_max as u64, 16, 1 << 20, "grpc_conns_max");
        range(
            self.grpc_handshake_timeout_ms,
            100,
            60_000,
            "grpc_handshake_timeout_ms",
        );
        range(
            self.grpc_idle_timeout_ms,
            100,
            3_600_000,
            "grpc_idle_timeout_ms",
        );
        range(self.id_block_size, 1, 1 << 20, "id_block_size");
        range(
            self.peer_queue_items_max as u64,
            16,
            1 << 24,
            "peer_queue_items_max",
        );
        range(
            self.peer_kicks_pending_max as u64,
            1,
            1 << 24,
            "peer_kicks_pending_max",
        );
        // The links' gRPC message limit is derived from it and limits.frame_bytes_max
        // (`link/wire.rs`), so any value here fits.
        range(
            self.peer_batch_bytes_max as u64,
            4_096,
            3 << 20,
            "peer_batch_bytes_max",
        );
        range(
            self.peer_connect_timeout_ms,
            1,
            60_000,
            "peer_connect_timeout_ms",
        );
        range(self.peer_backoff_max_ms, 50, 600_000, "peer_backoff_max_ms");
        range(self.forward_timeout_ms, 10, 600_000, "forward_timeout_ms");
        range(
            self.forwards_pending_max as u64,
            1,
            1 << 24,
            "forwards_pending_max",
        );
        range(
            self.sync_hint_interval_ms,
            100,
            600_000,
            "sync_hint_interval_ms",
        );
        out.extend(self.routes.problems());
        out.extend(self.tls.problems());
        if self.grpc_conns_max < self.nodes_max {
            out.push("cluster.grpc_conns_max: must be at least nodes_max, or the other nodes' links may not all find a place on this node's gRPC listener".into());
        }
        // Below it, a live node's ordinary heartbeats could let another node drop it from its
        // view, and every one of them would count as a return (`view::may_have_been_dropped`):
        // the node would re-check its sessions against the store without end.
        if self.node_ttl_ms <= 2 * self.heartbeat_interval_ms + self.redis_timeout_ms {
            out.push("cluster.node_ttl_ms: must be more than twice heartbeat_interval_ms plus redis_timeout_ms, or a live node's ordinary heartbeats can drop it from the others' views".into());
        }
        if self.redis_timeout_ms >= self.heartbeat_interval_ms {
            out.push("cluster.redis_timeout_ms: must be below heartbeat_interval_ms, or one slow call delays the next heartbeat".into());
        }
        out
    }
}

impl ClusterConfig {
    /// Where Redis is: `redis_url`, or Sentinel (`sentinel_addrs` with `sentinel_master`).
    fn redis_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.sentinel_addrs.is_empty() {
            if !self.sentinel_master.is_empty() {
                out.push("cluster.sentinel_master: set only with sentinel_addrs".into());
            }
            match redis::Client::open(self.redis_url.as_str()) {
                _ if self.redis_url.is_empty() => out.push(
                    "cluster.redis_url: required with [cluster] enabled (or sentinel_addrs and sentinel_master)".into(),
                ),
                Err(e) => out.push(format!("cluster.redis_url: not a Redis URL: {e}")),
                Ok(_) => {}
            }
            return out;
        }
        if !self.redis_url.is_empty() {
            out.push("cluster.sentinel_addrs: set either redis_url or sentinel_addrs (Sentinel names the primary), not both".into());
        }
        if self.sentinel_addrs.len() > SENTINELS_MAX {
            out.push(format!(
                "cluster.sentinel_addrs: at most {SENTINELS_MAX} sentinels"
            ));
        }
        for (addr, url) in self.sentinel_addrs.iter().zip(self.sentinel_urls()) {
            if let Err(e) = redis::Client::open(url.as_str()) {
                out.push(format!(
                    "cluster.sentinel_addrs: {addr:?}: expected host:port or redis://host:port: {e}"
                ));
            }
        }
        let name_ok = |c: char| c.is_ascii_graphic();
        if self.sentinel_master.is_empty()
            || self.sentinel_master.len() > 64
            || !self.sentinel_master.chars().all(name_ok)
        {
            out.push("cluster.sentinel_master: required with sentinel_addrs: the name the sentinels monitor (1 to 64 visible ASCII characters)".into());
        }
        out
    }

    /// `sentinel_addrs` as URLs (`host:port` becomes `redis://host:port`).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_addrs
            .iter()
            .map(|a| {
                if a.contains("://") {
                    a.clone()
                } else {
                    format!("redis://{a}")
                }
            })
            .collect()
    }
}

/// Most sentinels listed in `cluster.sentinel_addrs` (a deployment has 3 or 5).
pub const SENTINELS_MAX: usize = 16;

/// `host:port` with a port number.
fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, StorageEngine};

    fn enabled() -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            node_id: "n1".into(),
            client_addrs: vec!["ws://chat1.example.com:7001/ws".into()],
            redis_url: "redis://127.0.0.1:6379/".into(),
            peer_secret: "0123456789abcdef0123456789abcdef".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_a_complete_section_passes() {
        assert!(ClusterConfig::default().problems().is_empty());
        assert_eq!(enabled().problems(), Vec::<String>::new());
    }

    /// Within the allowed range, a node's ordinary heartbeats (an interval apart) never count
    /// as a return from a gap another node may have dropped it for; at the bound they would.
    #[test]
    fn a_valid_ttl_keeps_ordinary_heartbeats_from_counting_as_returns() {
        for (interval, timeout) in [(1_000, 500), (200, 150), (50, 1)] {
            let at = |ttl| ClusterConfig {
                heartbeat_interval_ms: interval,
                redis_timeout_ms: timeout,
                node_ttl_ms: ttl,
                ..enabled()
            };
            let least = 2 * interval + timeout + 1;
            assert_eq!(at(least).problems(), Vec::<String>::new());
            assert!(!super::super::view::may_have_been_dropped(
                interval, least, interval, timeout
            ));
            assert!(
                at(least - 1).problems()[0].starts_with("cluster.node_ttl_ms"),
                "{interval} {timeout}"
            );
            assert!(super::super::view::may_have_been_dropped(
                interval,
                least - 1,
                interval,
                timeout
            ));
        }
    }

    #[test]
    fn each_bad_key_is_named() {
        let c = ClusterConfig {
            node_id: "no spaces".into(),
            grpc_listen: "localhost:7100".into(),
            advertise_addr: "nohost".into(),
            client_addrs: vec!["http://x".into()],
            redis_url: "mysql://x".into(),
            redis_cluster: true,
            heartbeat_interval_ms: 1_000,
            node_ttl_ms: 1_500,
            redis_timeout_ms: 2_000,
            grpc_handshake_timeout_ms: 0,
            ..enabled()
        };
        let all = c.problems().join("\n");
        for key in [
            "cluster.grpc_handshake_timeout_ms: must be between 100 and 60000",
            "cluster.node_id",
            "cluster.grpc_listen",
            "cluster.advertise_addr",
            "cluster.client_addrs",
            "cluster.redis_url: not a Redis URL",
            "cluster.redis_cluster",
            "cluster.node_ttl_ms: must be more than twice heartbeat_interval_ms plus redis_timeout_ms",
            "cluster.redis_timeout_ms: must be below heartbeat_interval_ms",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        let missing = ClusterConfig {
            redis_url: String::new(),
            client_addrs: Vec::new(),
            peer_secret: String::new(),
            ..enabled()
        };
        let all = missing.problems().join("\n");
        assert!(all.contains("cluster.redis_url: required"), "{all}");
        assert!(all.contains("cluster.peer_secret: required"), "{all}");
        for weak in ["too short", &format!("{} with a space", "x".repeat(32))] {
            let c = ClusterConfig {
                peer_secret: weak.to_owned(),
                ..enabled()
            };
            assert!(c.problems().join("\n").contains("cluster.peer_secret"));
        }
        let few = ClusterConfig {
            grpc_conns_max: 100,
            nodes_max: 200,
            ..enabled()
        };
        assert_eq!(
            few.problems(),
            [
                "cluster.grpc_conns_max: must be at least nodes_max, or the other nodes' links may not all find a place on this node's gRPC listener"
            ]
        );
    }

    #[test]
    fn sentinel_replaces_redis_url_and_needs_a_master_name() {
        let sentinel = ClusterConfig {
            redis_url: String::new(),
            sentinel_addrs: vec!["10.0.0.1:26379".into(), "redis://10.0.0.2:26379".into()],
            sentinel_master: "chat".into(),
            ..enabled()
        };
        assert_eq!(sentinel.problems(), Vec::<String>::new());
        assert_eq!(
            sentinel.sentinel_urls(),
            ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]
        );
        let cases: [(ClusterConfig, &str); 4] = [
            (
                ClusterConfig {
                    redis_url: "redis://127.0.0.1:6379/".into(),
                    ..sentinel.clone()
                },
                "cluster.sentinel_addrs: set either redis_url or sentinel_addrs",
            ),
            (
                ClusterConfig {
                    sentinel_master: String::new(),
                    ..sentinel.clone()
                },
                "cluster.sentinel_master: required with sentinel_addrs",
            ),
            (
                ClusterConfig {
                    sentinel_addrs: vec!["mysql://x".into()],
                    ..sentinel.clone()
                },
                "cluster.sentinel_addrs: \"mysql://x\"",
            ),
            (
                ClusterConfig {
                    sentinel_master: "chat".into(),
                    ..enabled()
                },
                "cluster.sentinel_master: set only with sentinel_addrs",
            ),
        ];
        for (config, problem) in cases {
            let all = config.problems().join("\n");
            assert!(all.contains(problem), "{problem} missing from:\n{all}");
        }
    }

    #[test]
    fn the_embedded_store_is_refused_in_cluster_mode() {
        let mut s = Settings {
            cluster: enabled(),
            ..Settings::default()
        };
        let refused = |s: &Settings| {
            s.problems()
                .iter()
                .any(|p| p.starts_with("cluster.enabled: cluster mode needs a store of record"))
        };
        assert!(refused(&s));
        s.storage.engine = StorageEngine::Scylla;
        assert!(!refused(&s));
    }

    #[test]
    fn sentinel_credentials_are_never_shown() {
        let config = ClusterConfig {
            sentinel_addrs: vec![
                "10.0.0.1:26379".into(),
                "redis://ops:s3cret@10.0.0.2:26379".into(),
            ],
            ..ClusterConfig::default()
        };
        let shown = serde_json::to_value(&config).unwrap();
        assert_eq!(
            shown["sentinel_addrs"],
            serde_json::json!(["10.0.0.1:26379", "redis://ops:(hidden)@10.0.0.2:26379"])
        );
    }
}

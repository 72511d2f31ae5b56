//! The node registry in Redis. Each node keeps one key, `{prefix}:node:{node_id}`, holding its
//! record (JSON) with a TTL of `node_ttl_ms`, rewritten every heartbeat; and its id in the set
//! `{prefix}:nodes`, the index every node reads (SMEMBERS then MGET: never KEYS or a SCAN of
//! the keyspace). A node that stops heartbeating loses its key after the TTL; the first reader
//! to find an id without a key removes it from the set.

use redis::Value;
use serde::{Deserialize, Serialize};

use super::redis::{Redis, RedisError};

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRecord {
    pub node_id: String,
    /// What other nodes dial (gRPC).
    pub advertise_addr: String,
    /// What clients are told to connect to.
    pub client_addrs: Vec<String>,
    pub started_at_ms: u64,
    /// When the node wrote this record.
    pub heartbeat_at_ms: u64,
    /// Client connections open on the node.
    pub connections: u64,
    /// The node's process CPU over the last heartbeat, in percent of one core.
    pub cpu_percent: f32,
}

/// Largest record read back, in bytes: a bigger value is not a ringchat record.
const RECORD_BYTES_MAX: usize = 16 * 1024;

pub struct Registry {
    redis: Redis,
    index_key: String,
    key_prefix: String,
    ttl_ms: u64,
    nodes_max: usize,
}

impl Registry {
    pub fn new(redis: Redis, prefix: &str, ttl_ms: u64, nodes_max: usize) -> Self {
        Self {
            redis,
            index_key: format!("{prefix}:nodes"),
            key_prefix: format!("{prefix}:node:"),
            ttl_ms,
            nodes_max,
        }
    }

    fn key(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.key_prefix)
    }

    /// Writes this node's record (with its TTL) when given one, and reads every live node's,
    /// in two round trips. Records that do not parse are skipped (another version, or not ours).
    pub async fn heartbeat(&self, me: Option<&NodeRecord>) -> Result<Vec<NodeRecord>, RedisError> {
        let mut pipe = redis::pipe();
        if let Some(me) = me {
            let json = serde_json::to_string(me).expect("a record serialises");
            pipe.cmd("SET")
                .arg(self.key(&me.node_id))
                .arg(json)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(&self.index_key)
                .arg(&me.node_id)
                .ignore();
        }
        pipe.cmd("SRANDMEMBER")
            .arg(&self.index_key)
            .arg(self.nodes_max);
        let (mut ids,): (Vec<String>,) = self.redis.query(&pipe).await?;
        ids.sort_unstable();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let mut mget = redis::cmd("MGET");
        for id in &ids {
            mget.arg(self.key(id));
        }
        pipe.add_command(mget);
        let (values,): (Vec<Value>,) = self.redis.query(&pipe).await?;
        let mut live = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value {
                Value::BulkString(bytes) if bytes.len() <= RECORD_BYTES_MAX => {
                    match serde_json::from_slice::<NodeRecord>(&bytes) {
                        Ok(r) if r.node_id == id => live.push(r),
                        _ => {
                            tracing::warn!(node = %id, "cluster: skipping a node record that does not parse")
                        }
                    }
                }
                Value::Nil => gone.push(id),
                _ => {
                    tracing::warn!(node = %id, "cluster: skipping a node record of an unexpected type")
                }
            }
        }
        if !gone.is_empty() {
            // Expired: out of the index too. Losing this race to a node that just came back is
            // harmless: its next heartbeat adds it again.
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(&self.index_key).arg(&gone).ignore();
            if let Err(err) = self.redis.query::<()>(&pipe).await {
                tracing::debug!(%err, "cluster: pruning the node index failed");
            }
        }
        Ok(live)
    }

    /// Removes this node at once (graceful stop), instead of after its TTL.
    pub async fn deregister(&self, node_id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.key(node_id))
            .ignore()
            .cmd("SREM")
            .arg(&self.index_key)
            .arg(node_id)
            .ignore();
        self.redis.query(&pipe).await
    }
}

//! What the binary knows and the backend does not: the gateway's connections and listeners,
//! and the build's commit. The gateway hands a [`ServerFacts`] to `Admin::with_server_facts`;
//! the backend never depends on the gateway crate.

use serde::Serialize;
use utoipa::ToSchema;

/// Connections by client transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Transports {
    pub tcp: u64,
    pub ws: u64,
    pub tls: u64,
    pub wss: u64,
}

/// The gateway's connections now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connections {
    /// Per shard, in shard order.
    pub per_shard: Vec<u64>,
    pub transports: Transports,
    /// Connections with a logged-in session.
    pub authenticated: u64,
    /// Logins (and other requests before login) waiting for the backend now, all shards.
    pub logins_in_flight: u64,
    /// Logins turned away at once since start (`SERVER_FULL` or `UNAVAILABLE` with a
    /// `retry_after_ms`: a shard's login slots or the backend's queue were full).
    pub logins_refused: u64,
}

pub trait ServerFacts: Send + Sync {
    /// Read from the shards' counters (one writer each, read without locks).
    fn connections(&self) -> Connections;
    /// Why the server cannot take clients now (a shard is not accepting), or `None`.
    fn not_ready(&self) -> Option<String>;
    /// The git commit the binary was built from, or "unknown".
    fn commit(&self) -> &str;
}

/// No gateway (an admin app built alone): no connections, always ready.
#[derive(Debug, Default)]
pub struct NoGateway;

impl ServerFacts for NoGateway {
    fn connections(&self) -> Connections {
        Connections::default()
    }
    fn not_ready(&self) -> Option<String> {
        None
    }
    fn commit(&self) -> &str {
        "unknown"
    }
}

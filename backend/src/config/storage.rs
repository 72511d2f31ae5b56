//! `[storage]`: the store of record (embedded, PostgreSQL or ScyllaDB), its durability and the
//! embedded engine's settings; validated with the rest in `Settings::validate`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Durability of acknowledged writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit group is fdatasync'ed before any of its acks is sent.
    Fsync,
    /// Written to the OS, the embedded store's journal synced in the background (every
    /// `storage.journal_sync_ms`, 100 by default);
    /// a machine crash loses the last acks (PostgreSQL: `synchronous_commit = off`). For
    /// benchmarks.
    None,
}

/// Default `storage.journal_sync_ms`.
pub const JOURNAL_SYNC_MS_DEFAULT: u64 = 100;
/// Default `storage.journal_prefill_mib`: at 40 MB/s of journal writes, 50 ms ahead.
pub const JOURNAL_PREFILL_MIB_DEFAULT: u64 = 4;
/// Largest `storage.journal_prefill_mib`: fjall's journals are 64 MiB.
pub const JOURNAL_PREFILL_MIB_MAX: u64 = 64;
/// Largest `storage.journal_sync_ms`: an hour.
pub const JOURNAL_SYNC_MS_MAX: u64 = 3_600_000;

/// Default `storage.background_threads`: one. With two or more, fjall's first worker hands every
/// compaction request it takes back to the queue and takes it again, in a loop, for as long as
/// the others compact (a busy core; docs/BENCHMARKS.md, "The store's background threads").
pub const BACKGROUND_THREADS_DEFAULT: usize = 1;
/// Largest `storage.background_threads`.
pub const BACKGROUND_THREADS_MAX: usize = 64;

/// Default `storage.memtable_mib`: fjall's own default.
pub const MEMTABLE_MIB_DEFAULT: u64 = 64;

/// Largest `storage.dedup_window_messages`: it bounds each row the sequencer caches and writes.
pub const DEDUP_WINDOW_MESSAGES_MAX: usize = 1024;

/// Default `storage.tail_cache_bytes`: off. Filled by every write, the cache costs every
/// message more than it saves Sync reads at today's mix (docs/BENCHMARKS.md: ×1.5 server CPU
/// per message at W = 32); the engine's memtable and block cache already keep recent messages
/// in memory.
pub const TAIL_CACHE_BYTES_DEFAULT: usize = 0;
/// Largest `storage.tail_cache_bytes`: 64 GiB (a typo guard, not a recommendation).
pub const TAIL_CACHE_BYTES_MAX: usize = 64 << 30;

/// Which store of record holds users, conversations and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    /// fjall in `storage.data_dir`: one box.
    #[default]
    Embedded,
    /// A PostgreSQL database (`[storage.postgres]`), shared by the nodes of a cluster.
    Postgres,
    /// A ScyllaDB cluster (`[storage.scylla]`), shared by the nodes of a cluster.
    Scylla,
}

/// `[storage.postgres]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database?…`; a password here is better kept in `url_file`
    /// or the `RINGCHAT_STORAGE__POSTGRES__URL` environment variable.
    /// Serialised hidden: only whether it is set shows.
    #[serde(serialize_with = "hidden")]
    pub url: String,
    /// A file holding the URL (read once at start): keeps the password out of the config.
    /// Empty: none.
    pub url_file: PathBuf,
    /// Connections in the adapter's pool, at most (the sequencer's commit thread and the read
    /// pool's threads share them).
    pub pool_connections_max: usize,
    /// Giving up on connecting (and on waiting for a free pooled connection), in milliseconds.
    pub connect_timeout_ms: u64,
    /// The server cancels a statement running longer than this, in milliseconds.
    pub statement_timeout_ms: u64,
    /// After a failed connection attempt, calls fail at once (UNAVAILABLE) for this many
    /// milliseconds before the next attempt (`store/postgres/away.rs`).
    pub reconnect_interval_ms: u64,
    /// `disable`, or `require`: TLS with the server's certificate verified.
    pub sslmode: PostgresSslMode,
    /// PEM file of the CA that signed the server's certificate (`require`); empty: the
    /// public web roots.
    pub ca_file: PathBuf,
}

/// A secret's serialised form: empty, or that it is set.
pub(crate) fn hidden<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { "(hidden)" })
}

/// `storage.postgres.sslmode`. `require` verifies the certificate (libpq's `verify-full`):
/// a connection that is encrypted but not authenticated is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresSslMode {
    #[default]
    Disable,
    Require,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            url_file: PathBuf::new(),
            pool_connections_max: 16,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 10_000,
            reconnect_interval_ms: 500,
            sslmode: PostgresSslMode::Disable,
            ca_file: PathBuf::new(),
        }
    }
}

impl PostgresConfig {
    /// The URL: `url`, or the contents of `url_file` (trimmed).
    pub fn resolved_url(&self) -> Result<String, String> {
        let file = &self.url_file;
        match (file.as_os_str().is_empty(), self.url.is_empty()) {
            (false, false) => Err("storage.postgres: set url or url_file, not both".into()),
            (true, true) => Err("storage.postgres.url: required with engine = \"postgres\"".into()),
            (true, false) => Ok(self.url.clone()),
            (false, true) => std::fs::read_to_string(file)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("storage.postgres.url_file: {}: {e}", file.display())),
        }
    }

    /// Every problem of the section, as `key: problem` lines (checked with engine = postgres).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.resolved_url() {
            Err(e) => out.push(e),
            Ok(url) => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    out.push(format!("storage.postgres.url: not a PostgreSQL URL: {e}"));
                }
            }
        }
        if !(1..=1024).contains(&self.pool_connections_max) {
            out.push("storage.postgres.pool_connections_max: must be between 1 and 1024".into());
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            out.push("storage.postgres.connect_timeout_ms: must be between 1 and 600000".into());
        }
        if !(1..=3_600_000).contains(&self.statement_timeout_ms) {
            out.push("storage.postgres.statement_timeout_ms: must be between 1 and 3600000".into());
        }
        if !(1..=60_000).contains(&self.reconnect_interval_ms) {
            out.push("storage.postgres.reconnect_interval_ms: must be between 1 and 60000".into());
        }
        let ca = &self.ca_file;
        if !ca.as_os_str().is_empty() {
            if self.sslmode == PostgresSslMode::Disable {
                out.push("storage.postgres.ca_file: only used with sslmode = \"require\"".into());
            } else if !ca.is_file() {
                out.push(format!(
                    "storage.postgres.ca_file: {}: no such file",
                    ca.display()
                ));
            }
        }
        out
    }
}

/// `[storage.scylla]`: validated and defaulted in `store/scylla/config.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub hosts: Vec<String>,
    pub keyspace: String,
    /// The data centre this node is in: requests go to its replicas, and LOCAL_QUORUM /
    /// LOCAL_SERIAL are counted there.
    pub local_datacenter: String,
    /// Password authentication: the user name (empty: no authentication).
    pub username: String,
    /// A file holding the password (its first line), or the
    /// `RINGCHAT_STORAGE__SCYLLA__PASSWORD` environment variable.
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub password: String,
    /// Each request's deadline, retries included.
    pub request_timeout_ms: u64,
    /// Connecting to a node, at most.
    pub connect_timeout_ms: u64,
    /// Connections kept to each shard of each node.
    pub connections_per_shard: usize,
    /// Replication factor in `local_datacenter` when ringchat creates the keyspace itself.
    pub create_replication_factor: u32,
    /// TLS to the cluster: not built into this server (see README).
    pub tls: bool,
    /// Requests in flight at once while `ringchat migrate` imports into this cluster.
    pub copy_requests_max: usize,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The store of record; the data dir keeps the node's own files whichever it is.
    pub engine: StorageEngine,
    pub postgres: PostgresConfig,
    pub scylla: ScyllaConfig,
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Writes grouped into one commit (and one fsync), at most.
    pub commit_group_max: usize,
    /// How long a commit group that has at least `commit_delay_min_ops` writes (and room for
    /// more) waits for others before it commits, in microseconds; 0: never waits. Like
    /// PostgreSQL's `commit_delay` / `commit_siblings`: when writes trickle in, fewer, fuller
    /// groups (one fsync and one wake-up per shard each) for a little latency.
    pub commit_delay_us: u64,
    pub commit_delay_min_ops: usize,
    /// With `durability = "none"` and the embedded store: the journal is fdatasync'ed in the
    /// background this often, in milliseconds (what a power cut may take); 0: never (everything
    /// since the last memtable flush, which then stalls the commit groups while it syncs).
    pub journal_sync_ms: u64,
    /// The embedded store keeps this many MiB of its journal's preallocated space ahead of its
    /// writes filled with zeros and synced, so that a commit's fdatasync overwrites allocated
    /// blocks and waits for no file system journal commit (`store/fjall/journal_prefill.rs`);
    /// 0: off (a copy-on-write file system such as btrfs or ZFS gains nothing from it).
    pub journal_prefill_mib: u64,
    /// The embedded store's threads for memtable flushes and compactions (fjall's workers).
    pub background_threads: usize,
    /// The embedded store rotates a keyspace's memtable (and flushes it to a table) once it
    /// holds this many MiB. Larger: fewer, bigger flushes and less rewriting by compactions in
    /// a big store, for memory (up to five memtables of this size per busy keyspace: the active
    /// one and four waiting for their flush). A store created before 2026-12-05 is rotated at
    /// 48 MiB at most (`store/fjall/memtables.rs`).
    pub memtable_mib: u64,
    /// Each user's newest sends per conversation remembered for dedup: a resend with the same
    /// `client_msg_id` is recognised while its original is among them (16 bytes each in memory,
    /// about 3 stored in the user's row of the conversation).
    pub dedup_window_messages: usize,
    /// A device's delivery cursor in a conversation is dropped once the device has not moved
    /// it for this many days (at the next write of that user's row).
    pub device_cursor_ttl_days: u64,
    /// Memory for the newest messages of the most recently active conversations (up to 128
    /// each), from which Sync, the newest History page and conversation heads are served
    /// without a store read; counted as content plus a fixed overhead per message and per
    /// conversation, the least recently written conversations dropped first. 0 turns it off.
    pub tail_cache_bytes: usize,
    /// No longer used (the store needs no dedup filter since layout 2); accepted so that older
    /// config files still load.
    #[serde(skip_serializing)]
    pub dedup_filter_items: Option<u64>,
    /// A client answered UNAVAILABLE because the store is away (or busy) is told to retry
    /// after this many milliseconds plus a random share of it again (`retry_after.rs`).
    pub unavailable_retry_after_ms: u64,
}

/// `storage.unavailable_retry_after_ms` by default.
pub const UNAVAILABLE_RETRY_AFTER_MS_DEFAULT: u64 = 1_000;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: StorageEngine::Embedded,
            postgres: PostgresConfig::default(),
            scylla: ScyllaConfig::default(),
            data_dir: PathBuf::from("./ringchat-data"),
            durability: Durability::Fsync,
            commit_group_max: 1024,
            commit_delay_us: 0,
            commit_delay_min_ops: 2,
            journal_sync_ms: JOURNAL_SYNC_MS_DEFAULT,
            journal_prefill_mib: JOURNAL_PREFILL_MIB_DEFAULT,
            background_threads: BACKGROUND_THREADS_DEFAULT,
            memtable_mib: MEMTABLE_MIB_DEFAULT,
            dedup_window_messages: 64,
            device_cursor_ttl_days: 90,
            tail_cache_bytes: TAIL_CACHE_BYTES_DEFAULT,
            dedup_filter_items: None,
            unavailable_retry_after_ms: UNAVAILABLE_RETRY_AFTER_MS_DEFAULT,
        }
    }
}

//! The ScyllaDB store of record (`[storage] engine = "scylla"`): the storage ports on a
//! ScyllaDB cluster, laid out by `deploy/scylla/schema.cql` (built in and applied at open
//! when the keyspace lacks any of its tables).
//!
//! # The fence and what a commit group leaves
//!
//! ScyllaDB has no transaction across partitions, so a commit group
//! ([`CommitGroup`](crate::store::CommitGroup)) is
//! written in three steps, and the *published head* of each conversation (`conv_meta.head`)
//! is what makes its messages exist:
//!
//! 1. **Fences checked.** Each fenced conversation's epoch is read at LOCAL_SERIAL; a stale
//!    one refuses the group with [`StoreError::Fenced`] before anything is written.
//! 2. **Rows written.** The messages, as idempotent upserts at (conversation, bucket, seq),
//!    one UNLOGGED batch per partition (a single-partition batch is one atomic mutation);
//!    everything else (recalls, cursor rows with the dedup window, recency entries,
//!    `next_msg_id`, contacts, groups, mentions) in LOGGED batches of at most 64 KiB
//!    (`writes.rs`; the batchlog makes each batch all-or-nothing once it is accepted,
//!    replayed by the cluster after a coordinator crash). All at LOCAL_QUORUM, in parallel.
//! 3. **Heads published.** One LWT per conversation of the group:
//!    `UPDATE conv_meta SET head = ? … IF epoch = ? AND head = ?` (`IF head = ?` when the
//!    group is not fenced). ScyllaDB commits LWT writes to the commitlog synchronously.
//!
//! Readers never read a message past the published head, so rows that a fenced or crashed
//! writer left past it are invisible, and the next owner overwrites them at the same seqs.
//! What is visible when:
//!
//! | written in | visible | after a crash between steps 2 and 3 |
//! |---|---|---|
//! | messages | once step 3 publishes the head | invisible; overwritten by the next group at those seqs |
//! | cursor rows (cursors, devices, dedup window) | after step 2, before the messages | newer cursors than the head: harmless (they only move forward); a dedup entry whose message is missing is never answered from (a resend is confirmed against the stored message) |
//! | recency entries | after step 2 | an entry that does not match the head: readers skip it (the port says so) |
//! | `next_msg_id` | after step 2 | ids skipped, never reused |
//! | contacts, groups | after step 2 | the change without its event message; the sender had no ack and resends |
//! | users' group counts (counter updates, after the rest of step 2) | at once | may be off by the group's change (so may a count whose update failed ambiguously: never resent); a resend changes no row again, so it does not repair it |
//!
//! So a reader that sees message *k* sees everything else of its group (it was written
//! first), which is what the conformance suite's atomicity tests hold the store to. What is
//! weaker than the embedded store: a group that spans several conversations publishes their
//! heads one LWT each, so for a moment one is visible and another not; and a stale owner
//! that passes step 1 just before another node's claim can still land its step-2 rows (not
//! its messages: step 3 fails with `Fenced`). A group whose step 3 has an unknown outcome
//! for some head (any failure but `Fenced`: a timeout, a head not where the group expected)
//! stops the store's writes (`StoreHealth`): the node restarts and re-reads every head
//! rather than write on top of an unknown state (its next group could rewrite that
//! conversation's rows at the same (epoch, seq) timestamp). Heads refused as `Fenced` do
//! not, even when other heads of the group were published: the state is known (the fenced
//! rows stay invisible and the next owner's, at a higher epoch, win), the writer re-reads
//! the heads it held, and a resend of a message whose head was published is answered from
//! its stored dedup entry.
//!
//! # Consistency
//!
//! | what | consistency | why |
//! |---|---|---|
//! | every write an ack depends on (rows, batches) | LOCAL_QUORUM | survives the loss of a replica in the local DC; no cross-DC wait |
//! | LWTs: head publish, claims, user ids, unique names and e-mails, invites (uses and deletes), push tokens (puts and deletes) | LOCAL_SERIAL (Paxos), commit at LOCAL_QUORUM | linearizable within the DC: of two claims that saw the same epoch exactly one wins |
//!
//! A cell is written either only by LWTs or only by plain writes, never both: an LWT carries
//! its Paxos timestamp and a plain write this process's clock, so with the clocks apart a
//! plain delete just after an LWT write (or the reverse) could leave the LWT's cell alive, or
//! shadow a later write. Tokens are deleted by plain writes in logged batches (a password
//! change revokes them with the new hash, atomically), so `touch_tokens` is a plain write
//! stamped with the sighting's time; a token row holding only some cells reads as no token.
//! | reads of rows (messages, cursors, accounts, lists) | LOCAL_QUORUM | overlaps every LOCAL_QUORUM write: a write is seen once acknowledged |
//! | fence checks and `owner()` | LOCAL_SERIAL | sees every completed claim, and completes one in flight |
//!
//! Every statement is prepared once at open; upserts, deletes and reads are marked
//! idempotent, LWTs are not (never resent after an ambiguous failure). Routing is
//! token-aware (the request goes to a replica of its partition, and to the right shard) and
//! confined to `local_datacenter`; retries are bounded (the driver's default policy: at most
//! one retry per kind of failure); each request has `request_timeout_ms`.
//!
//! # Sync ports on an async driver
//!
//! The ports are synchronous and called from blocking threads (the sequencer's commit thread,
//! the read pool, `spawn_blocking`). The adapter owns a small tokio runtime
//! ([`RUNTIME_THREADS`] workers) for the driver's connections and `block_on`s each call on
//! it: the driver's I/O tasks never wait behind the backend's tasks (nor the reverse), the
//! store opens the same way in tools that have no backend runtime (`check-config`,
//! migrations, tests), and a call's own requests still run concurrently (a group's batches,
//! `last_messages`) inside its one `block_on`.

mod account_admin;
mod accounts;
mod audit;
mod codec;
mod config;
mod contacts;
mod cursors;
mod dump;
mod groups;
mod log;
mod owners;
mod push_tokens;
mod schema;
mod session;
mod statements;
mod writes;

use std::future::Future;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use super::{StoreEngine, StoreError, StoreHealth};
use crate::config::ScyllaConfig;
use statements::Statements;

/// Worker threads of the adapter's runtime: the driver's I/O is light (one connection per
/// shard), and the threads that wait are the callers', not these.
pub const RUNTIME_THREADS: usize = 2;

/// Any driver error, behind the port.
pub(super) fn engine<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Engine(Box::new(e))
}

/// The rows of a result, typed.
pub(super) fn collect<T>(result: QueryResult) -> Result<Vec<T>, StoreError>
where
    T: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = result.into_rows_result().map_err(engine)?;
    let typed = rows.rows::<T>().map_err(engine)?;
    typed.collect::<Result<Vec<T>, _>>().map_err(engine)
}

/// What an LWT found: whether it applied, and the row as it was (ScyllaDB returns the old
/// row whether or not the condition held).
pub(super) struct Lwt {
    pub applied: bool,
    columns: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    fn from_result(result: QueryResult) -> Result<Self, StoreError> {
        let rows = result.into_rows_result().map_err(engine)?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let row: Row = rows.single_row::<Row>().map_err(engine)?;
        let columns: Vec<(String, Option<CqlValue>)> = names.into_iter().zip(row.columns).collect();
        let applied = columns
            .iter()
            .find(|(n, _)| n == "[applied]")
            .and_then(|(_, v)| v.as_ref()?.as_boolean())
            .ok_or_else(|| StoreError::Corrupt("an LWT result without [applied]".into()))?;
        Ok(Self { applied, columns })
    }

    /// A bigint column of the old row (`None`: no row, or null).
    pub fn bigint(&self, name: &str) -> Option<i64> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref()?.as_bigint())
    }
}

pub struct ScyllaStore {
    /// `None` only while dropping (the session goes before the runtime).
    session: Option<Session>,
    st: Statements,
    health: Arc<StoreHealth>,
    /// Export and import statements, prepared at the first dump call (`dump/`): a server
    /// that never migrates never prepares them.
    dump_st: std::sync::OnceLock<dump::Statements>,
    /// `storage.scylla.copy_requests_max`: an import's requests in flight at once.
    copy_requests_max: usize,
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    /// The server's data dir lock, held while the store is open (`store/open.rs`).
    _dir_lock: Option<std::fs::File>,
}

impl ScyllaStore {
    /// Connects to `[storage.scylla]`'s cluster and keyspace (applying the schema if tables
    /// are missing) and prepares every statement.
    pub fn open(cfg: &ScyllaConfig) -> Result<Self, StoreError> {
        Self::open_keyspace(cfg, &cfg.keyspace)
    }

    pub(crate) fn open_keyspace(cfg: &ScyllaConfig, keyspace: &str) -> Result<Self, StoreError> {
        session::check_before_connecting(cfg, keyspace)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name(crate::threads::SCYLLA)
            .enable_all()
            .build()?;
        let (session, st) = rt.block_on(async {
            let session = session::connect(cfg, keyspace).await?;
            let st = Statements::prepare(&session).await?;
            Ok::<_, StoreError>((session, st))
        })?;
        let store = Self {
            session: Some(session),
            st,
            health: Arc::default(),
            dump_st: std::sync::OnceLock::new(),
            copy_requests_max: cfg.copy_requests_max.max(1),
            rt: Some(rt),
            _dir_lock: None,
        };
        store.run(store.index_invites_by_issuer())?;
        Ok(store)
    }

    /// The store, holding the data dir's lock for as long as it is open.
    pub fn holding_dir_lock(mut self, lock: std::fs::File) -> Self {
        self._dir_lock = Some(lock);
        self
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("the session lives until drop")
    }

    /// Runs one port call's requests on the adapter's runtime, from the caller's (blocking)
    /// thread.
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(f)
    }

    /// Refuses writes once a failure left the store's state unknown (see the module doc).
    fn writable(&self) -> Result<(), StoreError> {
        match self.health.failure() {
            None => Ok(()),
            Some(why) => Err(StoreError::WritesStopped(why.to_owned())),
        }
    }

    async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session()
            .execute_unpaged(st, values)
            .await
            .map_err(engine)
    }

    async fn rows<T>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'f> DeserializeRow<'f, 'f>,
    {
        collect(self.exec(st, values).await?)
    }

    async fn first<T>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<T>, StoreError>
    where
        T: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(st, values).await?.into_iter().next())
    }

    async fn lwt(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Lwt, StoreError> {
        Lwt::from_result(self.exec(st, values).await?)
    }

    /// A record stored whole as a blob in a one-column row.
    async fn record<T: serde::de::DeserializeOwned>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<T>, StoreError> {
        match self.first::<(Vec<u8>,)>(st, values).await? {
            Some((bytes,)) => Ok(Some(codec::unblob(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A counter of `meta` (`None` before it was first written).
    async fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .first::<(Option<i64>,)>(&self.st.meta_get, (name,))
            .await?
            .and_then(|(v,)| v)
            .map(codec::u))
    }

    /// Takes the next value of a `meta` counter that starts at `first`: a compare-and-set
    /// loop of LWTs, so that two nodes never take the same value.
    async fn take_next(&self, name: &str, first: u64) -> Result<u64, StoreError> {
        Ok(self.take_many(name, first, 1).await?.start)
    }

    /// Takes the next `count` values of a `meta` counter that starts at `first` (the id
    /// leases of cluster mode: `owners.rs`).
    async fn take_many(
        &self,
        name: &str,
        first: u64,
        count: u64,
    ) -> Result<std::ops::Range<u64>, StoreError> {
        /// A counter contended this often is a bug, not load.
        const ATTEMPTS_MAX: usize = 64;
        let end_of = |start: u64| {
            start
                .checked_add(count)
                .ok_or_else(|| StoreError::Engine(format!("meta {name} is exhausted").into()))
        };
        for _ in 0..ATTEMPTS_MAX {
            let taken = self
                .lwt(&self.st.meta_init, (name, codec::i(end_of(first)?)))
                .await?;
            if taken.applied {
                return Ok(first..end_of(first)?);
            }
            let Some(current) = taken.bigint("value") else {
                return Err(StoreError::Corrupt(format!("meta {name} is null").into()));
            };
            let next = codec::u(current);
            let moved = self
                .lwt(&self.st.meta_cas, (codec::i(end_of(next)?), name, current))
                .await?;
            if moved.applied {
                return Ok(next..end_of(next)?);
            }
        }
        Err(StoreError::Engine(
            format!("meta {name}: {ATTEMPTS_MAX} compare-and-set attempts lost").into(),
        ))
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // The session's tasks live on this runtime: close it there, then stop the
            // runtime without waiting (dropping may happen on an async thread).
            let entered = rt.enter();
            drop(self.session.take());
            drop(entered);
            rt.shutdown_background();
        }
    }
}

impl StoreEngine for ScyllaStore {
    fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    /// Every acknowledged write is already at LOCAL_QUORUM: nothing is buffered here.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One query a node of the local data centre answers, within `request_timeout_ms` (the
    /// session's profile): `Unavailable` while none does, as PostgreSQL's check.
    fn reachable(&self) -> Result<(), StoreError> {
        match self.run(self.exec(&self.st.reachable, ())) {
            Ok(_) => Ok(()),
            Err(StoreError::Engine(driver)) => Err(StoreError::Unavailable(driver)),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `RINGCHAT_TEST_SCYLLA=host:port` (a node of a test cluster; `RINGCHAT_TEST_SCYLLA_DC`
    /// names its data centre, `datacenter1` by default).
    #[cfg(ringchat_test_scylla)]
    const TEST_ENV: &str = "RINGCHAT_TEST_SCYLLA";

    #[cfg(ringchat_test_scylla)]
    pub(super) fn test_config() -> Option<ScyllaConfig> {
        let host = std::env::var(TEST_ENV).ok().filter(|h| !h.is_empty())?;
        Some(ScyllaConfig {
            hosts: vec![host],
            local_datacenter: std::env::var("RINGCHAT_TEST_SCYLLA_DC")
                .unwrap_or_else(|_| "datacenter1".into()),
            create_replication_factor: 1,
            ..ScyllaConfig::default()
        })
    }

    /// The keyspace of a test's dir: its name made a CQL identifier, so each test gets a
    /// fresh keyspace and reopening the same dir is a restart.
    pub(super) fn keyspace_of(dir: &Path) -> String {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let clean: String = name
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let mut ks = format!("rc_test_{clean}");
        ks.truncate(48);
        ks
    }

    /// The conformance suite on ScyllaDB, compiled in when `RINGCHAT_TEST_SCYLLA` names a node
    /// at build time (`backend/build.rs`).
    #[cfg(ringchat_test_scylla)]
    struct ScyllaAdapter;

    #[cfg(ringchat_test_scylla)]
    impl crate::store::conformance::Adapter for ScyllaAdapter {
        type Store = ScyllaStore;
        const EXCLUSIVE: bool = false;

        fn try_open(dir: &Path) -> Result<ScyllaStore, StoreError> {
            let cfg = test_config().expect("RINGCHAT_TEST_SCYLLA is set at run time too");
            ScyllaStore::open_keyspace(&cfg, &keyspace_of(dir))
        }
    }

    #[cfg(ringchat_test_scylla)]
    mod conformance {
        crate::store::conformance::conformance_suite!(super::ScyllaAdapter);
    }

    /// `/readyz`'s check against the test cluster. Its other half (`Unavailable` once no node
    /// answers) would need a cluster the test can stop: not tested.
    #[cfg(ringchat_test_scylla)]
    #[test]
    fn a_cluster_that_answers_is_reachable() {
        use crate::store::conformance::Adapter as _;
        let dir = tempfile::tempdir().unwrap();
        let store = ScyllaAdapter::try_open(dir.path()).unwrap();
        store.reachable().unwrap();
    }

    #[test]
    fn test_keyspaces_are_plain_names_unique_per_dir() {
        let a = keyspace_of(Path::new("/tmp/.tmpAb-9x"));
        assert_eq!(a, "rc_test__tmpab_9x");
        assert!(config::is_keyspace_name(&a));
        let long = keyspace_of(Path::new(&"x".repeat(100)));
        assert!(config::is_keyspace_name(&long), "{long}");
    }

    #[test]
    fn opening_an_unreachable_cluster_is_an_error_not_a_hang() {
        let cfg = ScyllaConfig {
            hosts: vec!["no-such-host.invalid:9042".into()],
            local_datacenter: "dc1".into(),
            ..ScyllaConfig::default()
        };
        match ScyllaStore::open(&cfg) {
            Err(StoreError::Engine(e)) => assert!(e.to_string().contains("resolve"), "{e}"),
            Err(other) => panic!("expected an engine error, got {other}"),
            Ok(_) => panic!("opened a cluster that does not exist"),
        }
        // Nothing listens on port 1: the driver gives up within connect_timeout_ms.
        let refused = ScyllaConfig {
            hosts: vec!["127.0.0.1:1".into()],
            connect_timeout_ms: 2_000,
            ..cfg
        };
        assert!(matches!(
            ScyllaStore::open(&refused),
            Err(StoreError::Engine(_))
        ));
    }
}

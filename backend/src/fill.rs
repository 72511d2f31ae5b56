//! Not an API: the embedded store behind its ports, for tools that fill a data dir for
//! benchmarks (`examples/fill_store.rs`) and time reads of it (`examples/tail_sync.rs`). It writes through the same adapter and ports as the
//! server, and changes whenever the store does.

use std::path::Path;
use std::sync::Arc;

pub use crate::config::Durability;
pub use crate::store::tail_cache::{MESSAGE_OVERHEAD_BYTES, TAIL_MESSAGES_MAX};
pub use crate::store::{
    AccountStore, CommitGroup, ConvId, ConversationLog, CursorRow, CursorStore, EngineOptions,
    MembershipStore, MessageRecord, Ports, RecencyMove, StoreEngine, StoreError, TailCached,
    TailStats, recency_bucket,
};

use ringchat_proto::v1;

/// xorshift64*: a seeded generator for benchmark tools and randomised tests, so that a run
/// replays. The seed must not be 0.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Opens (or creates) the embedded store in `dir`, as the server does, and returns its ports.
pub fn open(dir: &Path, durability: Durability) -> Result<Ports, StoreError> {
    Ok(open_with(dir, durability, &EngineOptions::default())?.0)
}

/// [`open`] with the engine's options (`storage.background_threads` …) set, and a handle to
/// settle the store.
pub fn open_with(
    dir: &Path,
    durability: Durability,
    engine: &EngineOptions,
) -> Result<(Ports, Settler), StoreError> {
    let store = Arc::new(crate::store::FjallStore::open_with(
        dir, durability, engine,
    )?);
    Ok((Ports::of(Arc::clone(&store)), Settler(store)))
}

/// Settles an open store (see `FjallStore::settle`).
pub struct Settler(Arc<crate::store::FjallStore>);

impl Settler {
    /// Every memtable flushed and nothing flushing or compacting for 300 ms (at most 10
    /// minutes); how long it took.
    pub fn settle(&self) -> Result<std::time::Duration, StoreError> {
        use std::time::Duration;
        self.0
            .settle(Duration::from_millis(300), Duration::from_secs(600))
    }
}

/// [`open`], with the conversation log behind a tail cache of `tail_cache_bytes` (as the
/// server's `storage.tail_cache_bytes`), which is also returned for its [`TailStats`].
pub fn open_tail_cached(
    dir: &Path,
    durability: Durability,
    tail_cache_bytes: usize,
) -> Result<(Ports, Arc<TailCached<crate::store::FjallStore>>), StoreError> {
    let store = Arc::new(crate::store::FjallStore::open(dir, durability)?);
    let cached = Arc::new(TailCached::new(Arc::clone(&store), tail_cache_bytes));
    let ports = Ports {
        log: Arc::clone(&cached) as _,
        ..Ports::of(store)
    };
    Ok((ports, cached))
}

/// The server's Sync read (`messaging::reads::sync`), as a client's request gets it (pages
/// within the default `login.resume_bytes_max`).
pub fn sync(
    ports: &Ports,
    user: crate::api::UserId,
    req: &v1::Sync,
    page_max: u32,
) -> Result<v1::SyncBatch, String> {
    crate::messaging::reads::sync(
        ports,
        user,
        req,
        page_max,
        crate::config::RESUME_BYTES_MAX_DEFAULT,
    )
    .map_err(|r| format!("{r:?}"))
}

//! Not an API: the embedded store behind its ports, for tools that fill a data dir for
//! benchmarks (`examples/fill_store.rs`). It writes through the same adapter and ports as the
//! server, and changes whenever the store does.

use std::path::Path;
use std::sync::Arc;

pub use crate::config::Durability;
pub use crate::store::{
    AccountStore, CommitGroup, ConvId, ConversationLog, CursorRow, CursorStore, MembershipStore,
    MessageRecord, Ports, RecencyMove, StoreEngine, StoreError, recency_bucket,
};

/// Opens (or creates) the embedded store in `dir`, as the server does, and returns its ports.
pub fn open(dir: &Path, durability: Durability) -> Result<Ports, StoreError> {
    Ok(Ports::of(Arc::new(crate::store::FjallStore::open(
        dir, durability,
    )?)))
}

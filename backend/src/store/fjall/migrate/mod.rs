//! Layout 1 → layout 2, once, at open.
//!
//! Layout 1 stored one key per message (`messages`: (conversation, seq) → message), a global
//! `dedup` keyspace ((sender, client_msg_id) → where it was stored), `cursors` and
//! `device_cursors`. Layout 2 keeps runs, recalls and cursor rows (see `mod.rs`). The migration
//! is idempotent: it writes layout 2's keys (the same keys whenever it runs), makes them durable
//! whatever `durability` says, records the layout, and only then deletes the old keyspaces; a
//! crash anywhere in between leaves a store that the next open migrates (or cleans up) again.
//! Old values are read as layout 1 wrote them (`layout_1.rs`), never as today's records.

mod layout_1;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use fjall::{KeyspaceCreateOptions, Readable};

use super::cursors::recent_key;
use super::rebuild::RebuildBatch;
use super::{FjallStore, be_u64, decode, encode, pair_key};
use crate::store::{
    ConvId, CursorRow, DeviceCursor, MessageRecord, RecentSend, StoreError, client_msg_id_hash,
    recency_bucket,
};
use crate::time::now_ms;

const META_LAYOUT: &[u8] = b"layout";
const LAYOUT_CURRENT: u64 = 2;
/// Layout 1's keyspaces, deleted once their content is in layout 2.
const LAYOUT_1_KEYSPACES: [&str; 5] = [
    "messages",
    "dedup",
    "cursors",
    "device_cursors",
    "user_conversations",
];
/// Messages per run written by the migration, at most.
const RUN_MESSAGES_MAX: usize = 64;
/// Recent sends carried over per (conversation, sender), at most (the sequencer keeps its own
/// window from the next send on).
const RECENT_SENDS_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("the data dir has store layout {0}; this ringchat knows layouts 1 and {LAYOUT_CURRENT}")]
struct UnknownLayout(u64);

#[expect(
    clippy::disallowed_methods,
    reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
)]
pub(super) fn to_current_layout(store: &FjallStore) -> Result<(), StoreError> {
    let layout = match store.meta.get(META_LAYOUT)? {
        Some(v) => Some(be_u64(&v)?),
        None => None,
    };
    // No other writer runs yet; the rebuild's batches assert the lock all the same.
    let _writing = store.write_lock();
    match layout {
        Some(LAYOUT_CURRENT) => return delete_layout_1(store),
        Some(other) => return Err(StoreError::Corrupt(UnknownLayout(other).into())),
        None => {}
    }
    let old: Vec<&str> = LAYOUT_1_KEYSPACES
        .into_iter()
        .filter(|name| store.db.keyspace_exists(name))
        .collect();
    if !old.is_empty() {
        let started = std::time::Instant::now();
        let (messages, last_times) = migrate_messages(store)?;
        let rows = migrate_rows(store)?;
        index_recency(store, &last_times)?;
        tracing::info!(
            messages,
            rows,
            ms = started.elapsed().as_millis() as u64,
            "store migrated from layout 1 to layout 2"
        );
    }
    store
        .meta
        .insert(META_LAYOUT, LAYOUT_CURRENT.to_be_bytes())?;
    // Synced whatever `durability` says: deleting layout 1 is durable at once, and with
    // `durability = "none"` a power cut would otherwise lose its messages for good.
    store.sync_now()?;
    delete_layout_1(store)
}

fn delete_layout_1(store: &FjallStore) -> Result<(), StoreError> {
    for name in LAYOUT_1_KEYSPACES {
        if store.db.keyspace_exists(name) {
            let keyspace = store.db.keyspace(name, KeyspaceCreateOptions::default)?;
            store.db.delete_keyspace(keyspace)?;
        }
    }
    Ok(())
}

fn old_keyspace(store: &FjallStore, name: &str) -> Result<Option<fjall::Keyspace>, StoreError> {
    if !store.db.keyspace_exists(name) {
        return Ok(None);
    }
    Ok(Some(
        store.db.keyspace(name, KeyspaceCreateOptions::default)?,
    ))
}

/// Writes every layout 1 message into runs (and recalls); returns how many, and each
/// conversation's last activity.
fn migrate_messages(store: &FjallStore) -> Result<(u64, BTreeMap<u64, u64>), StoreError> {
    let mut last_times = BTreeMap::new();
    let Some(messages) = old_keyspace(store, "messages")? else {
        return Ok((0, last_times));
    };
    let mut count = 0;
    let mut batch = RebuildBatch::new(store);
    let mut run: Vec<MessageRecord> = Vec::new();
    let put_run = |batch: &mut RebuildBatch, run: &mut Vec<MessageRecord>| {
        let written = match run.first() {
            Some(first) => batch.insert(
                &store.runs,
                pair_key(first.conv_id.to_wire(), first.seq),
                super::log::encode_run(run.iter()),
            ),
            None => Ok(()),
        };
        run.clear();
        written
    };
    for guard in store.db.snapshot().iter(&messages) {
        let (_, value) = guard.into_inner()?;
        let m = MessageRecord::from(decode::<layout_1::Message>(&value)?);
        count += 1;
        let last = last_times.entry(m.conv_id.to_wire()).or_insert(0);
        *last = m.server_time_ms.max(*last);
        if m.recalled {
            batch.insert(
                &store.recalls,
                pair_key(m.conv_id.to_wire(), m.seq),
                m.recall_event_seq.to_be_bytes(),
            )?;
        }
        let continues = run
            .last()
            .is_some_and(|last| last.conv_id == m.conv_id && last.seq + 1 == m.seq);
        if !continues || run.len() >= RUN_MESSAGES_MAX {
            put_run(&mut batch, &mut run)?;
        }
        run.push(m);
    }
    put_run(&mut batch, &mut run)?;
    batch.finish()?;
    Ok((count, last_times))
}

/// Indexes every (user, conversation) of layout 1's `user_conversations` by the
/// conversation's last activity.
fn index_recency(store: &FjallStore, last_times: &BTreeMap<u64, u64>) -> Result<(), StoreError> {
    let Some(user_conversations) = old_keyspace(store, "user_conversations")? else {
        return Ok(());
    };
    let mut batch = RebuildBatch::new(store);
    for guard in store.db.snapshot().iter(&user_conversations) {
        let key = guard.key()?;
        let (user, conv) = key_pair(&key)?;
        if let Some(time) = last_times.get(&conv) {
            let key = recent_key(user, recency_bucket(*time), ConvId::from_stored(conv));
            batch.insert(&store.recent, key, [])?;
        }
    }
    batch.finish()
}

/// Folds layout 1's cursors, device cursors and dedup entries into cursor rows; returns how many.
fn migrate_rows(store: &FjallStore) -> Result<usize, StoreError> {
    let mut rows: BTreeMap<(u64, u64), CursorRow> = BTreeMap::new();
    let snapshot = store.db.snapshot();
    if let Some(cursors) = old_keyspace(store, "cursors")? {
        for guard in snapshot.iter(&cursors) {
            let (key, value) = guard.into_inner()?;
            let cursor: layout_1::Cursor = decode(&value)?;
            rows.entry(key_pair(&key)?).or_default().cursor = cursor.into();
        }
    }
    let seen_ms = now_ms();
    if let Some(devices) = old_keyspace(store, "device_cursors")? {
        for guard in snapshot.iter(&devices) {
            let (key, value) = guard.into_inner()?;
            let device_id = String::from_utf8_lossy(key.get(16..).unwrap_or_default()).into_owned();
            rows.entry(key_pair(&key)?)
                .or_default()
                .devices
                .push(DeviceCursor {
                    device_id,
                    delivered_seq: be_u64(&value)?,
                    seen_ms,
                });
        }
    }
    if let Some(dedup) = old_keyspace(store, "dedup")? {
        for guard in snapshot.iter(&dedup) {
            let (key, value) = guard.into_inner()?;
            let Some((sender, client_msg_id)) = key.split_first_chunk::<8>() else {
                continue;
            };
            let record: layout_1::Dedup = decode(&value)?;
            let row = rows
                .entry((record.conv_id, u64::from_be_bytes(*sender)))
                .or_default();
            row.recent_sends.push(RecentSend {
                client_msg_id_hash: client_msg_id_hash(&String::from_utf8_lossy(client_msg_id)),
                seq: record.seq,
            });
        }
    }
    let mut batch = RebuildBatch::new(store);
    let count = rows.len();
    for ((conv, user), mut row) in rows {
        row.recent_sends.sort_by_key(|s| s.seq);
        let excess = row.recent_sends.len().saturating_sub(RECENT_SENDS_MAX);
        row.recent_sends.drain(..excess);
        row.devices.truncate(crate::store::DEVICES_PER_ROW_MAX);
        batch.insert(&store.cursor_rows, pair_key(conv, user), encode(&row))?;
    }
    batch.finish()?;
    Ok(count)
}

fn key_pair(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let conv = be_u64(key.get(..8).unwrap_or_default())?;
    let user = be_u64(key.get(8..16).unwrap_or_default())?;
    Ok((conv, user))
}

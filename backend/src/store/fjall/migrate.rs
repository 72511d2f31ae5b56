//! Layout 1 → layout 2, once, at open.
//!
//! Layout 1 stored one key per message (`messages`: (conversation, seq) → message), a global
//! `dedup` keyspace ((sender, client_msg_id) → where it was stored), `cursors` and
//! `device_cursors`. Layout 2 keeps runs, recalls and cursor rows (see `mod.rs`). The migration
//! is idempotent: it writes layout 2's keys (the same keys whenever it runs), makes them durable,
//! records the layout, and only then deletes the old keyspaces; a crash anywhere in between
//! leaves a store that the next open migrates (or cleans up) again.

use std::collections::BTreeMap;

use fjall::{KeyspaceCreateOptions, Readable};

use super::cursors::recent_key;
use super::{FjallStore, be_u64, decode, encode, pair_key};
use crate::store::{
    ConvId, CursorRecord, CursorRow, DedupRecord, DeviceCursor, MessageRecord, RecentSend,
    StoreError, client_msg_id_hash, recency_bucket,
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
/// Keys per batch written by the migration, at most.
const BATCH_KEYS_MAX: usize = 4096;
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
    store.persist()?;
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
#[expect(
    clippy::disallowed_methods,
    reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
)]
fn migrate_messages(store: &FjallStore) -> Result<(u64, BTreeMap<u64, u64>), StoreError> {
    let mut last_times = BTreeMap::new();
    let Some(messages) = old_keyspace(store, "messages")? else {
        return Ok((0, last_times));
    };
    let mut count = 0;
    let mut batch = store.db.batch();
    let mut run: Vec<MessageRecord> = Vec::new();
    let flush_run = |batch: &mut fjall::OwnedWriteBatch, run: &mut Vec<MessageRecord>| {
        if let Some(first) = run.first() {
            batch.insert(
                &store.runs,
                pair_key(first.conv_id.to_wire(), first.seq),
                super::log::encode_run(run.iter()),
            );
        }
        run.clear();
    };
    for guard in store.db.snapshot().iter(&messages) {
        let (_, value) = guard.into_inner()?;
        let m: MessageRecord = decode(&value)?;
        count += 1;
        let last = last_times.entry(m.conv_id.to_wire()).or_insert(0);
        *last = m.server_time_ms.max(*last);
        if m.recalled {
            batch.insert(
                &store.recalls,
                pair_key(m.conv_id.to_wire(), m.seq),
                m.recall_event_seq.to_be_bytes(),
            );
        }
        let continues = run
            .last()
            .is_some_and(|last| last.conv_id == m.conv_id && last.seq + 1 == m.seq);
        if !continues || run.len() >= RUN_MESSAGES_MAX {
            flush_run(&mut batch, &mut run);
        }
        run.push(m);
        if batch.len() >= BATCH_KEYS_MAX {
            std::mem::replace(&mut batch, store.db.batch()).commit()?;
        }
    }
    flush_run(&mut batch, &mut run);
    batch.commit()?;
    Ok((count, last_times))
}

/// Indexes every (user, conversation) of layout 1's `user_conversations` by the
/// conversation's last activity.
#[expect(
    clippy::disallowed_methods,
    reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
)]
fn index_recency(store: &FjallStore, last_times: &BTreeMap<u64, u64>) -> Result<(), StoreError> {
    let Some(user_conversations) = old_keyspace(store, "user_conversations")? else {
        return Ok(());
    };
    let mut batch = store.db.batch();
    for guard in store.db.snapshot().iter(&user_conversations) {
        let key = guard.key()?;
        let (user, conv) = key_pair(&key)?;
        if let Some(time) = last_times.get(&conv) {
            let key = recent_key(user, recency_bucket(*time), ConvId::from_stored(conv));
            batch.insert(&store.recent, key, []);
        }
        if batch.len() >= BATCH_KEYS_MAX {
            std::mem::replace(&mut batch, store.db.batch()).commit()?;
        }
    }
    batch.commit()?;
    Ok(())
}

/// Folds layout 1's cursors, device cursors and dedup entries into cursor rows; returns how many.
#[expect(
    clippy::disallowed_methods,
    reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
)]
fn migrate_rows(store: &FjallStore) -> Result<usize, StoreError> {
    let mut rows: BTreeMap<(u64, u64), CursorRow> = BTreeMap::new();
    let snapshot = store.db.snapshot();
    if let Some(cursors) = old_keyspace(store, "cursors")? {
        for guard in snapshot.iter(&cursors) {
            let (key, value) = guard.into_inner()?;
            let cursor: CursorRecord = decode(&value)?;
            rows.entry(key_pair(&key)?).or_default().cursor = cursor;
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
            let record: DedupRecord = decode(&value)?;
            let row = rows
                .entry((record.conv_id.to_wire(), u64::from_be_bytes(*sender)))
                .or_default();
            row.recent_sends.push(RecentSend {
                client_msg_id_hash: client_msg_id_hash(&String::from_utf8_lossy(client_msg_id)),
                seq: record.seq,
            });
        }
    }
    let mut batch = store.db.batch();
    let count = rows.len();
    for ((conv, user), mut row) in rows {
        row.recent_sends.sort_by_key(|s| s.seq);
        let excess = row.recent_sends.len().saturating_sub(RECENT_SENDS_MAX);
        row.recent_sends.drain(..excess);
        row.devices.truncate(crate::store::DEVICES_PER_ROW_MAX);
        batch.insert(&store.cursor_rows, pair_key(conv, user), encode(&row));
        if batch.len() >= BATCH_KEYS_MAX {
            std::mem::replace(&mut batch, store.db.batch()).commit()?;
        }
    }
    batch.commit()?;
    Ok(count)
}

fn key_pair(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let conv = be_u64(key.get(..8).unwrap_or_default())?;
    let user = be_u64(key.get(8..16).unwrap_or_default())?;
    Ok((conv, user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::{ConversationLog, CursorStore, MembershipStore, USER_ID_FIRST};

    const A: u64 = USER_ID_FIRST;
    const B: u64 = USER_ID_FIRST + 1;

    fn old_message(conv: ConvId, seq: u64) -> MessageRecord {
        MessageRecord {
            conv_id: conv,
            seq,
            msg_id: 100 + seq,
            from: A,
            to: B,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: format!("m{seq}").into_bytes().into(),
            server_time_ms: 1_000 + seq,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        }
    }

    /// Writes a store the way layout 1 did (raw keys), with 150 messages (more than one run),
    /// one of them recalled, cursors, a device cursor and dedup entries.
    #[expect(
        clippy::disallowed_methods,
        reason = "a bare fjall database, not a store"
    )]
    fn write_layout_1(dir: &std::path::Path, ab: ConvId) {
        let db = fjall::Database::builder(dir).open().unwrap();
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
        let (messages, dedup, cursors, devices, meta) = (
            ks("messages"),
            ks("dedup"),
            ks("cursors"),
            ks("device_cursors"),
            ks("meta"),
        );
        for seq in 1..=150 {
            let mut m = old_message(ab, seq);
            if seq == 7 {
                m.recalled = true;
                m.content.clear();
                m.recall_event_seq = 150;
            }
            messages
                .insert(pair_key(ab.to_wire(), seq), encode(&m))
                .unwrap();
            let mut key = A.to_be_bytes().to_vec();
            key.extend_from_slice(m.client_msg_id.as_bytes());
            let record = DedupRecord {
                conv_id: ab,
                seq,
                msg_id: m.msg_id,
                server_time_ms: m.server_time_ms,
            };
            dedup.insert(key, encode(&record)).unwrap();
        }
        let cursor = CursorRecord {
            delivered_seq: 150,
            read_seq: 120,
        };
        cursors
            .insert(pair_key(ab.to_wire(), B), encode(&cursor))
            .unwrap();
        let mut key = pair_key(ab.to_wire(), B).to_vec();
        key.extend_from_slice(b"phone");
        devices.insert(key, 140u64.to_be_bytes()).unwrap();
        meta.insert(super::super::log::META_NEXT_MSG_ID, 251u64.to_be_bytes())
            .unwrap();
        let convs = ks("user_conversations");
        for user in [A, B] {
            convs.insert(pair_key(user, ab.to_wire()), []).unwrap();
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    #[test]
    fn a_layout_1_store_is_migrated_on_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let ab = ConvId::direct(A, B).unwrap();
        write_layout_1(dir.path(), ab);
        for open in ["migrating", "reopened"] {
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            let all = store.messages_after(ab, 0, usize::MAX).unwrap();
            assert_eq!(all.len(), 150, "{open}");
            for (i, m) in all.iter().enumerate() {
                let mut expected = old_message(ab, i as u64 + 1);
                if m.seq == 7 {
                    expected.recalled = true;
                    expected.content.clear();
                    expected.recall_event_seq = 150;
                }
                assert_eq!(*m, expected, "{open}");
            }
            assert_eq!(store.last_message(ab).unwrap().unwrap().seq, 150, "{open}");
            assert_eq!(store.next_msg_id().unwrap(), 251, "{open}");
            let row = store.cursor_row(ab, B).unwrap().unwrap();
            assert_eq!(row.cursor.delivered_seq, 150, "{open}");
            assert_eq!(row.cursor.read_seq, 120, "{open}");
            assert_eq!(row.device_cursor("phone"), Some(140), "{open}");
            let sends = store.cursor_row(ab, A).unwrap().unwrap();
            assert_eq!(
                sends.maybe_sent("c150").collect::<Vec<_>>(),
                [150],
                "{open}"
            );
            assert_eq!(sends.recent_sends.len(), 150, "{open}");
            let bucket = recency_bucket(old_message(ab, 150).server_time_ms);
            for user in [A, B] {
                let recent = store.recent_conversations(user, u64::MAX, 10).unwrap();
                assert_eq!(recent, vec![(bucket, ab)], "{open}: recency of {user}");
            }
            for name in LAYOUT_1_KEYSPACES {
                assert!(
                    !store.db.keyspace_exists(name),
                    "{open}: {name} left behind"
                );
            }
        }
    }
}

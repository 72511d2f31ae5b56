//! The journal repair on journals fjall wrote, torn and corrupted on purpose.
use super::*;
use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use crate::config::Durability;

const BATCHES: u64 = 20;
const ITEMS_PER_BATCH: u64 = 5;

fn value(batch: u64, item: u64) -> Vec<u8> {
    format!("batch {batch} item {item} ")
        .into_bytes()
        .repeat(20)
}

/// Values fjall compresses in its journal (lz4 from 4 KiB on, by default).
fn big_value(batch: u64, item: u64) -> Vec<u8> {
    format!("batch {batch} item {item} ")
        .into_bytes()
        .repeat(500)
}

/// A database whose journal holds `BATCHES` durable batches; returns the journal's path.
fn write_store(dir: &Path) -> PathBuf {
    write_store_of(dir, value)
}

fn write_store_of(dir: &Path, value: fn(u64, u64) -> Vec<u8>) -> PathBuf {
    let db = open_database(dir, 1, Durability::Fsync).unwrap();
    let ks = db
        .keyspace("messages", KeyspaceCreateOptions::default)
        .unwrap();
    for b in 0..BATCHES {
        // A bare fjall database, no store (no prefill) over it.
        #[expect(clippy::disallowed_methods, reason = "not a store")]
        let mut batch = db.batch();
        for i in 0..ITEMS_PER_BATCH {
            batch.insert(&ks, (b * 100 + i).to_be_bytes(), value(b, i));
        }
        batch.commit().unwrap();
        db.persist(PersistMode::SyncData).unwrap();
    }
    drop(ks);
    drop(db);
    let journals = journals(dir).unwrap();
    assert_eq!(journals.len(), 1, "{journals:?}");
    journals[0].1.clone()
}

fn batches_of(journal: &Path) -> Vec<Batch> {
    let batches = scan(&std::fs::read(journal).unwrap()).batches;
    assert!(batches.iter().all(|b| b.fault.is_none()));
    batches
}

/// Zeroes 16 bytes in the middle of a batch's items, leaving its Start and End intact.
fn tear(journal: &Path, batch: &Batch) {
    let mut data = std::fs::read(journal).unwrap();
    let mid = ((batch.start + batch.end) / 2) as usize;
    data[mid..mid + 16].fill(0);
    std::fs::write(journal, data).unwrap();
}

fn stored(dir: &Path) -> Vec<u64> {
    stored_with(dir, Durability::Fsync)
}

fn stored_with(dir: &Path, durability: Durability) -> Vec<u64> {
    let db = open_database(dir, 1, durability).unwrap();
    let ks = db
        .keyspace("messages", KeyspaceCreateOptions::default)
        .unwrap();
    ks.iter()
        .map(|kv| {
            let key = kv.key().unwrap();
            u64::from_be_bytes(<[u8; 8]>::try_from(&key[..]).unwrap())
        })
        .collect()
}

fn expected(batches: u64) -> Vec<u64> {
    (0..batches)
        .flat_map(|b| (0..ITEMS_PER_BATCH).map(move |i| b * 100 + i))
        .collect()
}

/// A data dir with a store written by [`write_store`], its journal and the journal's batches
/// (the temp dir lives as long as the first element).
fn journal_with_batches() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<Batch>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let journal = write_store(&dir);
    let batches = batches_of(&journal);
    (tmp, dir, journal, batches)
}

#[test]
fn journal_repair_drops_a_torn_last_batch_and_keeps_the_rest() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    assert!(batches.len() as u64 >= BATCHES, "{batches:?}");
    let last = batches.last().unwrap().clone();
    tear(&journal, &last);
    // Unrepaired, fjall refuses this journal: the case this module exists for.
    match Database::builder(&dir).open() {
        Err(fjall::Error::JournalRecovery(JournalRecoveryError::ChecksumMismatch)) => {}
        other => panic!("fjall opened a torn journal: {:?}", other.map(|_| ())),
    }
    assert_eq!(stored(&dir), expected(BATCHES - 1));
    // And it stays repaired: the next open needs nothing.
    assert_eq!(stored(&dir), expected(BATCHES - 1));
}

#[test]
fn journal_repair_refuses_a_bad_batch_before_the_last() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let earlier = batches[batches.len() - 5].clone();
    tear(&journal, &earlier);
    let before = std::fs::read(&journal).unwrap();
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(msg.contains(&journal.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("byte {}", earlier.start)), "{msg}");
    assert!(msg.contains("batches follow it"), "{msg}");
    assert!(msg.contains("will not open"), "{msg}");
    // Nothing was cut.
    assert_eq!(std::fs::read(&journal).unwrap(), before);
}

/// fjall decompresses an lz4 journal value as it reads it, and a value that fails to
/// decompress ends its reading there, silently: the batches after it would be dropped.
#[test]
fn journal_repair_refuses_a_bad_compressed_batch_before_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let journal = write_store_of(&dir, big_value);
    let batches = batches_of(&journal);
    let earlier = batches[batches.len() - 5].clone();
    tear(&journal, &earlier);
    let before = std::fs::read(&journal).unwrap();
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("byte {}", earlier.start)),
        "{err}"
    );
    assert_eq!(std::fs::read(&journal).unwrap(), before, "nothing was cut");
}

#[test]
fn journal_repair_refuses_a_bad_batch_in_an_older_journal() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let last = batches.last().unwrap().clone();
    // A newer, empty journal beside it makes this one sealed.
    let newer = dir.join(format!("{}.jnl", journals(&dir).unwrap()[0].0 + 1));
    std::fs::write(&newer, []).unwrap();
    tear(&journal, &last);
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("sealed"), "{err}");
}

/// Zeroes the tag of a batch's first item: fjall stops reading the journal there.
fn cut_tag(journal: &Path, batch: &Batch) {
    let mut data = std::fs::read(journal).unwrap();
    let first_item = batch.start as usize + 13; // after Start: tag, u32, u64
    assert_eq!(data[first_item], TAG_ITEM);
    data[first_item] = 0;
    std::fs::write(journal, data).unwrap();
}

#[test]
fn journal_repair_refuses_an_unreadable_entry_before_the_last_batch() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let earlier = batches[batches.len() - 5].clone();
    cut_tag(&journal, &earlier);
    let before = std::fs::read(&journal).unwrap();
    // fjall alone would open this and drop the last five batches without a word.
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("byte {}", earlier.start + 13)),
        "{msg}"
    );
    assert!(msg.contains("a complete batch follows"), "{msg}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
}

#[test]
fn journal_repair_lets_fjall_drop_an_unreadable_last_batch() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    cut_tag(&journal, batches.last().unwrap());
    assert_eq!(stored(&dir), expected(BATCHES - 1));
}

#[test]
fn journal_repair_scan_reads_what_fjall_wrote() {
    let (_tmp, dir, _journal, batches) = journal_with_batches();
    let items: u64 = batches
        .iter()
        .filter(|b| b.item_count as u64 == ITEMS_PER_BATCH)
        .count() as u64;
    assert_eq!(items, BATCHES);
    for pair in batches.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "batches are back to back");
        assert!(pair[0].seqno < pair[1].seqno);
    }
    assert_eq!(stored(&dir), expected(BATCHES));
}

/// The number of `write_store` batches (of `ITEMS_PER_BATCH` items) before `batches[k]`.
fn written_before(batches: &[Batch], k: usize) -> u64 {
    batches[..k]
        .iter()
        .filter(|b| u64::from(b.item_count) == ITEMS_PER_BATCH)
        .count() as u64
}

/// With `durability = "none"` the unsynced batches reach the disk in any order: a torn batch
/// with whole ones after it is what a power cut leaves, and the store opens without it and
/// without them (under `fsync` the same journal is refused: the test above).
#[test]
fn journal_repair_under_durability_none_cuts_at_a_torn_batch_with_whole_ones_after() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let k = batches.len() - 5;
    let earlier = batches[k].clone();
    tear(&journal, &earlier);
    assert!(open_database(&dir, 1, Durability::Fsync).is_err());
    let kept = expected(written_before(&batches, k));
    assert_eq!(stored_with(&dir, Durability::None), kept);
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        earlier.start,
        "cut at the torn batch"
    );
    // Cut for good: the strict rule finds nothing more.
    assert_eq!(stored(&dir), kept);
}

#[test]
fn journal_repair_under_durability_none_cuts_at_an_unreadable_entry_with_batches_after() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let k = batches.len() - 5;
    cut_tag(&journal, &batches[k]);
    assert!(open_database(&dir, 1, Durability::Fsync).is_err());
    let kept = expected(written_before(&batches, k));
    assert_eq!(stored_with(&dir, Durability::None), kept);
    assert_eq!(stored(&dir), kept);
}

/// A sealed journal was fsynced whole whatever the durability: a bad batch in it is not a
/// power cut's.
#[test]
fn journal_repair_under_durability_none_refuses_a_bad_batch_in_an_older_journal() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let newer = dir.join(format!("{}.jnl", journals(&dir).unwrap()[0].0 + 1));
    std::fs::write(&newer, []).unwrap();
    tear(&journal, &batches[batches.len() - 5]);
    let before = std::fs::read(&journal).unwrap();
    let err = open_database(&dir, 1, Durability::None)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("sealed"), "{err}");
    assert_eq!(std::fs::read(&journal).unwrap(), before, "nothing was cut");
}

/// A real whole batch after a torn one refuses the open under `fsync` when it is the journal's
/// last, and when a torn tail follows it.
#[test]
fn journal_repair_refuses_whole_batches_after_a_torn_one_up_to_the_end_or_a_torn_tail() {
    let (_tmp, dir, journal, batches) = journal_with_batches();
    let second_last = batches[batches.len() - 2].clone();
    tear(&journal, &second_last);
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("byte {}", second_last.start))
            && err.to_string().contains("batches follow it"),
        "{err}"
    );

    let (_tmp, dir, journal, batches) = journal_with_batches();
    tear(&journal, &batches[batches.len() - 5]);
    tear(&journal, batches.last().unwrap());
    let err = open_database(&dir, 1, Durability::Fsync)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("batches follow it"), "{err}");
}

/// A well-formed fjall batch of one item, as a message's content can spell it.
fn planted_batch(seqno: u64, keyspace_id: u64) -> Vec<u8> {
    let (key, value) = (&b"planted"[..], &b"by a user"[..]);
    let mut item = vec![TAG_ITEM, 0, 0];
    item.extend(keyspace_id.to_le_bytes());
    item.extend((key.len() as u16).to_le_bytes());
    item.extend((value.len() as u32).to_le_bytes());
    item.extend((value.len() as u32).to_le_bytes());
    item.extend(key);
    item.extend(value);
    let mut batch = vec![TAG_START];
    batch.extend(1u32.to_le_bytes());
    batch.extend(seqno.to_le_bytes());
    batch.extend(&item);
    batch.push(TAG_END);
    batch.extend(xxhash_rust::xxh3::xxh3_64(&item).to_le_bytes());
    batch.extend(MAGIC);
    batch
}

/// A store whose last batch's values are `last_value(planted)`, `planted` being a batch with
/// the seqno a real batch right after that last one would have and the keyspace id it writes:
/// the best guess a user sending it could make. Returns the journal, its batches and `planted`.
fn store_with_planted_last_batch(
    dir: &Path,
    last_value: fn(&[u8]) -> Vec<u8>,
) -> (PathBuf, Vec<Batch>, Vec<u8>) {
    let db = open_database(dir, 1, Durability::Fsync).unwrap();
    let ks = db
        .keyspace("messages", KeyspaceCreateOptions::default)
        .unwrap();
    let mut planted = Vec::new();
    for b in 0..BATCHES {
        if b == BATCHES - 1 {
            let journal = &journals(dir).unwrap()[0].1;
            let data = std::fs::read(journal).unwrap();
            let before = scan(&data).batches.last().unwrap().clone();
            let first_item = before.start as usize + 13;
            let keyspace_id =
                u64::from_le_bytes(data[first_item + 3..first_item + 11].try_into().unwrap());
            planted = planted_batch(before.seqno + 2, keyspace_id);
        }
        #[expect(clippy::disallowed_methods, reason = "not a store")]
        let mut batch = db.batch();
        for i in 0..ITEMS_PER_BATCH {
            let v = if b == BATCHES - 1 {
                last_value(&planted)
            } else {
                value(b, i)
            };
            batch.insert(&ks, (b * 100 + i).to_be_bytes(), v);
        }
        batch.commit().unwrap();
        db.persist(PersistMode::SyncData).unwrap();
    }
    drop(ks);
    drop(db);
    let journal = journals(dir).unwrap()[0].1.clone();
    let batches = batches_of(&journal);
    (journal, batches, planted)
}

/// The planted batch passes every check but the chain: it is whole, writes a keyspace the
/// store has, and its seqno is the one a batch after the last would have.
fn assert_only_the_chain_refuses(dir: &Path, journal: &Path, batches: &[Batch], planted: &[u8]) {
    let data = std::fs::read(journal).unwrap();
    let keyspaces = keyspace_ids(dir).unwrap();
    let j = Journal {
        data: &data,
        written: written_len(&data),
        keyspaces: &keyspaces,
    };
    let at = data
        .windows(planted.len())
        .position(|w| w == planted)
        .expect("the planted batch in the journal");
    let (seqno, _) = j.batch_at(at).expect("a whole batch");
    let before_last = &batches[batches.len() - 2];
    let anchor = Anchor {
        seqno: before_last.seqno,
        end: before_last.end as usize,
    };
    assert!(anchor.admits(seqno, at));
    assert!(!j.chain_reaches_end(at, &mut HashMap::new()));
}

/// A message's content that is a well-formed batch, in the torn, never-acked last batch, after
/// the point where fjall stops reading: the tail is dropped, the store opens.
#[test]
fn journal_repair_drops_a_torn_tail_that_holds_a_planted_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let (journal, batches, planted) = store_with_planted_last_batch(&dir, |planted| {
        [&b"see what I found: "[..], planted].concat()
    });
    assert_only_the_chain_refuses(&dir, &journal, &batches, &planted);
    cut_tag(&journal, batches.last().unwrap());
    assert_eq!(stored(&dir), expected(BATCHES - 1));
    assert_eq!(stored(&dir), expected(BATCHES - 1));
}

/// The same where the tear shortens a value's length: fjall's reader (and the scan) then
/// reads on inside the value, where the content ends the torn batch with an End entry and
/// follows it with a whole one. That batch is not the journal's: the tail is cut.
#[test]
fn journal_repair_cuts_a_torn_tail_whose_misread_value_holds_a_planted_batch() {
    const VALUE_BYTES: usize = 300; // on_disk_len 0x012C: zeroing its second byte leaves 44
    const MISREAD_BYTES: usize = 0x2C;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let (journal, batches, planted) = store_with_planted_last_batch(&dir, |planted| {
        let mut v = vec![b'x'; MISREAD_BYTES];
        v.push(TAG_END);
        v.extend(b"checksum");
        v.extend(MAGIC);
        v.extend(planted);
        v.resize(VALUE_BYTES, 0);
        v
    });
    assert_only_the_chain_refuses(&dir, &journal, &batches, &planted);
    let last = batches.last().unwrap().clone();
    let mut data = std::fs::read(&journal).unwrap();
    let on_disk_len = last.start as usize + 13 + 17;
    assert_eq!(
        data[on_disk_len..on_disk_len + 4],
        (VALUE_BYTES as u32).to_le_bytes()
    );
    data[on_disk_len + 1] = 0;
    std::fs::write(&journal, &data).unwrap();
    // The scan now sees the torn batch followed by the planted one.
    let misread = scan(&data);
    assert!(misread.batches.iter().any(|b| b.fault.is_some()));
    assert!(misread.batches.last().unwrap().fault.is_none());
    assert_eq!(stored(&dir), expected(BATCHES - 1));
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), last.start);
}

//! The journal repair on journals fjall wrote, torn and corrupted on purpose.
use super::*;
use fjall::{Database, KeyspaceCreateOptions, PersistMode};

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
    let db = open_database(dir, 1).unwrap();
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
    let db = open_database(dir, 1).unwrap();
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
    let err = open_database(&dir, 1).map(|_| ()).unwrap_err();
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
    let err = open_database(&dir, 1).map(|_| ()).unwrap_err();
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
    let err = open_database(&dir, 1).map(|_| ()).unwrap_err();
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
    let err = open_database(&dir, 1).map(|_| ()).unwrap_err();
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

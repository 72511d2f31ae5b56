use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::*;
use crate::config::Durability;
use crate::fill::Rng;
use crate::store::FjallStore;
use crate::store::fjall::EngineOptions;

const MIB: u64 = 1 << 20;

/// A journal as fjall starts one: `len` bytes, all hole.
fn sparse(dir: &Path, len: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("1.jnl"))
        .unwrap();
    file.set_len(len).unwrap();
    file
}

/// fjall's writes: bytes that are never zero.
fn write_data(file: &File, at: u64, len: usize, rng: &mut Rng) {
    let bytes: Vec<u8> = (0..len).map(|_| rng.below(255) as u8 + 1).collect();
    file.write_all_at(&bytes, at).unwrap();
}

fn content(file: &File) -> Vec<u8> {
    let mut all = vec![0; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut all, 0).unwrap();
    all
}

/// Bytes the file system has allocated for the file.
fn allocated(file: &File) -> u64 {
    file.metadata().unwrap().blocks() * 512
}

fn no_flush() -> io::Result<()> {
    Ok(())
}

/// Zeros go into holes only: wherever fjall's data lies (before, inside and after the range,
/// at random places), the file reads the same after the fill, and the range is allocated.
#[test]
fn filling_changes_no_byte_and_allocates_the_range() {
    let locks = WriteLocks::default();
    let zeros = vec![0; PIECE_BYTES];
    for seed in 0..8 {
        let mut rng = Rng(seed + 1);
        let dir = tempfile::tempdir().unwrap();
        let file = sparse(dir.path(), 8 * MIB);
        // fjall's journal so far, and (as if it had overtaken the filling) data further on.
        let n = 1 + rng.below(300_000) as usize;
        write_data(&file, 0, n, &mut rng);
        for _ in 0..rng.below(4) {
            let at = rng.below(8 * MIB - 100_000);
            let n = 1 + rng.below(100_000) as usize;
            write_data(&file, at, n, &mut rng);
        }
        let before = content(&file);
        let to = (1 + rng.below(8)) * MIB;
        let reached = fill(&file, &locks, &no_flush, &zeros, (0, to)).unwrap();
        assert!(
            reached >= to,
            "seed {seed}: filled to {reached}, asked {to}"
        );
        assert_eq!(content(&file), before, "seed {seed}: a byte changed");
        assert!(
            allocated(&file) >= to,
            "seed {seed}: the range is allocated"
        );
    }
}

/// fjall's progress: found by the probes in the filled part, and past it when fjall
/// overtook the filling.
#[test]
fn fjall_s_progress_is_found_in_and_past_the_filled_part() {
    let mut rng = Rng(7);
    let locks = WriteLocks::default();
    let zeros = vec![0; PIECE_BYTES];
    let dir = tempfile::tempdir().unwrap();
    let len = 16 * MIB;
    let file = sparse(dir.path(), len);
    assert_eq!(advance(&file, 0, 0, len).unwrap(), 0, "nothing written yet");
    let filled = fill(&file, &locks, &no_flush, &zeros, (0, 4 * MIB)).unwrap();
    // fjall writes 300 kB into the filled part.
    write_data(&file, 0, 300_000, &mut rng);
    let reached = advance(&file, 0, filled, len).unwrap();
    assert!(
        (300_000 - PROBE_STEP..=300_000).contains(&reached),
        "{reached}"
    );
    // ... and on, past the filled part.
    write_data(&file, 300_000, 5 * MIB as usize, &mut rng);
    let past = advance(&file, reached, filled, len).unwrap();
    assert!(past >= 300_000 + 5 * MIB, "{past}");
}

/// Tick after tick, as fjall writes on, the filling keeps its lead and no more: the whole
/// journal is not filled at once.
#[test]
fn the_filling_stays_about_its_lead_ahead() {
    let mut rng = Rng(11);
    let dir = tempfile::tempdir().unwrap();
    let len = 64 * MIB;
    let file = sparse(dir.path(), len);
    let lead = 4 * MIB;
    let newest = NewestJournal::new(dir.path().to_owned(), true);
    let mut filler = Filler::new(newest, Arc::default(), lead);
    let mut written = 0u64;
    while written < 40 * MIB {
        // fjall's writes: not aligned to anything.
        let n = 10_000 + rng.below(200_000);
        write_data(&file, written, n as usize, &mut rng);
        written += n;
        filler.tick(&no_flush).unwrap();
        let ahead = seek_hole(&file, 0).unwrap() - written;
        assert!(ahead <= lead + ALIGN, "{ahead} bytes ahead at {written}");
        assert!(
            ahead >= lead / 2 - PROBE_STEP,
            "{ahead} bytes ahead at {written}"
        );
    }
    assert_eq!(content(&file)[written as usize..].iter().max(), Some(&0));
}

/// A store with the prefill on: the journal is allocated ahead of what fjall wrote, and 8 MB
/// written while the prefill runs (one write and fsync at a time, as the store's writers do)
/// read back after a reopen.
#[test]
fn a_store_s_journal_is_filled_ahead_of_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        journal_prefill_bytes: 4 * MIB,
        ..EngineOptions::default()
    };
    let newest = |dir: &Path| {
        let (_, path) = super::super::journal_repair::journals(dir)
            .unwrap()
            .pop()
            .unwrap();
        File::open(path).unwrap()
    };
    let value = |i: u32| -> Vec<u8> { (0..8_000).map(|j| (i as usize + j) as u8 | 1).collect() };
    let store = FjallStore::open_with(dir.path(), Durability::Fsync, &options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while allocated(&newest(dir.path())) < 2 * MIB {
        assert!(Instant::now() < deadline, "the journal was never filled");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..1_000u32 {
        let _writing = store.write_lock();
        store
            .insert(&store.meta, i.to_be_bytes(), value(i))
            .unwrap();
        store.persist().unwrap();
    }
    drop(store);
    let store = FjallStore::open_with(dir.path(), Durability::Fsync, &options).unwrap();
    for i in 0..1_000u32 {
        let got = store.meta.get(i.to_be_bytes()).unwrap().expect("written");
        assert_eq!(&*got, &value(i)[..], "entry {i}");
    }
}

/// After a restart fjall appends to the journal it recovered: its replay truncated the file to
/// the last whole batch, and it is open `O_APPEND`, so there is no hole inside it to fill, and
/// zeros at its end would sit between the recovered batches and the next ones, where the next
/// replay stops (dropping what follows). The filler writes nothing into it; what was written
/// before and after the restart reads back.
#[test]
fn a_recovered_journal_is_left_alone_and_nothing_is_lost_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let off = EngineOptions {
        journal_prefill_bytes: 0,
        ..EngineOptions::default()
    };
    let value = |i: u32| -> Vec<u8> { (0..4_000).map(|j| (i as usize + j) as u8 | 1).collect() };
    let write = |store: &FjallStore, range: std::ops::Range<u32>| {
        for i in range {
            let _writing = store.write_lock();
            store
                .insert(&store.meta, i.to_be_bytes(), value(i))
                .unwrap();
            store.persist().unwrap();
        }
    };
    let store = FjallStore::open_with(dir.path(), Durability::Fsync, &off).unwrap();
    write(&store, 0..200);
    drop(store);

    let store = FjallStore::open_with(dir.path(), Durability::Fsync, &off).unwrap();
    let (id, path) = super::super::journal_repair::journals(dir.path())
        .unwrap()
        .pop()
        .unwrap();
    let journal = File::open(&path).unwrap();
    let len = journal.metadata().unwrap().len();
    assert!(
        len < 64 * MIB,
        "{id}.jnl is {len} bytes: truncated by the replay"
    );
    assert_eq!(seek_hole(&journal, 0).unwrap(), len, "no hole inside it");
    let before = content(&journal);
    let newest = NewestJournal::new(dir.path().to_owned(), true);
    let mut filler = Filler::new(newest, Arc::default(), 4 * MIB);
    filler.tick(&no_flush).unwrap();
    assert_eq!(content(&journal), before, "the filler wrote nothing");
    // fjall appends after what it recovered; the filler still writes nothing.
    write(&store, 200..400);
    let grown = content(&journal);
    assert!(grown.len() > before.len() && grown.starts_with(&before));
    filler.tick(&no_flush).unwrap();
    assert_eq!(content(&journal), grown, "the filler wrote nothing");
    drop(store);

    let store = FjallStore::open_with(dir.path(), Durability::Fsync, &off).unwrap();
    for i in 0..400u32 {
        let got = store.meta.get(i.to_be_bytes()).unwrap().expect("written");
        assert_eq!(&*got, &value(i)[..], "entry {i}");
    }
}

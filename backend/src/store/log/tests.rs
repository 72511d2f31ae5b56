use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::recovery::segment_path;
use super::*;

const OPTIONS: LogOptions = LogOptions {
    segment_bytes_max: 1 << 20,
    record_bytes_max: 64 * 1024,
};
/// Small segments, so that a few hundred records roll many times.
const SMALL: LogOptions = LogOptions {
    segment_bytes_max: 1024,
    record_bytes_max: 200,
};

fn payload(i: usize) -> Vec<u8> {
    let len = (i * 37) % 150;
    (0..len).map(|j| (i + j) as u8).collect()
}

fn open(dir: &Path, options: LogOptions) -> (SegmentLog, Recovered) {
    SegmentLog::open(dir, options).expect("open")
}

fn all(log: &SegmentLog, from: Option<Position>) -> Vec<(Position, Vec<u8>)> {
    let mut out = Vec::new();
    log.replay::<LogError>(from, |pos, p| {
        out.push((pos, p.to_vec()));
        Ok(())
    })
    .expect("replay");
    out
}

fn patch(dir: &Path, segment: u64, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, segment))
        .unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn set_len(dir: &Path, segment: u64, len: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, segment))
        .unwrap();
    file.set_len(len).unwrap();
}

fn file_len(dir: &Path, segment: u64) -> u64 {
    std::fs::metadata(segment_path(dir, segment)).unwrap().len()
}

/// Appends `payloads` to a fresh log in `dir` and returns their positions.
fn fill(dir: &Path, options: LogOptions, payloads: &[Vec<u8>]) -> Vec<Position> {
    let (mut log, _) = open(dir, options);
    let positions = payloads.iter().map(|p| log.append(p).unwrap()).collect();
    log.sync().unwrap();
    positions
}

fn assert_corrupt(dir: &Path, options: LogOptions, at: Position) {
    match SegmentLog::open(dir, options) {
        Err(LogError::Corrupt {
            segment, offset, ..
        }) => assert_eq!(Position { segment, offset }, at),
        Err(e) => panic!("expected Corrupt at {at:?}, got {e}"),
        Ok((_, recovered)) => panic!("expected Corrupt at {at:?}, opened: {recovered:?}"),
    }
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/log");
    let (mut log, recovered) = open(&path, OPTIONS);
    assert_eq!(recovered.records, 0);
    let payloads = [b"first".to_vec(), Vec::new(), vec![7; 5000]];
    let positions: Vec<_> = payloads.iter().map(|p| log.append(p).unwrap()).collect();
    assert_eq!(
        positions[0],
        Position {
            segment: 0,
            offset: 0
        }
    );
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    log.sync().unwrap();
    let mut buf = Vec::new();
    for (pos, p) in positions.iter().zip(&payloads) {
        log.read(*pos, &mut buf).unwrap();
        assert_eq!(&buf, p);
    }
    drop(log);

    let (mut log, recovered) = open(&path, OPTIONS);
    let expected = Recovered {
        records: 3,
        last: Some(positions[2]),
        torn_tail_bytes: 0,
    };
    assert_eq!(recovered, expected);
    log.read(positions[0], &mut buf).unwrap();
    assert_eq!(buf, b"first");
    let next = log.append(b"after reopen").unwrap();
    assert!(next > positions[2]);
    log.read(next, &mut buf).unwrap();
    assert_eq!(buf, b"after reopen");
    let past_end = Position {
        segment: 0,
        offset: 1 << 19,
    };
    assert!(matches!(
        log.read(past_end, &mut buf),
        Err(LogError::NoRecord(_))
    ));
}

#[test]
fn rolls_then_replays_from_start_and_middle() {
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<_> = (0..300).map(payload).collect();
    let positions = {
        let (mut log, _) = open(dir.path(), SMALL);
        let mut positions: Vec<_> = payloads[..200]
            .iter()
            .map(|p| log.append(p).unwrap())
            .collect();
        let rest: Vec<&[u8]> = payloads[200..].iter().map(Vec::as_slice).collect();
        log.append_many(&rest, &mut positions).unwrap();
        log.sync().unwrap();
        positions
    };
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let segments = positions.last().unwrap().segment + 1;
    assert!(segments > 10, "{segments} segments");
    for id in 0..segments {
        assert!(file_len(dir.path(), id) <= SMALL.segment_bytes_max);
    }

    let (log, recovered) = open(dir.path(), SMALL);
    assert_eq!(recovered.records, 300);
    assert_eq!(recovered.last, positions.last().copied());
    let expected: Vec<_> = positions.iter().copied().zip(payloads.clone()).collect();
    assert_eq!(all(&log, None), expected);
    assert_eq!(all(&log, Some(positions[136])), expected[137..]);
    assert_eq!(all(&log, Some(positions[299])), []);

    // Reads across more segments than stay open.
    let mut buf = Vec::new();
    for (pos, p) in positions.iter().zip(&payloads).rev() {
        log.read(*pos, &mut buf).unwrap();
        assert_eq!(&buf, p);
    }
    assert_eq!(log.readers_open(), SEGMENTS_OPEN_MAX);
}

#[test]
fn torn_tail_mid_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<_> = (1..=3).map(|i| vec![i as u8; 100]).collect();
    let positions = fill(dir.path(), OPTIONS, &payloads);
    set_len(dir.path(), 0, positions[2].offset + 50);

    let (mut log, recovered) = open(dir.path(), OPTIONS);
    assert_eq!(recovered.records, 2);
    assert_eq!(recovered.last, Some(positions[1]));
    assert_eq!(recovered.torn_tail_bytes, 50);
    assert_eq!(file_len(dir.path(), 0), positions[2].offset);
    let again = log.append(b"again").unwrap();
    assert_eq!(again, positions[2]);
    log.sync().unwrap();
    drop(log);

    let (log, recovered) = open(dir.path(), OPTIONS);
    assert_eq!((recovered.records, recovered.torn_tail_bytes), (3, 0));
    assert_eq!(all(&log, Some(positions[1]))[0].1, b"again");
}

#[test]
fn torn_tails_of_every_shape_are_dropped() {
    let payloads: Vec<_> = (1..=3).map(|i| vec![i as u8; 100]).collect();
    let shapes: [(&str, &[u8]); 4] = [
        ("part of a header", &[50, 0, 0]),
        ("zeros to the end", &[0; 4096]),
        ("an absurd length then garbage", &[0xff; 300]),
        (
            "a header whose record is cut off",
            &[100, 0, 0, 0, 1, 2, 3, 4, 9, 9],
        ),
    ];
    for (shape, tail) in shapes {
        let dir = tempfile::tempdir().unwrap();
        let positions = fill(dir.path(), OPTIONS, &payloads);
        let end = file_len(dir.path(), 0);
        patch(dir.path(), 0, end, tail);
        let (_, recovered) = open(dir.path(), OPTIONS);
        assert_eq!(recovered.records, 3, "{shape}");
        assert_eq!(recovered.last, Some(positions[2]), "{shape}");
        assert_eq!(recovered.torn_tail_bytes, tail.len() as u64, "{shape}");
        assert_eq!(file_len(dir.path(), 0), end, "{shape}");
    }
}

#[test]
fn zeroed_block_inside_the_last_record_is_a_torn_tail() {
    for (zeroed_from, what) in [(4096, "payload block"), (0, "block over the header")] {
        let dir = tempfile::tempdir().unwrap();
        let payloads = [vec![1; 100], vec![2; 100], vec![3; 12_000]];
        let positions = fill(dir.path(), OPTIONS, &payloads);
        let end = file_len(dir.path(), 0);
        patch(dir.path(), 0, positions[2].offset + zeroed_from, &[0; 4096]);
        assert_eq!(file_len(dir.path(), 0), end, "the record's end survived");

        let (_, recovered) = open(dir.path(), OPTIONS);
        assert_eq!(recovered.records, 2, "{what}");
        assert_eq!(
            recovered.torn_tail_bytes,
            end - positions[2].offset,
            "{what}"
        );
    }
}

#[test]
fn damaged_record_with_valid_ones_after_is_corrupt() {
    let payloads: Vec<_> = (1..=3).map(|i| vec![i as u8; 100]).collect();
    // A payload byte, then the length field made absurd (search from the next byte on).
    for (at, bytes) in [(20, &[0x55][..]), (0, &[0xff, 0xff, 0xff, 0x7f][..])] {
        let dir = tempfile::tempdir().unwrap();
        let positions = fill(dir.path(), OPTIONS, &payloads);
        let len = file_len(dir.path(), 0);
        patch(dir.path(), 0, positions[1].offset + at, bytes);
        assert_corrupt(dir.path(), OPTIONS, positions[1]);
        assert_eq!(file_len(dir.path(), 0), len, "nothing truncated");
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corrupt() {
    let payloads: Vec<_> = (0..60).map(payload).collect();
    let dir = tempfile::tempdir().unwrap();
    let positions = fill(dir.path(), SMALL, &payloads);
    assert!(positions.last().unwrap().segment >= 2);
    let last_of_first = *positions.iter().rfind(|p| p.segment == 0).unwrap();
    // Even its last record, with nothing valid after it in that file.
    patch(dir.path(), 0, last_of_first.offset + 7, &[0xAA]);
    assert_corrupt(dir.path(), SMALL, last_of_first);

    let dir = tempfile::tempdir().unwrap();
    let positions = fill(dir.path(), SMALL, &payloads);
    let last_of_second = *positions.iter().rfind(|p| p.segment == 1).unwrap();
    set_len(dir.path(), 1, last_of_second.offset + 3);
    assert_corrupt(dir.path(), SMALL, last_of_second);

    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), SMALL, &payloads);
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), SMALL),
        Err(LogError::Corrupt {
            segment: 1,
            reason: Damage::MissingSegment,
            ..
        })
    ));
}

#[test]
fn over_limit_records_are_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), SMALL);
    let big = vec![0; SMALL.record_bytes_max as usize + 1];
    assert!(matches!(
        log.append(&big),
        Err(LogError::RecordTooLarge { .. })
    ));
    let mut positions = Vec::new();
    let refused = log.append_many(&[b"ok", &big], &mut positions);
    assert!(matches!(refused, Err(LogError::RecordTooLarge { .. })));
    assert!(positions.is_empty());
    let max = vec![9; SMALL.record_bytes_max as usize];
    let pos = log.append(&max).unwrap();
    assert_eq!(
        pos,
        Position {
            segment: 0,
            offset: 0
        }
    );
    log.sync().unwrap();
    drop(log);
    let (log, recovered) = open(dir.path(), SMALL);
    assert_eq!(recovered.records, 1);
    assert_eq!(all(&log, None), [(pos, max)]);

    let bad = LogOptions {
        segment_bytes_max: 100,
        record_bytes_max: 100,
    };
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), bad),
        Err(LogError::Options(_))
    ));
}

#[test]
fn empty_payloads_and_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, recovered) = open(dir.path(), OPTIONS);
    let empty = Recovered {
        records: 0,
        last: None,
        torn_tail_bytes: 0,
    };
    assert_eq!(recovered, empty);
    assert_eq!(all(&log, None), []);
    log.sync().unwrap();
    drop(log);
    let (mut log, recovered) = open(dir.path(), OPTIONS);
    assert_eq!(recovered, empty);

    let first = log.append(b"").unwrap();
    let second = log.append(b"").unwrap();
    assert_eq!(second.offset, 8, "an empty record is its header alone");
    let mut buf = vec![1, 2, 3];
    log.read(first, &mut buf).unwrap();
    assert!(buf.is_empty());
    log.sync().unwrap();
    drop(log);
    let (log, recovered) = open(dir.path(), OPTIONS);
    assert_eq!(recovered.records, 2);
    assert_eq!(all(&log, None), [(first, vec![]), (second, vec![])]);
}

#[test]
fn torn_tail_in_the_newest_of_several_segments() {
    let payloads: Vec<_> = (0..60).map(|i| vec![i as u8; 100]).collect();
    let dir = tempfile::tempdir().unwrap();
    let positions = fill(dir.path(), SMALL, &payloads);
    let last = *positions.last().unwrap();
    assert!(last.segment >= 2 && last.offset > 0);
    set_len(dir.path(), last.segment, last.offset + 20);

    let (mut log, recovered) = open(dir.path(), SMALL);
    assert_eq!(recovered.records, 59);
    assert_eq!(recovered.last, Some(positions[58]));
    assert_eq!(recovered.torn_tail_bytes, 20);
    assert_eq!(log.append(b"next").unwrap(), last);
    log.sync().unwrap();
    let expected: Vec<_> = positions.into_iter().zip(payloads).take(59).collect();
    let replayed = all(&log, None);
    assert_eq!(replayed[..59], expected);
    assert_eq!(replayed[59], (last, b"next".to_vec()));
}

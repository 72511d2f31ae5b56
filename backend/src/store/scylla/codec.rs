//! How values are laid out in CQL: ids as bigint, seqs in buckets, records as blobs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// Messages per partition of `messages`: a conversation's seqs `b * N .. (b + 1) * N` share
/// partition `(conv, b)`. A sync or history page (a few hundred at most) then reads one or two
/// partitions, and a partition stays bounded: 1024 messages of a few hundred bytes is a few
/// hundred KiB, and even at the largest message size it stays well under the size where
/// ScyllaDB warns about large partitions; the busiest conversation's traffic spreads over
/// many partitions (and nodes) over time.
pub(super) const MESSAGES_PER_BUCKET: u64 = 1024;

/// Users (and groups) per partition of the tables listed by id: 4096 rows of a few hundred
/// bytes each.
pub(super) const IDS_PER_BUCKET: u64 = 4096;

/// Audit entries per partition.
pub(super) const AUDIT_PER_BUCKET: u64 = 65_536;

/// The message bucket of a seq.
pub(super) fn bucket(seq: u64) -> u64 {
    seq / MESSAGES_PER_BUCKET
}

/// The buckets that hold seqs `lo ..= hi`, ascending (empty when `lo > hi`).
pub(super) fn buckets(lo: u64, hi: u64) -> impl DoubleEndedIterator<Item = u64> {
    // An empty range when lo > hi: the first bucket past the last one.
    let last = bucket(hi);
    let first = if lo > hi {
        last.saturating_add(1)
    } else {
        bucket(lo)
    };
    first..=last
}

/// A u64 as CQL bigint, bit for bit (values below 2^63 keep their order).
pub(super) fn i(v: u64) -> i64 {
    v as i64
}

/// A stored bigint back to the u64 it holds.
pub(super) fn u(v: i64) -> u64 {
    v as u64
}

/// A u64 as a bigint whose signed order is the u64's order: for clustering columns that hold
/// ids of every kind (a system conversation's id has the top bit set).
pub(super) fn ordered(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

pub(super) fn unordered(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// The partition of a folded name in the prefix indexes: its first character.
pub(super) fn initial(folded: &str) -> String {
    folded.chars().next().map(String::from).unwrap_or_default()
}

/// Bits of a message write's timestamp that hold the seq.
const TS_SEQ_BITS: u32 = 40;
/// Largest epoch a write timestamp holds (the sign bit stays clear).
pub(super) const TS_EPOCH_MAX: u64 = (1 << (63 - TS_SEQ_BITS)) - 1;

/// The write timestamp of a row of `messages`, written by the owner at `epoch` for the
/// message at `seq` (its insert, or the recall event that marks an older one): a later
/// epoch always wins, and within one epoch a later seq does, whatever the clocks say.
pub(super) fn message_ts(epoch: u64, seq: u64) -> i64 {
    let epoch = epoch.min(TS_EPOCH_MAX);
    let seq = seq.min((1 << TS_SEQ_BITS) - 1);
    ((epoch << TS_SEQ_BITS) | seq) as i64
}

/// A record stored whole, in the embedded store's encoding (postcard).
pub(super) fn blob<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

pub(super) fn unblob<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.into()))
}

/// TTL in seconds for a row that must live until `until_ms` plus `grace_s` (never 0, which
/// CQL reads as "no TTL"; capped at CQL's 20-year maximum).
pub(super) fn ttl_s(until_ms: u64, now_ms: u64, grace_s: u64) -> i32 {
    const TTL_MAX_S: u64 = 630_720_000;
    let left = until_ms.saturating_sub(now_ms).div_ceil(1000);
    left.saturating_add(grace_s).clamp(1, TTL_MAX_S) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CursorRecord, CursorRow};

    #[test]
    fn seqs_fall_into_buckets_of_1024() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1023), 0);
        assert_eq!(bucket(1024), 1);
        assert_eq!(buckets(1, 1023).collect::<Vec<_>>(), [0]);
        assert_eq!(buckets(1000, 1100).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(buckets(1000, 1100).rev().collect::<Vec<_>>(), [1, 0]);
        assert_eq!(buckets(5, 4).count(), 0);
        // A page of at most MESSAGES_PER_BUCKET seqs spans at most two partitions.
        for lo in [1, 500, 1023, 1024, 99_999] {
            assert!(buckets(lo, lo + MESSAGES_PER_BUCKET - 1).count() <= 2);
        }
        assert_eq!(buckets(u64::MAX - 1, u64::MAX).count(), 1);
    }

    #[test]
    fn ids_round_trip_and_ordered_ids_keep_u64_order() {
        for v in [
            0,
            1,
            100_000_000,
            (1 << 62) | 42,
            (2 << 62) | 100_000_001,
            u64::MAX,
        ] {
            assert_eq!(u(i(v)), v);
            assert_eq!(unordered(ordered(v)), v);
        }
        let mut vals = [(2u64 << 62) | 5, 7, (1 << 62) | 3, u64::MAX, 0];
        let mut by_ordered = vals;
        by_ordered.sort_by_key(|v| ordered(*v));
        vals.sort();
        assert_eq!(by_ordered, vals);
    }

    #[test]
    fn records_round_trip_as_blobs() {
        let mut row = CursorRow {
            cursor: CursorRecord {
                delivered_seq: 9,
                read_seq: 7,
            },
            ..CursorRow::default()
        };
        row.move_device("phone", 9, 1_000, 0);
        row.remember_send("c9", 9, 64);
        let back: CursorRow = unblob(&blob(&row)).unwrap();
        assert_eq!(back, row);
        assert!(matches!(
            unblob::<CursorRow>(&[0xff, 0xff]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn ttls_are_never_zero_and_never_past_the_cql_maximum() {
        assert_eq!(ttl_s(20, 1_000_000, 0), 1, "expired long ago: still a TTL");
        assert_eq!(ttl_s(20, 1_000_000, 60), 60);
        assert_eq!(ttl_s(10_500, 1_000, 0), 10);
        assert_eq!(ttl_s(u64::MAX, 0, u64::MAX), 630_720_000);
    }

    #[test]
    fn message_timestamps_order_by_epoch_then_seq() {
        assert!(
            message_ts(2, 1) > message_ts(1, 1 << 39),
            "a later owner wins"
        );
        assert!(
            message_ts(1, 8) > message_ts(1, 7),
            "a recall beats the insert it marks"
        );
        assert_eq!(message_ts(0, 5), 5);
        assert!(
            message_ts(u64::MAX, u64::MAX) > 0,
            "the sign bit stays clear"
        );
        assert!(message_ts(TS_EPOCH_MAX, 1) > message_ts(TS_EPOCH_MAX - 1, u64::MAX));
    }

    #[test]
    fn initials_partition_the_prefix_indexes() {
        assert_eq!(initial("anna"), "a");
        assert_eq!(initial("émile"), "é");
        assert_eq!(initial(""), "");
    }
}

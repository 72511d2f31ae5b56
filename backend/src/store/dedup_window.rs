//! A sender's recent sends into a conversation (the dedup window) and how a row stores them.
//!
//! Every commit group rewrites the cursor rows it touches, so the window's size is paid on
//! every write of a long-lived row: a full window of 64 took ~450 bytes as postcard varints
//! (a 32-bit hash and an absolute seq per send), and a filled store's rows are full: with the
//! runs out of the compactions, packing it took writes into a filled store from 6.4 to 5.3 µs
//! per message (docs/BENCHMARKS.md, "Messages out of the compactions, and a dedup window of 3
//! bytes a send"). It is stored as a 16-bit hash and a seq delta per send: ~3 bytes. A hash
//! match is only a hint: the sequencer confirms it against the stored message before it answers
//! a resend from it, so a false match (about `window / 65,536` of new sends) costs one read of
//! a recent message.
//!
//! The hash is unkeyed, so a sender can choose `client_msg_id`s that all match: at most
//! [`DEDUP_CANDIDATES_MAX`] matches are confirmed per send (newest first, in one batched read),
//! so such a sender costs the sequencer a bounded read per send. What the cap gives up is only
//! that sender's own dedup: a resend whose original has that many newer matching sends in the
//! window is stored anew (for random ids, about one in 10^13 resends).
//!
//! Rows written before this format hold a postcard sequence of (hash, seq) varint pairs, with
//! 64-bit or 32-bit hashes; they are read (hashes folded to 16 bits) and written back in the
//! new format the next time the row changes.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One of the user's recent sends into the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSend {
    /// [`client_msg_id_hash`] of the send's `client_msg_id`.
    pub client_msg_id_hash: u16,
    pub seq: u64,
}

/// Window entries whose hash matches a `client_msg_id` that the sequencer confirms against the
/// stored messages per send, at most (newest first).
pub const DEDUP_CANDIDATES_MAX: usize = 4;

/// FNV-1a, 64 bits, folded to 16: stored in rows, so it must never change (unlike std's
/// hasher).
pub fn client_msg_id_hash(client_msg_id: &str) -> u16 {
    fold_to_16_bits(client_msg_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }))
}

/// Halves xored together down to 16 bits. A value below 2^32 (the 32-bit hash older rows hold)
/// folds to the same 16 bits as the 64-bit hash it was folded from.
fn fold_to_16_bits(hash: u64) -> u16 {
    let h32 = (hash ^ (hash >> 32)) & 0xffff_ffff;
    ((h32 ^ (h32 >> 16)) & 0xffff) as u16
}

/// First element of a window in this format, as a (hash, seq) pair that no older row can
/// start with: older hashes are 32-bit, or 64-bit ones written before 2026-12-04 (one in
/// 2^64 could be this).
const FORMAT_MARK: (u64, u64) = (1 << 32, 1);

/// Serde `with` module for `CursorRow::recent_sends`.
pub(crate) mod format {
    use super::*;

    pub fn serialize<S: Serializer>(sends: &[RecentSend], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return sends.serialize(s);
        }
        if sends.is_empty() {
            return s.serialize_seq(Some(0))?.end();
        }
        // On the stack for a window of the default size: every row a commit writes is
        // encoded (docs/BENCHMARKS.md, "Rows encoded in one pass").
        let mut stack = [0u8; STACK_SENDS_MAX * PACKED_SEND_BYTES_MAX];
        let mut heap = Vec::new();
        let buf = if sends.len() <= STACK_SENDS_MAX {
            &mut stack[..]
        } else {
            heap.resize(sends.len() * PACKED_SEND_BYTES_MAX, 0);
            &mut heap[..]
        };
        let len = pack(sends, buf);
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&FORMAT_MARK)?;
        seq.serialize_element(&Packed(&buf[..len]))?;
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RecentSend>, D::Error> {
        if d.is_human_readable() {
            return Vec::<RecentSend>::deserialize(d);
        }
        d.deserialize_seq(WindowVisitor)
    }
}

/// A window stored on its own (a PostgreSQL column), in the same format as in a row.
pub(crate) struct WindowRef<'a>(pub &'a [RecentSend]);

impl Serialize for WindowRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        format::serialize(self.0, s)
    }
}

/// A window read back from where [`WindowRef`] wrote it.
#[derive(Deserialize)]
pub(crate) struct StoredWindow(#[serde(with = "format")] pub Vec<RecentSend>);

/// The packed sends, written as bytes (postcard: a length and the bytes).
struct Packed<'a>(&'a [u8]);

impl Serialize for Packed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The packed sends read straight from the input's bytes.
struct Unpacked(Vec<RecentSend>);

impl<'de> Deserialize<'de> for Unpacked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(UnpackVisitor)
    }
}

struct UnpackVisitor;

impl Visitor<'_> for UnpackVisitor {
    type Value = Unpacked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("packed recent sends")
    }

    fn visit_bytes<E: de::Error>(self, packed: &[u8]) -> Result<Unpacked, E> {
        unpack(packed)
            .map(Unpacked)
            .ok_or_else(|| E::custom("a corrupt dedup window"))
    }
}

struct WindowVisitor;

impl<'de> Visitor<'de> for WindowVisitor {
    type Value = Vec<RecentSend>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dedup window")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(first) = seq.next_element::<(u64, u64)>()? else {
            return Ok(Vec::new());
        };
        if first == FORMAT_MARK {
            let Unpacked(sends) = seq
                .next_element()?
                .ok_or_else(|| de::Error::custom("a dedup window without its sends"))?;
            return Ok(sends);
        }
        // The older format: (hash, seq) pairs.
        let mut sends = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024) + 1);
        let mut pair = Some(first);
        while let Some((hash, seq_no)) = pair {
            sends.push(RecentSend {
                client_msg_id_hash: fold_to_16_bits(hash),
                seq: seq_no,
            });
            pair = seq.next_element()?;
        }
        Ok(sends)
    }
}

fn unpack(mut packed: &[u8]) -> Option<Vec<RecentSend>> {
    let mut sends = Vec::with_capacity(packed.len() / 3);
    let mut previous = 0u64;
    while let [lo, hi, rest @ ..] = packed {
        let (delta, rest) = take_varint(rest)?;
        previous = previous.wrapping_add(delta);
        sends.push(RecentSend {
            client_msg_id_hash: u16::from_le_bytes([*lo, *hi]),
            seq: previous,
        });
        packed = rest;
    }
    packed.is_empty().then_some(sends)
}

/// Most bytes one send packs into: its 16-bit hash and a varint seq delta of up to 10 bytes.
const PACKED_SEND_BYTES_MAX: usize = 2 + 10;
/// Windows of up to this many sends (the default is 64) are packed in a buffer on the stack.
const STACK_SENDS_MAX: usize = 64;

/// Packs `sends` into `out` (at least [`PACKED_SEND_BYTES_MAX`] bytes a send); returns the
/// length. A plain index into a slice: this runs for every row a commit writes.
fn pack(sends: &[RecentSend], out: &mut [u8]) -> usize {
    let mut at = 0;
    let mut previous = 0u64;
    for send in sends {
        out[at..at + 2].copy_from_slice(&send.client_msg_id_hash.to_le_bytes());
        at += 2;
        let mut delta = send.seq.wrapping_sub(previous);
        while delta >= 0x80 {
            out[at] = (delta as u8) | 0x80;
            at += 1;
            delta >>= 7;
        }
        out[at] = delta as u8;
        at += 1;
        previous = send.seq;
    }
    at
}

/// A LEB128 u64 off the front of `bytes`; `None` if it is cut short or longer than 10 bytes.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        before: u64,
        #[serde(with = "format")]
        sends: Vec<RecentSend>,
        after: String,
    }

    /// How rows written before this format stored the window.
    #[derive(Serialize)]
    struct OldRow {
        before: u64,
        sends: Vec<(u64, u64)>,
        after: String,
    }

    fn sends(pairs: &[(u16, u64)]) -> Vec<RecentSend> {
        pairs
            .iter()
            .map(|&(client_msg_id_hash, seq)| RecentSend {
                client_msg_id_hash,
                seq,
            })
            .collect()
    }

    #[test]
    fn the_client_msg_id_hash_is_fnv1a_folded_to_16_bits() {
        // Stored in rows: a change of hash would break dedup of stored sends.
        let fold = |h: u64| {
            let h = (h ^ (h >> 32)) & 0xffff_ffff;
            (h ^ (h >> 16)) as u16
        };
        assert_eq!(client_msg_id_hash(""), fold(0xcbf2_9ce4_8422_2325));
        assert_eq!(client_msg_id_hash("a"), fold(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn a_window_round_trips_in_about_three_bytes_a_send() {
        for window in [
            vec![],
            sends(&[(7, 1)]),
            sends(&[(0xffff, u64::MAX), (0, 0), (1, u64::MAX)]),
            sends(
                &(1..=64u64)
                    .map(|s| (s as u16 * 977, s * 2))
                    .collect::<Vec<_>>(),
            ),
            // Deltas of 10 bytes and of 1, in a window of the stack buffer's size and one past it.
            sends(
                &(0..64u64)
                    .map(|s| (s as u16, if s % 2 == 0 { u64::MAX } else { 0 }))
                    .collect::<Vec<_>>(),
            ),
            sends(
                &(0..65u64)
                    .map(|s| (s as u16, if s % 2 == 0 { u64::MAX } else { 0 }))
                    .collect::<Vec<_>>(),
            ),
        ] {
            let row = Row {
                before: 5,
                sends: window,
                after: "after".into(),
            };
            let bytes = postcard::to_stdvec(&row).unwrap();
            assert_eq!(postcard::from_bytes::<Row>(&bytes).unwrap(), row);
            let json = serde_json::to_string(&row).unwrap();
            assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), row);
        }
        let full = Row {
            before: 5,
            sends: (1..=64u64)
                .map(|s| RecentSend {
                    client_msg_id_hash: client_msg_id_hash(&format!("m{s}")),
                    seq: 1_000 + 2 * s,
                })
                .collect(),
            after: String::new(),
        };
        let size = postcard::to_stdvec(&full).unwrap().len();
        assert!(size <= 64 * 3 + 16, "{size} bytes");
    }

    #[test]
    fn rows_in_the_older_format_are_read_with_their_hashes_folded() {
        let a64 = 0xaf63_dc4c_8601_ec8c; // FNV-1a 64 of "a"
        let b32 = {
            let h = 0xaf63_df4c_8601_f1a5_u64; // FNV-1a 64 of "b"
            (h ^ (h >> 32)) & 0xffff_ffff
        };
        let old = OldRow {
            before: 5,
            sends: vec![(a64, 7), (b32, 9)],
            after: "after".into(),
        };
        let row: Row = postcard::from_bytes(&postcard::to_stdvec(&old).unwrap()).unwrap();
        assert_eq!(
            row.sends,
            sends(&[(client_msg_id_hash("a"), 7), (client_msg_id_hash("b"), 9)])
        );
        assert_eq!(row.after, "after");
        let empty = OldRow {
            before: 5,
            sends: vec![],
            after: "x".into(),
        };
        let row: Row = postcard::from_bytes(&postcard::to_stdvec(&empty).unwrap()).unwrap();
        assert!(row.sends.is_empty());
    }

    #[test]
    fn a_window_in_a_column_of_its_own_reads_both_formats() {
        let window = sends(&[(3, 10), (4, 12)]);
        let bytes = postcard::to_stdvec(&WindowRef(&window)).unwrap();
        let back: StoredWindow = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, window);
        let old = postcard::to_stdvec(&vec![(0xaf63_dc4c_8601_ec8c_u64, 7u64)]).unwrap();
        let back: StoredWindow = postcard::from_bytes(&old).unwrap();
        assert_eq!(back.0, sends(&[(client_msg_id_hash("a"), 7)]));
    }

    #[test]
    fn a_corrupt_window_is_an_error() {
        let row = Row {
            before: 5,
            sends: sends(&[(1, 300)]),
            after: String::new(),
        };
        let mut bytes = postcard::to_stdvec(&row).unwrap();
        // before, seq len, mark (5 + 1 bytes), packed len, then the hash and the varint 300.
        let last_seq_byte = 1 + 1 + 6 + 1 + 2 + 1;
        bytes[last_seq_byte] |= 0x80; // the varint now runs into the next field
        assert!(postcard::from_bytes::<Row>(&bytes).is_err());
        assert_eq!(unpack(&[1, 2, 0x80]), None, "a varint cut short");
        assert_eq!(unpack(&[1]), None, "half a hash");
    }
}

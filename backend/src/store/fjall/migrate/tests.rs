use super::*;
use crate::config::Durability;
use crate::store::{ConversationLog, CursorStore, MembershipStore, USER_ID_FIRST};

const A: u64 = USER_ID_FIRST;
const B: u64 = USER_ID_FIRST + 1;

/// A layout 1 message as the store reads it back after the migration.
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

/// The same message as layout 1 stored it.
fn layout_1_message(conv: ConvId, seq: u64) -> layout_1::Message {
    layout_1::Message {
        conv_id: conv.to_wire(),
        seq,
        msg_id: 100 + seq,
        from: A,
        to: B,
        client_msg_id: format!("c{seq}"),
        content_type: 1,
        content: format!("m{seq}").into_bytes(),
        server_time_ms: 1_000 + seq,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
    }
}

/// Writes a store the way layout 1 did (raw keys, layout 1's records), with 150 messages (more
/// than one run), one of them recalled, cursors, a device cursor and dedup entries.
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
        let mut m = layout_1_message(ab, seq);
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
        let record = layout_1::Dedup {
            conv_id: ab.to_wire(),
            seq,
            msg_id: m.msg_id,
            server_time_ms: m.server_time_ms,
        };
        dedup.insert(key, encode(&record)).unwrap();
    }
    let cursor = layout_1::Cursor {
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

/// Layout 1's records decode from the bytes layout 1 wrote (postcard, worked out by hand from
/// the record as it was in commit 17147bb), so a change to the frozen records is caught here.
#[test]
fn layout_1_records_decode_from_the_bytes_layout_1_wrote() {
    let message = [
        0x03, // conv_id
        0x01, // seq
        0x65, // msg_id 101
        0x0a, // from
        0x0b, // to
        0x02, b'c', b'1', // client_msg_id
        0x02, // content_type 1, zigzag
        0x02, b'm', b'1', // content
        0xe9, 0x07, // server_time_ms 1001
        0x00, // recalled
        0x00, // recall_of_seq
        0x00, // recall_event_seq
    ];
    let decoded: layout_1::Message = decode(&message).unwrap();
    assert_eq!(
        decoded,
        layout_1::Message {
            conv_id: 3,
            seq: 1,
            msg_id: 101,
            from: 10,
            to: 11,
            client_msg_id: "c1".into(),
            content_type: 1,
            content: b"m1".to_vec(),
            server_time_ms: 1001,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
        }
    );
    assert_eq!(encode(&decoded), message);
    let dedup: layout_1::Dedup = decode(&[0x03, 0x01, 0x65, 0xe9, 0x07]).unwrap();
    assert_eq!(
        dedup,
        layout_1::Dedup {
            conv_id: 3,
            seq: 1,
            msg_id: 101,
            server_time_ms: 1001
        }
    );
    let cursor: layout_1::Cursor = decode(&[0x96, 0x01, 0x78]).unwrap();
    assert_eq!(
        cursor,
        layout_1::Cursor {
            delivered_seq: 150,
            read_seq: 120
        }
    );
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
            let recent = store.recent_conversations(user, 0..=u64::MAX, 10).unwrap();
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

/// With `durability = "none"` the migration still syncs: each of its batches (messages, cursor
/// rows, recency: one each here), and the layout mark, before layout 1 is deleted (then the
/// marks of the three indexes built at open, empty here, are synced too). What this
/// proves is that the syncs happen (counted by the store); that they reach the disk in that
/// order is fjall's fdatasync, which no test here can cut the power on.
#[test]
fn with_durability_none_the_migration_is_synced_before_layout_1_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ab = ConvId::direct(A, B).unwrap();
    write_layout_1(dir.path(), ab);
    let store = FjallStore::open(dir.path(), Durability::None).unwrap();
    assert_eq!(
        store
            .durable_syncs
            .load(std::sync::atomic::Ordering::Relaxed),
        7,
        "three batches, the layout mark and three index marks"
    );
    assert!(!store.db.keyspace_exists("messages"));
    assert_eq!(store.messages_after(ab, 0, usize::MAX).unwrap().len(), 150);
}

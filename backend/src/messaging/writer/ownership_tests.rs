//! The fence path, through two real `Writer`s (two nodes' sequencers) over one store (fjall,
//! or PostgreSQL where a test says so): a node that lost a conversation has its group refused
//! with nothing written, answers UNAVAILABLE with a pause, forgets what it cached, and a
//! resend continues the stored seqs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::super::{
    CursorKind, CursorMove, NewMessage, Outcome, RowPolicy, Write, WriteOp, Writer,
};
use crate::api::ConnRef;
use crate::config::Durability;
use crate::contacts::ContactsConfig;
use crate::groups::GroupsConfig;
use crate::store::postgres_tests::open_test_store;
use crate::store::{
    AccountStore, Claim, ConvId, FjallStore, IdKind, OwnerRecord, OwnerStore, Ports, StaleFence,
    StoreError, UserId,
};
use ringchat_proto::v1::ErrorCode;

fn writer(ports: &Ports) -> Writer {
    let policy = RowPolicy {
        dedup_window: 64,
        device_cursor_ttl_ms: u64::MAX,
    };
    Writer::new(
        ports,
        120_000,
        64,
        policy,
        ContactsConfig::default().limits(),
        GroupsConfig::default(),
    )
    .expect("writer")
}

/// A send of "hi" from `from` to `to` (also the dedup tests').
pub(in crate::messaging::writer) fn send(from: UserId, to: UserId, id: &str) -> WriteOp {
    WriteOp {
        conn: ConnRef { shard: 0, conn: 1 },
        request_id: 7,
        write: Write::Send(NewMessage {
            from,
            to,
            client_msg_id: id.into(),
            content_type: 1,
            content: Bytes::from_static(b"hi"),
            refused: None,
        }),
        queued_at: None,
        trace: None,
    }
}

/// Commits one send; the seq it got, or the refusal's code and pause.
fn commit(w: &mut Writer, op: WriteOp) -> Result<u64, (ErrorCode, u64)> {
    let mut batch = vec![op];
    let done = w.commit(&mut batch);
    match &done.outcomes[..] {
        [Outcome::Sent { message, .. }] => Ok(done.messages[*message].seq),
        [Outcome::Duplicate { original, .. }] => Ok(original.seq),
        [Outcome::Refused { refusal, .. }] => Err((refusal.code, refusal.retry_after_ms)),
        other => panic!("unexpected outcome {other:?}"),
    }
}

struct Two {
    _dir: tempfile::TempDir,
    ports: Ports,
    a: UserId,
    b: UserId,
}

fn two_users() -> Two {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).expect("store"));
    let a = store.create_user("a", "x", "", 1).expect("a").user_id;
    let b = store.create_user("b", "x", "", 1).expect("b").user_id;
    Two {
        _dir: dir,
        ports: Ports::of(store),
        a,
        b,
    }
}

#[test]
fn a_fenced_node_writes_nothing_and_a_resend_continues_the_stored_seqs() {
    let t = two_users();
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    let mut n1 = writer(&t.ports)
        .with_ownership(1, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    let mut n2 = writer(&t.ports)
        .with_ownership(2, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");

    assert_eq!(commit(&mut n1, send(t.a, t.b, "m1")), Ok(1));
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), Some(1));
    // Node 2 takes the conversation (its view moved it there) and writes on.
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    assert_eq!(
        t.ports
            .owners
            .owner(conv)
            .expect("owner")
            .map(|r| (r.epoch, r.node)),
        Some((2, 2))
    );

    // Node 1 still believes it holds epoch 1 and has seq 1 as the head in its cache: fenced.
    let (code, pause) = commit(&mut n1, send(t.a, t.b, "m3")).expect_err("fenced");
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(pause > 0, "the refusal says when to retry");
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), None);
    assert_eq!(
        t.ports
            .log
            .conversation(conv)
            .expect("head")
            .map(|h| h.max_seq),
        Some(2)
    );

    // The client resends; node 1 claims again and continues from the stored head, not its
    // stale cache: seq 3, not a second seq 2.
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m3")), Ok(3));
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), Some(3));
    // And node 2, fenced in turn, finds m2 by dedup when its client resends it.
    assert!(commit(&mut n2, send(t.b, t.a, "m4")).is_err());
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    let seqs: Vec<u64> = t
        .ports
        .log
        .messages_after(conv, 0, 100)
        .expect("read")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

/// Another node takes two of the three conversations a node holds; the node's next group
/// touches all three. The store names both stale fences, the node forgets both at once, and
/// the resent group is committed whole on the second try (the first is refused whole: its ops
/// were applied before the store answered). On PostgreSQL, a store of record of a cluster.
#[test]
fn every_conversation_a_fenced_group_lost_is_forgotten_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_test_store(dir.path()).expect("store"));
    let users: Vec<UserId> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| store.create_user(name, "x", "", 1).expect("user").user_id)
        .collect();
    let ports = Ports::of(store);
    let (a, others) = (users[0], &users[1..]);
    let convs: Vec<ConvId> = others
        .iter()
        .map(|&to| ConvId::direct(a, to).expect("conv"))
        .collect();
    let mut n1 = writer(&ports)
        .with_ownership(1, Arc::clone(&ports.owners), 1024)
        .expect("ownership");
    let mut n2 = writer(&ports)
        .with_ownership(2, Arc::clone(&ports.owners), 1024)
        .expect("ownership");
    let batch = |tag: &str| -> Vec<WriteOp> {
        others
            .iter()
            .map(|&to| send(a, to, &format!("{tag}{to}")))
            .collect()
    };
    let committed = |w: &mut Writer, ops: Vec<WriteOp>| -> Vec<Result<u64, ErrorCode>> {
        let done = w.commit(&mut { ops });
        done.outcomes
            .iter()
            .map(|o| match o {
                Outcome::Sent { message, .. } => Ok(done.messages[*message].seq),
                Outcome::Duplicate { original, .. } => Ok(original.seq),
                Outcome::Refused { refusal, .. } => Err(refusal.code),
                other => panic!("unexpected outcome {other:?}"),
            })
            .collect()
    };
    assert_eq!(committed(&mut n1, batch("m1-")), [Ok(1), Ok(1), Ok(1)]);
    // Node 2 takes C1 and C2 (its view moved them there) and writes in both.
    let taken = vec![send(others[0], a, "n2-1"), send(others[1], a, "n2-2")];
    assert_eq!(committed(&mut n2, taken), [Ok(2), Ok(2)]);

    let unavailable = Err(ErrorCode::Unavailable);
    assert_eq!(
        committed(&mut n1, batch("m2-")),
        [unavailable, unavailable, unavailable]
    );
    let epoch = |w: &Writer, c: ConvId| w.ownership.as_ref().and_then(|o| o.epoch(c));
    assert_eq!(epoch(&n1, convs[0]), None, "C1 forgotten");
    assert_eq!(epoch(&n1, convs[1]), None, "C2 forgotten with it");
    assert_eq!(epoch(&n1, convs[2]), Some(1), "C3 still held");

    // The clients resend: C1 and C2 are claimed again, C3 written under its held epoch.
    assert_eq!(committed(&mut n1, batch("m2-")), [Ok(3), Ok(3), Ok(2)]);
    assert_eq!(epoch(&n1, convs[0]), Some(3));
    assert_eq!(epoch(&n1, convs[1]), Some(3));
    assert_eq!(epoch(&n1, convs[2]), Some(1));
}

#[test]
fn taking_a_conversation_from_another_node_drops_the_stale_cache() {
    let t = two_users();
    let mut n1 = writer(&t.ports)
        .with_ownership(1, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    let mut n2 = writer(&t.ports)
        .with_ownership(2, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m1")), Ok(1));
    assert_eq!(commit(&mut n2, send(t.b, t.a, "m2")), Ok(2));
    // Node 1 forgets its epoch without a fenced group (as after its epoch cache was trimmed):
    // its claim takes the conversation from node 2, so its cached head (seq 1) must go.
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    n1.lost(&[StaleFence {
        conv: conv.to_wire(),
        fenced: 1,
        stored: 2,
    }]);
    assert_eq!(commit(&mut n1, send(t.a, t.b, "m3")), Ok(3));
}

/// Commits a read cursor move of `user`: the read cursor it answers with, or the refusal's code.
fn read_to(w: &mut Writer, user: UserId, conv: ConvId, seq: u64) -> Result<u64, ErrorCode> {
    let op = WriteOp {
        conn: ConnRef { shard: 0, conn: 2 },
        request_id: 9,
        write: Write::Cursor(CursorMove {
            user,
            device_id: "phone".into(),
            conv,
            kind: CursorKind::Read,
            seq,
        }),
        queued_at: None,
        trace: None,
    };
    let done = w.commit(&mut vec![op]);
    match &done.outcomes[..] {
        [Outcome::Cursor { cursor, .. }] => Ok(cursor.read_seq),
        [Outcome::Refused { refusal, .. }] => Err(refusal.code),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn a_node_that_lost_a_conversation_never_answers_a_write_nothing_group_from_its_cache() {
    a_stale_owner_never_answers_from_its_cache(&two_users());
}

/// The same over PostgreSQL, the cluster's store of record: fences read over the network.
#[test]
fn a_node_that_lost_a_conversation_never_answers_from_its_cache_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_test_store(dir.path()).expect("the test schema"));
    let a = store.create_user("a", "x", "", 1).expect("a").user_id;
    let b = store.create_user("b", "x", "", 1).expect("b").user_id;
    a_stale_owner_never_answers_from_its_cache(&Two {
        _dir: dir,
        ports: Ports::of(store),
        a,
        b,
    });
}

/// Node 1 caches b's read cursor, node 2 takes the conversation and moves it; node 1's next
/// group that writes nothing must not answer from its cache.
fn a_stale_owner_never_answers_from_its_cache(t: &Two) {
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    let mut n1 = writer(&t.ports)
        .with_ownership(1, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    let mut n2 = writer(&t.ports)
        .with_ownership(2, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    for i in 1..=9 {
        assert_eq!(commit(&mut n1, send(t.a, t.b, &format!("m{i}"))), Ok(i));
    }
    // Node 1 caches b's row at read 5; node 2 takes the conversation and moves it to 9.
    assert_eq!(read_to(&mut n1, t.b, conv, 5), Ok(5));
    assert_eq!(read_to(&mut n2, t.b, conv, 9), Ok(9));

    // Node 1 still believes it holds the conversation; a read to 3 moves nothing, so the
    // group writes nothing: never answered from the stale row (read 5).
    let answer = read_to(&mut n1, t.b, conv, 3);
    assert_eq!(
        answer,
        Err(ErrorCode::Unavailable),
        "a stale cursor: {answer:?}"
    );
    assert_eq!(n1.ownership.as_ref().and_then(|o| o.epoch(conv)), None);
    // The retry claims the conversation again and answers from the store.
    assert_eq!(read_to(&mut n1, t.b, conv, 3), Ok(9));
    // A node that still holds its conversations answers such a group as before.
    assert_eq!(read_to(&mut n1, t.b, conv, 4), Ok(9));
}

#[test]
fn one_box_claims_nothing() {
    let t = two_users();
    let mut w = writer(&t.ports);
    assert_eq!(commit(&mut w, send(t.a, t.b, "m1")), Ok(1));
    let conv = ConvId::direct(t.a, t.b).expect("conv");
    assert_eq!(t.ports.owners.owner(conv).expect("owner"), None);
}

fn create_group(owner: UserId) -> WriteOp {
    use crate::groups::{GroupOp, GroupOpKind};
    WriteOp {
        conn: ConnRef { shard: 0, conn: 1 },
        request_id: 8,
        write: Write::Group(GroupOp {
            actor: owner,
            kind: GroupOpKind::Create {
                name: "g".into(),
                avatar_url: String::new(),
                intro: String::new(),
                members: Vec::new(),
                join_policy: crate::store::JoinPolicy::Open,
                history_visible: false,
            },
        }),
        queued_at: None,
        trace: None,
    }
}

/// Commits `batch`; the msg ids it stored and the groups it created.
fn commit_ids(w: &mut Writer, batch: Vec<WriteOp>) -> (Vec<u64>, Vec<ConvId>) {
    let done = w.commit(&mut { batch });
    let groups = done
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Group { done, .. } => Some(done.group),
            Outcome::Sent { .. } => None,
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    (done.messages.iter().map(|m| m.msg_id).collect(), groups)
}

#[test]
fn two_nodes_on_one_store_hand_out_disjoint_msg_ids_and_group_ids() {
    let t = two_users();
    let c = t
        .ports
        .accounts
        .create_user("c", "x", "", 1)
        .expect("c")
        .user_id;
    // Small blocks: the nodes go through several leases each, ahead and inline.
    let mut n1 = writer(&t.ports)
        .with_ownership(1, Arc::clone(&t.ports.owners), 3)
        .expect("ownership");
    let mut n2 = writer(&t.ports)
        .with_ownership(2, Arc::clone(&t.ports.owners), 3)
        .expect("ownership");
    let (mut msg_ids, mut groups) = (Vec::new(), Vec::new());
    for i in 0..12 {
        let (m1, g1) = commit_ids(
            &mut n1,
            vec![send(t.a, t.b, &format!("1-{i}")), create_group(t.a)],
        );
        let (m2, g2) = commit_ids(
            &mut n2,
            vec![send(t.a, c, &format!("2-{i}")), create_group(c)],
        );
        // A creation also stores its event message.
        assert_eq!((m1.len(), g1.len(), m2.len(), g2.len()), (2, 1, 2, 1));
        // The new group's conversation was claimed by its creator before its first commit.
        for (g, node) in [(g1[0], 1), (g2[0], 2)] {
            let owner = t.ports.owners.owner(g).expect("owner").expect("claimed");
            assert_eq!((owner.epoch, owner.node), (1, node), "{g:?}");
        }
        msg_ids.extend(m1.into_iter().chain(m2));
        groups.extend(g1.into_iter().chain(g2));
    }
    let distinct = |v: &[u64]| v.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(distinct(&msg_ids), msg_ids.len(), "{msg_ids:?}");
    let group_ids: Vec<u64> = groups.iter().map(|g| g.to_wire()).collect();
    assert_eq!(distinct(&group_ids), group_ids.len(), "{group_ids:?}");
    // The stored counter is past every id handed out: a restarted node leases after them.
    let next = t.ports.log.next_msg_id().expect("counter");
    assert!(msg_ids.iter().all(|&id| id < next), "{next} {msg_ids:?}");
}

/// The owner store, counting round trips (the store under it is the real one).
struct Counting {
    inner: Arc<FjallStore>,
    claims: AtomicUsize,
    claim_batches: AtomicUsize,
}

impl OwnerStore for Counting {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        self.inner.owner(conv)
    }
    fn claim(&self, conv: ConvId, node: u64, seen: u64) -> Result<Claim, StoreError> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.inner.claim(conv, node, seen)
    }
    fn owners(&self, convs: &[ConvId]) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        self.inner.owners(convs)
    }
    fn claim_many(&self, node: u64, claims: &[(ConvId, u64)]) -> Result<Vec<Claim>, StoreError> {
        self.claim_batches.fetch_add(1, Ordering::Relaxed);
        self.inner.claim_many(node, claims)
    }
    fn lease_ids(&self, kind: IdKind, count: u64) -> Result<std::ops::Range<u64>, StoreError> {
        self.inner.lease_ids(kind, count)
    }
}

#[test]
fn a_group_touching_many_unclaimed_conversations_claims_them_in_one_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).expect("store"));
    let users: Vec<UserId> = (0..6)
        .map(|i| {
            let name = format!("u{i}");
            store.create_user(&name, "x", "", 1).expect("user").user_id
        })
        .collect();
    let ports = Ports::of(Arc::clone(&store));
    let counting = |store: &Arc<FjallStore>| {
        Arc::new(Counting {
            inner: Arc::clone(store),
            claims: AtomicUsize::new(0),
            claim_batches: AtomicUsize::new(0),
        })
    };
    let batch = |tag: &str| -> Vec<WriteOp> {
        users[1..]
            .iter()
            .map(|&to| send(users[0], to, &format!("{tag}{to}")))
            .collect()
    };
    let convs: Vec<ConvId> = users[1..]
        .iter()
        .map(|&to| ConvId::direct(users[0], to).expect("conv"))
        .collect();
    for (node, tag, epoch) in [(1, "a", 1), (2, "b", 2)] {
        // Node 1 claims five new conversations; node 2 then takes all five over.
        let owners = counting(&store);
        let mut w = writer(&ports)
            .with_ownership(node, Arc::clone(&owners) as Arc<dyn OwnerStore>, 64)
            .expect("ownership");
        let (ids, _) = commit_ids(&mut w, batch(tag));
        assert_eq!(ids.len(), 5);
        assert_eq!(owners.claim_batches.load(Ordering::Relaxed), 1);
        assert_eq!(owners.claims.load(Ordering::Relaxed), 0);
        for conv in &convs {
            let owner = store.owner(*conv).expect("owner").expect("claimed");
            assert_eq!((owner.epoch, owner.node), (epoch, node));
        }
        // Held now: the next group claims nothing.
        commit_ids(&mut w, batch(&format!("{tag}2")));
        assert_eq!(owners.claim_batches.load(Ordering::Relaxed), 1);
    }
}

fn group_op(actor: UserId, kind: crate::groups::GroupOpKind) -> WriteOp {
    WriteOp {
        conn: ConnRef { shard: 0, conn: 1 },
        request_id: 9,
        write: Write::Group(crate::groups::GroupOp { actor, kind }),
        queued_at: None,
        trace: None,
    }
}

/// Commits one op; the users a group op put in the group, or the refusal's code.
fn commit_op(w: &mut Writer, op: WriteOp) -> Result<Vec<UserId>, ErrorCode> {
    let done = w.commit(&mut vec![op]);
    match &done.outcomes[..] {
        [Outcome::Refused { refusal, .. }] => Err(refusal.code),
        [Outcome::Group { done, .. }] => Ok(done.joined.clone()),
        [_] => Ok(Vec::new()),
        other => panic!("unexpected outcomes {other:?}"),
    }
}

/// A block is written by the node that owns the pair's direct conversation; the group's node
/// cached the pair as unblocked when the group was made. Its next add must read the block.
#[test]
fn a_group_add_on_another_node_sees_a_block_written_since() {
    use crate::contacts::ops::ContactOp;
    use crate::groups::GroupOpKind;
    let t = two_users();
    let mut n1 = writer(&t.ports)
        .with_ownership(1, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");
    let mut n2 = writer(&t.ports)
        .with_ownership(2, Arc::clone(&t.ports.owners), 1024)
        .expect("ownership");

    let create = group_op(
        t.a,
        GroupOpKind::Create {
            name: "g".into(),
            avatar_url: String::new(),
            intro: String::new(),
            members: vec![t.b],
            join_policy: crate::store::JoinPolicy::Open,
            history_visible: false,
        },
    );
    let (_, groups) = commit_ids(&mut n1, vec![create]);
    let g = groups[0];

    let block = WriteOp {
        conn: ConnRef { shard: 0, conn: 2 },
        request_id: 10,
        write: Write::Contact(ContactOp::Block {
            user: t.b,
            other: t.a,
        }),
        queued_at: None,
        trace: None,
    };
    assert_eq!(commit_op(&mut n2, block), Ok(Vec::new()));
    assert_eq!(
        commit_op(&mut n1, group_op(t.b, GroupOpKind::Leave { g })),
        Ok(Vec::new())
    );
    assert_eq!(
        commit_op(
            &mut n1,
            group_op(
                t.a,
                GroupOpKind::Invite {
                    g,
                    users: vec![t.b]
                }
            )
        ),
        Ok(Vec::new()),
        "B blocked A on another node: A may not put B back"
    );
}

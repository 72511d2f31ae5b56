//! The sequencer's group state, driven through the real `Writer` over a fjall store: the read
//! histogram it keeps agrees with the members' cursor rows after any mix of sends, reads, joins,
//! invites, leaves and removals in one commit group or many; and a refused op leaves nothing.

use std::sync::Arc;

use bytes::Bytes;

use super::send::GroupMessage;
use super::{GroupOp, GroupOpKind, GroupsConfig};
use crate::api::ConnRef;
use crate::config::Durability;
use crate::contacts::ContactsConfig;
use crate::messaging::writer::{
    CursorKind, CursorMove, Outcome, RowPolicy, Write, WriteOp, Writer,
};
use crate::store::{
    AccountStore, ConvId, CursorStore, FjallStore, GroupStore, JoinPolicy, Ports, ReadHistogram,
    StoreError, UserId,
};

const WINDOW: u64 = 8;
const USERS: usize = 8;

struct Setup {
    _dir: tempfile::TempDir,
    ports: Ports,
    writer: Writer,
    users: Vec<UserId>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
    let users = (0..USERS)
        .map(|i| {
            store
                .create_user(&format!("u{i}"), "x", "", 1)
                .unwrap()
                .user_id
        })
        .collect();
    let ports = Ports::of(store);
    let limits = GroupsConfig {
        read_count_window: WINDOW,
        ..GroupsConfig::default()
    };
    let policy = RowPolicy {
        dedup_window: 64,
        device_cursor_ttl_ms: u64::MAX,
    };
    let writer = Writer::new(
        &ports,
        120_000,
        64,
        policy,
        ContactsConfig::default().limits(),
        limits,
    )
    .unwrap();
    Setup {
        _dir: dir,
        ports,
        writer,
        users,
    }
}

fn op(write: Write) -> WriteOp {
    WriteOp {
        conn: ConnRef { shard: 0, conn: 1 },
        request_id: 1,
        write,
        queued_at: None,
        trace: None,
    }
}

fn group_op(actor: UserId, kind: GroupOpKind) -> WriteOp {
    op(Write::Group(GroupOp { actor, kind }))
}

fn send(from: UserId, g: ConvId, n: u64) -> WriteOp {
    op(Write::GroupSend(GroupMessage {
        from,
        g,
        client_msg_id: format!("c{n}"),
        content_type: 1,
        content: Bytes::from_static(b"x"),
        mention_user_ids: Vec::new(),
        mention_all: false,
        refused: None,
    }))
}

fn read(user: UserId, g: ConvId, seq: u64) -> WriteOp {
    op(Write::Cursor(CursorMove {
        user,
        device_id: "d".into(),
        conv: g,
        kind: CursorKind::Read,
        seq,
    }))
}

fn create(s: &mut Setup, owner: UserId, members: Vec<UserId>) -> ConvId {
    let kind = GroupOpKind::Create {
        name: "g".into(),
        avatar_url: String::new(),
        intro: String::new(),
        members,
        join_policy: JoinPolicy::Open,
        history_visible: false,
    };
    let done = s.writer.commit(&mut vec![group_op(owner, kind)]);
    match &done.outcomes[0] {
        Outcome::Group { done, .. } => done.group,
        other => panic!("{other:?}"),
    }
}

/// The stored histogram against one built from the stored rows, at every seq.
fn assert_agrees(s: &Setup, g: ConvId) {
    let kept = s.ports.groups.read_histogram(g).unwrap().expect("kept");
    let truth = build(&*s.ports.groups, &*s.ports.cursors, g, u64::MAX).unwrap();
    let members = s.ports.groups.group(g).unwrap().unwrap().member_count;
    let max = s.ports.log.conversation(g).unwrap().unwrap().max_seq;
    assert_eq!(kept.at_or_past(0), (members, true), "everyone counted once");
    for seq in 0..=max + 1 {
        let (want, _) = truth.at_or_past(seq);
        let (got, exact) = kept.at_or_past(seq);
        if exact {
            assert_eq!(got, want, "seq {seq}: {kept:?}");
        } else {
            assert!(got <= want, "seq {seq}: a lower bound: {kept:?}");
            assert!(seq < kept.base_seq);
        }
    }
    assert!(max < WINDOW || kept.base_seq > 0, "the window slid");
    // Former members (uncounted) may read, but never past the seq they left at.
    for user in &s.users {
        let Some(row) = s.ports.groups.user_group(*user, g).unwrap() else {
            continue;
        };
        if !row.is_member() {
            let read = s
                .ports
                .cursors
                .cursor_row(g, *user)
                .unwrap()
                .map_or(0, |r| r.cursor.read_seq);
            assert!(read <= row.left_seq, "{user} read {read} past {row:?}");
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn the_read_histogram_agrees_with_the_cursor_rows_whatever_the_ops() {
    let mut s = setup();
    let users = s.users.clone();
    let owner = users[0];
    let g = create(&mut s, owner, users[1..4].to_vec());
    assert_agrees(&s, g);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let (mut n, mut sent, mut moved, mut changed) = (0, 0, 0, 0);
    for _ in 0..150 {
        // Up to 6 ops per commit group, so that one group moves a member more than once.
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(6) {
            n += 1;
            let user = users[rng.below(USERS)];
            let max = s.writer.conv(g).unwrap().max_seq;
            batch.push(match rng.below(7) {
                0 | 1 => send(user, g, n),
                2 | 3 => read(user, g, rng.below(max as usize + 2) as u64),
                4 => group_op(
                    user,
                    GroupOpKind::Join {
                        g,
                        message: String::new(),
                    },
                ),
                5 if user != owner => group_op(user, GroupOpKind::Leave { g }),
                5 => group_op(
                    owner,
                    GroupOpKind::Invite {
                        g,
                        users: users[1..].to_vec(),
                    },
                ),
                _ => group_op(
                    owner,
                    GroupOpKind::Remove {
                        g,
                        users: vec![user],
                    },
                ),
            });
        }
        for outcome in s.writer.commit(&mut batch).outcomes {
            match outcome {
                Outcome::GroupSent { .. } => sent += 1,
                Outcome::Cursor { moved: true, .. } => moved += 1,
                Outcome::Group { done, .. } if !done.events.is_empty() => changed += 1,
                _ => {}
            }
        }
        assert_agrees(&s, g);
    }
    assert!(
        sent > 20 && moved > 10 && changed > 20,
        "{sent} {moved} {changed}"
    );
}

#[test]
fn a_refused_op_changes_no_count() {
    let mut s = setup();
    let (owner, member, outsider) = (s.users[0], s.users[1], s.users[2]);
    let g = create(&mut s, owner, vec![member]);
    let before = s.ports.groups.read_histogram(g).unwrap();
    // A non-member's send and read, a member's removal of the owner: all refused.
    let done = s.writer.commit(&mut vec![
        send(outsider, g, 1),
        read(outsider, g, 1),
        group_op(
            member,
            GroupOpKind::Remove {
                g,
                users: vec![owner],
            },
        ),
    ]);
    for outcome in &done.outcomes {
        assert!(matches!(outcome, Outcome::Refused { .. }), "{outcome:?}");
    }
    assert_eq!(s.ports.groups.read_histogram(g).unwrap(), before);
    assert_eq!(before.unwrap().at_or_past(0), (2, true));
}

/// A removed member still moves its own cursors, up to the seq it was removed at and no
/// further, uncounted by the histogram (current members only); back as a member, it is counted
/// at that cursor. The event it was removed by keeps the group as it stood right after.
#[test]
fn a_former_member_reads_up_to_where_it_left_uncounted() {
    let mut s = setup();
    let (owner, member) = (s.users[0], s.users[1]);
    let g = create(&mut s, owner, vec![member]);
    s.writer
        .commit(&mut vec![send(owner, g, 1), send(owner, g, 2)]);
    let remove = GroupOpKind::Remove {
        g,
        users: vec![member],
    };
    s.writer.commit(&mut vec![group_op(owner, remove)]);
    let left = s
        .ports
        .groups
        .user_group(member, g)
        .unwrap()
        .unwrap()
        .left_seq;
    let event = s.ports.log.message(g, left).unwrap().unwrap();
    let event: ringchat_proto::v1::GroupEvent =
        prost::Message::decode(event.content.as_ref()).unwrap();
    let kept = event.group.expect("the group as it stood");
    assert_eq!((kept.name.as_str(), kept.member_count), ("g", 1));
    s.writer.commit(&mut vec![send(owner, g, 3)]);
    let before = s.ports.groups.read_histogram(g).unwrap();
    let done = s.writer.commit(&mut vec![read(member, g, u64::MAX)]);
    match &done.outcomes[0] {
        Outcome::Cursor {
            cursor,
            moved: true,
            ..
        } => assert_eq!((cursor.read_seq, cursor.delivered_seq), (left, left)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.ports.groups.read_histogram(g).unwrap(), before);
    assert_agrees(&s, g);
    let join = GroupOpKind::Join {
        g,
        message: String::new(),
    };
    s.writer.commit(&mut vec![group_op(member, join)]);
    assert!(s.ports.groups.group_member(g, member).unwrap().is_some());
    assert_agrees(&s, g);
}

/// An op that loads several cursor rows (a create or invite) keeps every row it loaded, even
/// when the row cache reaches its bound in the middle of it (16 rows in tests).
#[test]
fn an_op_loading_many_rows_keeps_them_when_the_cache_fills_up() {
    let mut s = setup();
    let (owner, others) = (s.users[0], s.users[1..].to_vec());
    for _ in 0..12 {
        let g = create(&mut s, owner, Vec::new());
        let invite = GroupOpKind::Invite {
            g,
            users: others.clone(),
        };
        let done = s.writer.commit(&mut vec![group_op(owner, invite)]);
        assert!(
            matches!(done.outcomes[0], Outcome::Group { .. }),
            "{:?}",
            done.outcomes[0]
        );
        assert_agrees(&s, g);
    }
}

/// The truth a kept histogram is checked against: one built from the member rows and their
/// cursor rows.
fn build(
    groups: &dyn GroupStore,
    cursors: &dyn CursorStore,
    g: ConvId,
    window: u64,
) -> Result<ReadHistogram, StoreError> {
    let mut histogram = ReadHistogram::default();
    let mut after = 0;
    loop {
        let members = groups.group_members(g, after, 500)?;
        let Some(&(last, _)) = members.last() else {
            break;
        };
        let keys: Vec<(ConvId, UserId)> = members.iter().map(|(u, _)| (g, *u)).collect();
        for row in cursors.cursor_rows(&keys)? {
            histogram.add(row.map_or(0, |r| r.cursor.read_seq), window);
        }
        if members.len() < 500 {
            break;
        }
        after = last;
    }
    Ok(histogram)
}

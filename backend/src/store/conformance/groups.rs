//! Conformance: groups (records, members paged, a user's groups, applications, mentions), all
//! written by commit groups together with the group's messages.

use super::*;
use crate::store::{
    ApplicationRecord, GroupRecord, GroupRole, GroupStore, GroupWrites, JoinPolicy,
    MENTION_ALL_USER, MemberRecord, Mentions, ReadHistogram, UserGroupRecord,
};

pub(super) fn group_id(n: u64) -> ConvId {
    ConvId::group(n).expect("a group number")
}

pub(super) fn record(name: &str, members: u32) -> GroupRecord {
    GroupRecord {
        name: name.to_owned(),
        avatar_url: String::new(),
        intro: "ünïcode ✓".to_owned(),
        owner: ALICE,
        join_policy: JoinPolicy::Approval,
        history_visible: false,
        mute_all: false,
        member_count: members,
        admin_count: 0,
        application_count: 0,
        created_ms: 7,
        dissolved_seq: 0,
    }
}

fn member(role: GroupRole, from: u64) -> MemberRecord {
    MemberRecord {
        role,
        joined_ms: 5,
        visible_from_seq: from,
        muted_until_ms: 0,
    }
}

/// A group message at `seq` from `from`, mentioning `mentions`.
fn group_msg(g: ConvId, seq: u64, from: UserId, mentions: Option<Mentions>) -> MessageRecord {
    MessageRecord {
        conv_id: g,
        from,
        to: 0,
        mentions: mentions.map(Box::new),
        ..msg(direct(ALICE, BOB), seq)
    }
}

pub(crate) fn groups_members_and_user_groups_round_trip_and_page<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let g = group_id(1);
    assert_eq!(store.next_group_id().unwrap(), 1);
    let users = [ALICE, BOB, CAROL, DAVE];
    commit(
        &store,
        CommitGroup {
            messages: vec![group_msg(g, 1, ALICE, None)],
            groups: GroupWrites {
                groups: vec![(g, record("team", 4))],
                members: users
                    .iter()
                    .map(|u| (g, *u, Some(member(GroupRole::Member, 1))))
                    .collect(),
                user_groups: users
                    .iter()
                    .map(|u| (*u, g, Some(UserGroupRecord::default())))
                    .collect(),
                user_group_count_changes: users.iter().map(|u| (*u, 1)).collect(),
                next_group_id: Some(2),
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    let check = |store: &A::Store| {
        assert_eq!(store.group(g).unwrap(), Some(record("team", 4)));
        assert_eq!(store.group(group_id(2)).unwrap(), None);
        assert_eq!(store.next_group_id().unwrap(), 2);
        assert_eq!(
            store.group_member(g, BOB).unwrap(),
            Some(member(GroupRole::Member, 1))
        );
        assert_eq!(store.group_member(g, USER_ID_LAST).unwrap(), None);
        let page1 = store.group_members(g, 0, 3).unwrap();
        assert_eq!(
            page1.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            [ALICE, BOB, CAROL]
        );
        let page2 = store.group_members(g, CAROL, 3).unwrap();
        assert_eq!(page2.iter().map(|(u, _)| *u).collect::<Vec<_>>(), [DAVE]);
        assert!(store.group_members(g, DAVE, 3).unwrap().is_empty());
        assert!(store.group_members(g, UserId::MAX, 3).unwrap().is_empty());
        assert_eq!(store.user_group_count(CAROL).unwrap(), 1);
        assert_eq!(store.user_group_count(USER_ID_LAST).unwrap(), 0);
        let mine = store.groups_of_user(CAROL, 0, 10).unwrap();
        assert_eq!(mine, vec![(g, UserGroupRecord::default())]);
        assert!(
            store
                .groups_of_user(CAROL, g.to_wire(), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(all_after(store, g)[0].conv_id, g);
    };
    check(&store);
    let store = reopen::<A>(store, dir.path());
    check(&store);

    // A member leaves: the member row goes, the user's row keeps the seq it left at.
    let left = UserGroupRecord {
        visible_from_seq: 1,
        left_seq: 2,
        notify_muted: false,
        added: true,
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![group_msg(g, 2, DAVE, None)],
            groups: GroupWrites {
                groups: vec![(g, record("team", 3))],
                members: vec![(g, DAVE, None)],
                user_groups: vec![(DAVE, g, Some(left))],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.group_member(g, DAVE).unwrap(), None);
    assert_eq!(store.user_group(DAVE, g).unwrap(), Some(left));
    assert_eq!(store.group(g).unwrap().unwrap().member_count, 3);
}

pub(crate) fn a_users_groups_are_listed_in_id_order_and_paged<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let groups: Vec<ConvId> = (1..=5).map(group_id).collect();
    commit(
        &store,
        CommitGroup {
            groups: GroupWrites {
                user_groups: groups
                    .iter()
                    .rev()
                    .map(|g| (BOB, *g, Some(UserGroupRecord::default())))
                    .chain([(CAROL, groups[0], Some(UserGroupRecord::default()))])
                    .collect(),
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    let page = store.groups_of_user(BOB, 0, 2).unwrap();
    assert_eq!(
        page.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        groups[..2]
    );
    let rest = store.groups_of_user(BOB, groups[1].to_wire(), 10).unwrap();
    assert_eq!(
        rest.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        groups[2..]
    );
    assert_eq!(store.groups_of_user(CAROL, 0, 10).unwrap().len(), 1);
    assert!(store.groups_of_user(DAVE, 0, 10).unwrap().is_empty());
}

/// A user's group count moves by each commit group's change to the count as stored then,
/// whatever wrote it meanwhile: writers adding and removing one user's rows at once (the owners
/// of the user's groups, on the nodes of a cluster) all count. A count is never read below 0.
pub(crate) fn group_count_changes_from_concurrent_writers_all_count<A: Adapter>() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    // A store shared by a cluster: each writer on a store of its own (a node), else all on one.
    let stores: Vec<Arc<A::Store>> = (0..WRITERS)
        .map(|_| {
            if A::EXCLUSIVE {
                Arc::clone(&store)
            } else {
                Arc::new(A::open(dir.path()))
            }
        })
        .collect();
    let row = |user: UserId, g: ConvId, on: bool| GroupWrites {
        user_groups: vec![(user, g, on.then(UserGroupRecord::default))],
        user_group_count_changes: vec![(user, if on { 1 } else { -1 })],
        ..GroupWrites::default()
    };
    let writers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            std::thread::spawn(move || {
                let groups: Vec<ConvId> = (0..EACH)
                    .map(|n| group_id(1 + w as u64 * EACH + n))
                    .collect();
                for g in &groups {
                    let groups = row(ALICE, *g, true);
                    commit(
                        store.as_ref(),
                        CommitGroup {
                            groups,
                            ..CommitGroup::default()
                        },
                    );
                }
                for g in groups.iter().step_by(2) {
                    let groups = row(ALICE, *g, false);
                    commit(
                        store.as_ref(),
                        CommitGroup {
                            groups,
                            ..CommitGroup::default()
                        },
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer");
    }
    let rows = store.groups_of_user(ALICE, 0, 1_000).unwrap().len();
    assert_eq!(rows as u64, WRITERS * EACH / 2);
    assert_eq!(store.user_group_count(ALICE).unwrap() as usize, rows);
    // A removal the count never had: read as 0, not below.
    commit(
        store.as_ref(),
        CommitGroup {
            groups: GroupWrites {
                user_group_count_changes: vec![(BOB, -1)],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.user_group_count(BOB).unwrap(), 0);
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the writers are done")
    };
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.user_group_count(ALICE).unwrap() as usize, rows);
}

pub(crate) fn applications_are_put_paged_and_removed<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let g = group_id(3);
    // Bob's was filed by Alice's invitation, Carol asked herself.
    let app = |m: &str| ApplicationRecord {
        message: m.to_owned(),
        sent_ms: 9,
        inviter: if m == "me too" { 0 } else { ALICE },
    };
    commit(
        &store,
        CommitGroup {
            groups: GroupWrites {
                applications: vec![
                    (g, CAROL, Some(app("me too"))),
                    (g, BOB, Some(app("please ✓"))),
                ],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.application(g, BOB).unwrap(), Some(app("please ✓")));
    let page = store.applications(g, 0, 1).unwrap();
    assert_eq!(page, vec![(BOB, app("please ✓"))]);
    assert_eq!(
        store.applications(g, BOB, 5).unwrap(),
        vec![(CAROL, app("me too"))]
    );
    commit(
        &store,
        CommitGroup {
            groups: GroupWrites {
                applications: vec![(g, BOB, None)],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.application(g, BOB).unwrap(), None);
    assert_eq!(store.applications(g, 0, 5).unwrap().len(), 1);
}

pub(crate) fn mentions_are_stored_with_the_message_and_counted_after_a_seq<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let g = group_id(4);
    let named = |ids: &[UserId], all: bool| Mentions {
        user_ids: ids.to_vec(),
        all,
    };
    let messages = vec![
        group_msg(g, 1, ALICE, Some(named(&[BOB, CAROL], false))),
        group_msg(g, 2, ALICE, None),
        group_msg(g, 3, ALICE, Some(named(&[], true))),
        group_msg(g, 4, ALICE, Some(named(&[BOB], true))),
    ];
    commit(
        &store,
        CommitGroup {
            messages: messages.clone(),
            groups: GroupWrites {
                mentions: vec![
                    (g, BOB, 1),
                    (g, CAROL, 1),
                    (g, MENTION_ALL_USER, 3),
                    (g, BOB, 4),
                    (g, MENTION_ALL_USER, 4),
                ],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    // The mentions come back with the messages, by seq and in ranges.
    assert_eq!(all_after(&store, g), messages);
    assert_eq!(store.message(g, 4).unwrap().as_ref(), Some(&messages[3]));
    assert_eq!(store.last_message(g).unwrap().as_ref(), Some(&messages[3]));
    // Bob: seqs 1, 3 (everyone), 4 (both: counted once).
    assert_eq!(store.unread_mentions(g, BOB, 0, u64::MAX, 99).unwrap(), 3);
    assert_eq!(store.unread_mentions(g, BOB, 1, u64::MAX, 99).unwrap(), 2);
    assert_eq!(
        store.unread_mentions(g, BOB, 0, u64::MAX, 2).unwrap(),
        2,
        "capped"
    );
    assert_eq!(store.unread_mentions(g, CAROL, 0, u64::MAX, 99).unwrap(), 3);
    assert_eq!(store.unread_mentions(g, DAVE, 3, u64::MAX, 99).unwrap(), 1);
    assert_eq!(store.unread_mentions(g, DAVE, 4, u64::MAX, 99).unwrap(), 0);
    assert_eq!(
        store
            .unread_mentions(g, DAVE, u64::MAX, u64::MAX, 99)
            .unwrap(),
        0
    );
    // Bounded above too: a former member's mentions end where it left.
    assert_eq!(store.unread_mentions(g, BOB, 0, 3, 99).unwrap(), 2);
    assert_eq!(store.unread_mentions(g, BOB, 3, 3, 99).unwrap(), 0);
    assert_eq!(store.unread_mentions(g, BOB, 4, 3, 99).unwrap(), 0);
    // Direct conversations' runs keep their encoding next to groups' runs.
    commit(&store, msgs(direct(ALICE, BOB), 1..=2));
    assert_eq!(seqs(&all_after(&store, direct(ALICE, BOB))), [1, 2]);
}

pub(crate) fn removed_mentions_are_no_longer_counted_and_stay_removed<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let g = group_id(5);
    let named = |ids: &[UserId], all: bool| Mentions {
        user_ids: ids.to_vec(),
        all,
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![
                group_msg(g, 1, ALICE, Some(named(&[BOB, CAROL], true))),
                group_msg(g, 2, ALICE, Some(named(&[BOB], false))),
            ],
            groups: GroupWrites {
                mentions: vec![
                    (g, BOB, 1),
                    (g, CAROL, 1),
                    (g, MENTION_ALL_USER, 1),
                    (g, BOB, 2),
                ],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    assert_eq!(store.unread_mentions(g, BOB, 0, u64::MAX, 99).unwrap(), 2);
    // Seq 1 recalled (its event at 3): its rows go in the recall's group.
    let event = MessageRecord {
        content: bytes::Bytes::new(),
        recall_of_seq: 1,
        ..group_msg(g, 3, ALICE, None)
    };
    commit(
        &store,
        CommitGroup {
            messages: vec![event],
            recalls: vec![(g, 1, 3)],
            groups: GroupWrites {
                mentions_removed: vec![(g, BOB, 1), (g, CAROL, 1), (g, MENTION_ALL_USER, 1)],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    let counts = |store: &A::Store| {
        [BOB, CAROL, DAVE].map(|u| store.unread_mentions(g, u, 0, u64::MAX, 99).unwrap())
    };
    assert_eq!(counts(&store), [1, 0, 0], "only Bob's seq 2 is left");
    // Removing a row that is not there is no error.
    commit(
        &store,
        CommitGroup {
            groups: GroupWrites {
                mentions_removed: vec![(g, DAVE, 2), (g, BOB, 9)],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(counts(&store), [1, 0, 0], "after reopen");
}

pub(crate) fn a_groups_changes_and_its_messages_are_visible_together<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let g = group_id(9);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Each read sees a later (or the same) snapshot than the one before it, and each
                // commit adds member n with message n: so count <= members <= head, unless
                // a commit was seen in part.
                let count = store.group(g).unwrap().map_or(0, |r| r.member_count);
                let members = store.group_members(g, 0, 1000).unwrap().len() as u32;
                let head = store.last_message(g).unwrap().map_or(0, |m| m.seq);
                assert!(count <= members, "count {count}, members {members}");
                assert!(u64::from(members) <= head, "members {members}, head {head}");
            }
        })
    };
    for n in 1..=40u64 {
        let user = USER_ID_FIRST + n;
        commit(
            &*store,
            CommitGroup {
                messages: vec![group_msg(g, n, user, None)],
                groups: GroupWrites {
                    groups: vec![(g, record("g", n as u32))],
                    members: vec![(g, user, Some(member(GroupRole::Member, n)))],
                    ..GroupWrites::default()
                },
                ..CommitGroup::default()
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(store.group_members(g, 0, 1000).unwrap().len(), 40);
    // A group that never commits leaves nothing.
    let dropped = CommitGroup {
        groups: GroupWrites {
            groups: vec![(group_id(10), record("never", 1))],
            ..GroupWrites::default()
        },
        ..CommitGroup::default()
    };
    drop(dropped);
    assert_eq!(store.group(group_id(10)).unwrap(), None);
}

pub(crate) fn read_histograms_are_replaced_whole_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let g = group_id(3);
    let histogram = |base_seq: u64, below: u32, counts: &[(u64, u32)]| ReadHistogram {
        base_seq,
        below,
        counts: counts.iter().copied().collect(),
    };
    {
        let store = A::open(dir.path());
        assert_eq!(store.read_histogram(g).unwrap(), None);
        for h in [
            histogram(0, 0, &[(0, 3)]),
            histogram(4_000, 7, &[(4_001, 1), (9_000, 2)]),
        ] {
            let writes = GroupWrites {
                read_histograms: vec![(g, h.clone())],
                ..GroupWrites::default()
            };
            commit(
                &store,
                CommitGroup {
                    groups: writes,
                    ..CommitGroup::default()
                },
            );
            assert_eq!(store.read_histogram(g).unwrap(), Some(h));
        }
        assert_eq!(store.read_histogram(group_id(4)).unwrap(), None);
    }
    let store = A::open(dir.path());
    assert_eq!(
        store.read_histogram(g).unwrap(),
        Some(histogram(4_000, 7, &[(4_001, 1), (9_000, 2)]))
    );
}

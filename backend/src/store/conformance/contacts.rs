//! Conformance: contacts (relations and summaries in commit groups, profiles, username prefixes).

use super::*;
use crate::store::{
    ContactSummary, ContactWrites, DmPolicy, ProfileRecord, RelationKey, RelationKind,
    RelationRecord, SummaryWrite,
};

fn rel(since_ms: u64, message: &str) -> RelationRecord {
    RelationRecord {
        since_ms,
        message: message.to_owned(),
    }
}

/// A summary put whole (as a restore does).
fn whole(user: UserId, new: ContactSummary) -> SummaryWrite {
    SummaryWrite {
        user,
        base: None,
        new,
    }
}

/// A summary changed from `base`, as the sequencer read it.
fn change(user: UserId, base: ContactSummary, new: ContactSummary) -> SummaryWrite {
    SummaryWrite {
        user,
        base: Some(base),
        new,
    }
}

fn contacts_group(
    relations: Vec<(RelationKey, Option<RelationRecord>)>,
    summaries: Vec<SummaryWrite>,
) -> CommitGroup {
    CommitGroup {
        contacts: ContactWrites {
            relations,
            summaries,
        },
        ..CommitGroup::default()
    }
}

fn key(owner: UserId, kind: RelationKind, other: UserId) -> RelationKey {
    RelationKey::new(owner, kind, other)
}

pub(crate) fn relations_are_put_removed_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let request = key(ALICE, RelationKind::RequestOut, BOB);
    let mirror = key(BOB, RelationKind::RequestIn, ALICE);
    commit(
        &store,
        contacts_group(
            vec![
                (request, Some(rel(5, "hi, it's Alice ✓"))),
                (mirror, Some(rel(5, "hi, it's Alice ✓"))),
            ],
            vec![],
        ),
    );
    assert_eq!(
        store.relation(request).unwrap(),
        Some(rel(5, "hi, it's Alice ✓"))
    );
    assert_eq!(
        store.relation(mirror).unwrap(),
        Some(rel(5, "hi, it's Alice ✓"))
    );
    assert_eq!(
        store
            .relation(key(ALICE, RelationKind::Friend, BOB))
            .unwrap(),
        None,
        "kinds are apart"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.relation(request).unwrap(),
        Some(rel(5, "hi, it's Alice ✓"))
    );
    // Accepted: the requests go and the friendship comes, in one group.
    commit(
        &store,
        contacts_group(
            vec![
                (request, None),
                (mirror, None),
                (key(ALICE, RelationKind::Friend, BOB), Some(rel(9, ""))),
                (key(BOB, RelationKind::Friend, ALICE), Some(rel(9, ""))),
            ],
            vec![],
        ),
    );
    assert_eq!(store.relation(request).unwrap(), None);
    assert_eq!(store.relation(mirror).unwrap(), None);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store
            .relation(key(BOB, RelationKind::Friend, ALICE))
            .unwrap(),
        Some(rel(9, ""))
    );
}

pub(crate) fn relations_at_answers_each_key_in_order_and_none_where_there_is_none<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let blocks = key(ALICE, RelationKind::Block, BOB);
    let friends = key(CAROL, RelationKind::Friend, DAVE);
    commit(
        &store,
        contacts_group(
            vec![(blocks, Some(rel(3, ""))), (friends, Some(rel(4, "")))],
            vec![],
        ),
    );
    assert_eq!(store.relations_at(&[]).unwrap(), Vec::new());
    let keys = [
        key(BOB, RelationKind::Block, ALICE),
        friends,
        blocks,
        key(ALICE, RelationKind::Friend, BOB),
        blocks,
    ];
    assert_eq!(
        store.relations_at(&keys).unwrap(),
        vec![
            None,
            Some(rel(4, "")),
            Some(rel(3, "")),
            None,
            Some(rel(3, ""))
        ],
        "in the order asked: only the owner's side, only its kind"
    );
    // More keys than one batch: split, and still in order.
    let many: Vec<RelationKey> = (0..POINT_READS_MAX + 7)
        .map(|i| match i % 4 {
            0 => blocks,
            1 => friends,
            2 => key(ALICE + i as u64, RelationKind::Block, BOB),
            _ => key(DAVE, RelationKind::Friend, CAROL),
        })
        .collect();
    let one_by_one: Vec<Option<RelationRecord>> =
        many.iter().map(|k| store.relation(*k).unwrap()).collect();
    assert_eq!(store.relations_at(&many).unwrap(), one_by_one);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.relations_at(&[friends, blocks]).unwrap(),
        vec![Some(rel(4, "")), Some(rel(3, ""))],
        "after reopen"
    );
}

pub(crate) fn relations_list_by_owner_and_kind_in_user_order_and_page<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let mut relations = Vec::new();
    for other in [DAVE, BOB, CAROL] {
        relations.push((
            key(ALICE, RelationKind::Friend, other),
            Some(rel(other, "")),
        ));
    }
    // Other owners and kinds around ALICE's friends must not leak into the list.
    relations.push((
        key(ALICE, RelationKind::Block, USER_ID_FIRST + 9),
        Some(rel(1, "")),
    ));
    relations.push((key(ALICE, RelationKind::RequestOut, BOB), Some(rel(1, "x"))));
    relations.push((key(BOB, RelationKind::Friend, ALICE), Some(rel(1, ""))));
    relations.push((key(ALICE - 1, RelationKind::Friend, BOB), Some(rel(1, ""))));
    commit(&store, contacts_group(relations, vec![]));
    let ids =
        |page: Vec<(UserId, RelationRecord)>| page.into_iter().map(|(u, _)| u).collect::<Vec<_>>();
    let all = store
        .relations(ALICE, RelationKind::Friend, 0, 100)
        .unwrap();
    assert_eq!(
        all.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        [BOB, CAROL, DAVE]
    );
    assert_eq!(all[0].1, rel(BOB, ""));
    assert_eq!(
        ids(store.relations(ALICE, RelationKind::Friend, 0, 2).unwrap()),
        [BOB, CAROL]
    );
    assert_eq!(
        ids(store
            .relations(ALICE, RelationKind::Friend, CAROL, 2)
            .unwrap()),
        [DAVE]
    );
    assert!(
        store
            .relations(ALICE, RelationKind::Friend, DAVE, 2)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .relations(ALICE, RelationKind::Friend, UserId::MAX, 2)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .relations(ALICE, RelationKind::Friend, 0, 0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.relations(ALICE, RelationKind::Block, 0, 10).unwrap()),
        [USER_ID_FIRST + 9]
    );
    assert!(
        store
            .relations(CAROL, RelationKind::Friend, 0, 10)
            .unwrap()
            .is_empty()
    );
}

pub(crate) fn contact_summaries_round_trip_and_a_later_group_wins<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.contact_summary(ALICE).unwrap(), None);
    let first = ContactSummary {
        friends: 3,
        requests_out: 2,
        requests_in: 1,
        blocks: 4,
        request_day: 20_000,
        requests_today: 7,
        dm_policy: Some(DmPolicy::FriendsOnly),
    };
    commit(&store, contacts_group(vec![], vec![whole(ALICE, first)]));
    assert_eq!(store.contact_summary(ALICE).unwrap(), Some(first));
    let second = ContactSummary {
        dm_policy: None,
        friends: 4,
        ..first
    };
    commit(
        &store,
        contacts_group(vec![], vec![change(ALICE, first, second)]),
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.contact_summary(ALICE).unwrap(), Some(second));
    assert_eq!(store.contact_summary(BOB).unwrap(), None);
}

/// Two writers (two cluster nodes) read one summary and change it, one after the other: both
/// changes count, whatever the order, and a field one of them did not change keeps the other's.
pub(crate) fn summary_changes_from_one_read_both_count<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let read = ContactSummary {
        friends: 3,
        requests_out: 0,
        requests_in: 2,
        blocks: 1,
        request_day: 20_000,
        requests_today: 4,
        dm_policy: None,
    };
    commit(&store, contacts_group(vec![], vec![whole(ALICE, read)]));
    // One accepts a request (a friend more, a request in less) and sends one today.
    let accepted = ContactSummary {
        friends: 4,
        requests_in: 1,
        requests_today: 5,
        ..read
    };
    // The other takes friends only, unblocks someone and sends two requests today.
    let private = ContactSummary {
        blocks: 0,
        requests_out: 2,
        requests_today: 6,
        dm_policy: Some(DmPolicy::FriendsOnly),
        ..read
    };
    commit(
        &store,
        contacts_group(vec![], vec![change(ALICE, read, private)]),
    );
    commit(
        &store,
        contacts_group(vec![], vec![change(ALICE, read, accepted)]),
    );
    let both = ContactSummary {
        friends: 4,
        requests_out: 2,
        requests_in: 1,
        blocks: 0,
        request_day: 20_000,
        requests_today: 7,
        dm_policy: Some(DmPolicy::FriendsOnly),
    };
    assert_eq!(store.contact_summary(ALICE).unwrap(), Some(both));
    // A change read on the next day starts that day's count; one read the day before then
    // counts for a day that is over.
    let next_day = ContactSummary {
        request_day: 20_001,
        requests_today: 1,
        ..both
    };
    commit(
        &store,
        contacts_group(vec![], vec![change(ALICE, both, next_day)]),
    );
    let late = ContactSummary {
        requests_today: 8,
        ..both
    };
    commit(
        &store,
        contacts_group(vec![], vec![change(ALICE, both, late)]),
    );
    assert_eq!(store.contact_summary(ALICE).unwrap(), Some(next_day));
    // Counts never go below zero; a change to a user with nothing stored starts from zero.
    let gone = ContactSummary { friends: 0, ..both };
    commit(
        &store,
        contacts_group(vec![], vec![change(BOB, both, gone)]),
    );
    assert_eq!(
        store.contact_summary(BOB).unwrap(),
        Some(ContactSummary {
            request_day: 20_000,
            ..ContactSummary::default()
        })
    );
}

pub(crate) fn contacts_and_messages_of_one_group_are_visible_together<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let conv = direct(ALICE, BOB);
    let mut group = msgs(conv, 1..=2);
    group
        .contacts
        .relations
        .push((key(BOB, RelationKind::Block, ALICE), Some(rel(3, ""))));
    group.contacts.summaries.push(change(
        BOB,
        ContactSummary::default(),
        ContactSummary {
            blocks: 1,
            ..ContactSummary::default()
        },
    ));
    commit(&store, group);
    assert_eq!(seqs(&all_after(&store, conv)), [1, 2]);
    assert!(
        store
            .relation(key(BOB, RelationKind::Block, ALICE))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.contact_summary(BOB).unwrap().map(|s| s.blocks),
        Some(1)
    );
}

pub(crate) fn profiles_are_replaced_whole_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.profile(ALICE).unwrap(), None);
    let p = ProfileRecord {
        nickname: "Älice 🌸".into(),
        avatar_url: "https://example.com/a.png".into(),
        bio: "line one\nline two".into(),
        searchable: Some(false),
        updated_ms: 42,
        hide_last_seen: true,
    };
    store.put_profile(ALICE, &p).unwrap();
    assert_eq!(store.profile(ALICE).unwrap(), Some(p.clone()));
    let q = ProfileRecord {
        bio: String::new(),
        searchable: None,
        ..p
    };
    store.put_profile(ALICE, &q).unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.profile(ALICE).unwrap(), Some(q));
    assert_eq!(store.profile(BOB).unwrap(), None);
}

/// Two writers read the same profile and each writes the whole row back with its own change
/// (two devices on two nodes): the second write was made from a row that is no longer stored,
/// so it is refused, and the writer's next try, from the row it reads again, lands.
pub(crate) fn a_profile_write_from_a_stale_read_is_refused<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let first = ProfileRecord {
        nickname: "alice".into(),
        updated_ms: 10,
        ..ProfileRecord::default()
    };
    // Only where there is none, for the first write.
    assert!(store.put_profile_if(ALICE, None, &first).unwrap());
    assert!(!store.put_profile_if(ALICE, None, &first).unwrap());
    let read = store.profile(ALICE).unwrap();
    assert_eq!(read.as_ref(), Some(&first));
    let hidden = ProfileRecord {
        searchable: Some(false),
        updated_ms: 20,
        ..first.clone()
    };
    assert!(store.put_profile_if(ALICE, read.as_ref(), &hidden).unwrap());
    // The other writer's change, made from the same read, would put `searchable` back.
    let stale = ProfileRecord {
        bio: "hello".into(),
        updated_ms: 21,
        ..first.clone()
    };
    assert!(!store.put_profile_if(ALICE, read.as_ref(), &stale).unwrap());
    assert_eq!(store.profile(ALICE).unwrap().as_ref(), Some(&hidden));
    // A row that differs in one field only is not the one read either.
    let other_time = ProfileRecord {
        updated_ms: 19,
        ..hidden.clone()
    };
    assert!(
        !store
            .put_profile_if(ALICE, Some(&other_time), &stale)
            .unwrap()
    );
    // Read again, the change applied onto what is stored: both changes hold.
    let fresh = store.profile(ALICE).unwrap();
    let both = ProfileRecord {
        bio: "hello".into(),
        updated_ms: 21,
        ..hidden.clone()
    };
    assert!(store.put_profile_if(ALICE, fresh.as_ref(), &both).unwrap());
    // Another user's row is their own.
    assert!(!store.put_profile_if(BOB, Some(&both), &first).unwrap());
    assert_eq!(store.profile(BOB).unwrap(), None);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.profile(ALICE).unwrap(), Some(both.clone()));
    assert!(!store.put_profile_if(ALICE, Some(&hidden), &first).unwrap());
    assert!(store.put_profile_if(ALICE, Some(&both), &first).unwrap());
    assert_eq!(store.profile(ALICE).unwrap(), Some(first));
}

pub(crate) fn usernames_are_listed_by_case_folded_prefix_and_paged<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let mut ids = std::collections::HashMap::new();
    for name in ["Anna", "annabel", "ANNE", "ann", "bob", "an", "zed"] {
        ids.insert(
            name.to_ascii_lowercase(),
            store.create_user(name, "h", "", 1).unwrap().user_id,
        );
    }
    let names = |v: Vec<(String, UserId)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    let all = store.usernames_with_prefix("ann", "", 10).unwrap();
    assert_eq!(names(all.clone()), ["ann", "anna", "annabel", "anne"]);
    assert!(all.iter().all(|(n, id)| ids[n] == *id));
    assert_eq!(
        names(store.usernames_with_prefix("ann", "", 2).unwrap()),
        ["ann", "anna"]
    );
    assert_eq!(
        names(store.usernames_with_prefix("ann", "anna", 2).unwrap()),
        ["annabel", "anne"]
    );
    assert!(
        store
            .usernames_with_prefix("ann", "anne", 2)
            .unwrap()
            .is_empty()
    );
    // A cursor before the prefix starts at the prefix; nothing after it leaks in.
    assert_eq!(
        names(store.usernames_with_prefix("b", "a", 10).unwrap()),
        ["bob"]
    );
    assert_eq!(
        names(store.usernames_with_prefix("z", "", 10).unwrap()),
        ["zed"]
    );
    assert!(store.usernames_with_prefix("q", "", 10).unwrap().is_empty());
    assert!(
        store
            .usernames_with_prefix("ann", "", 0)
            .unwrap()
            .is_empty()
    );
}

//! Conformance: what operators keep about accounts (flags, the users list, invites), the
//! group name index, and audit pruning.

use super::groups::{group_id, record};
use super::*;
use crate::store::{
    AccountAdminStore, AccountFlags, AuditRecord, AuditStore, GroupStore, GroupWrites,
    InviteRecord, InviteTake, group_name_key,
};

fn flags(by: &str) -> AccountFlags {
    AccountFlags {
        disabled_at_ms: 42,
        disabled_by: by.to_owned(),
        reason: "spam ✓".to_owned(),
    }
}

pub(crate) fn account_flags_are_set_cleared_and_survive_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store.create_user("alice", "h", "", 1).unwrap().user_id;
    let bob = store.create_user("bob", "h", "", 1).unwrap().user_id;
    assert_eq!(store.user_flags(alice).unwrap(), None, "enabled by default");
    assert!(
        store
            .set_user_flags(alice, Some(&flags("admin:root")))
            .unwrap()
    );
    assert!(
        !store
            .set_user_flags(USER_ID_LAST, Some(&flags("x")))
            .unwrap(),
        "no such user: nothing written"
    );
    assert_eq!(store.user_flags(USER_ID_LAST).unwrap(), None);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.user_flags(alice).unwrap(), Some(flags("admin:root")));
    assert_eq!(store.user_flags(bob).unwrap(), None, "only that user");
    assert!(store.set_user_flags(alice, None).unwrap());
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.user_flags(alice).unwrap(), None);
}

pub(crate) fn users_are_listed_in_id_order_and_paged<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert!(store.users_after(0, 10).unwrap().is_empty());
    let ids: Vec<UserId> = ["ann", "ben", "cat", "dan", "eve"]
        .iter()
        .map(|n| store.create_user(n, "h", "", 1).unwrap().user_id)
        .collect();
    let page = store.users_after(0, 2).unwrap();
    assert_eq!(page.iter().map(|u| u.user_id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(page[1].username, "ben");
    let page = store.users_after(ids[1], 10).unwrap();
    assert_eq!(page.iter().map(|u| u.user_id).collect::<Vec<_>>(), ids[2..]);
    assert!(store.users_after(ids[4], 10).unwrap().is_empty());
    assert!(store.users_after(u64::MAX, 10).unwrap().is_empty());
    assert!(store.users_after(0, 0).unwrap().is_empty());
}

fn invite(code: u8, uses_max: u32, expires_ms: u64) -> InviteRecord {
    InviteRecord {
        id: 0,
        code_hash: [code; 32],
        issuer: "admin:root".into(),
        created_ms: 1,
        expires_ms,
        uses_max,
        uses: 0,
        note: "for the team".into(),
    }
}

pub(crate) fn invites_are_taken_atomically_until_used_up_or_expired<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let one = store.put_invite(&invite(1, 1, 1_000), 10, 5).unwrap();
    let two = store.put_invite(&invite(2, 2, 1_000), 10, 5).unwrap();
    assert_eq!((one, two), (Some(1), Some(2)), "ids from 1, increasing");
    assert_eq!(store.take_invite(&[9; 32], 5).unwrap(), InviteTake::Refused);
    let InviteTake::Taken(taken) = store.take_invite(&[1; 32], 5).unwrap() else {
        panic!("a fresh single-use code is taken");
    };
    assert_eq!((taken.id, taken.uses), (1, 1));
    assert_eq!(
        store.take_invite(&[1; 32], 5).unwrap(),
        InviteTake::Refused,
        "used up"
    );
    store.return_invite(1).unwrap();
    assert!(matches!(
        store.take_invite(&[1; 32], 5).unwrap(),
        InviteTake::Taken(_)
    ));
    assert!(matches!(
        store.take_invite(&[2; 32], 999).unwrap(),
        InviteTake::Taken(_)
    ));
    assert_eq!(
        store.take_invite(&[2; 32], 1_000).unwrap(),
        InviteTake::Refused,
        "expired at expires_ms"
    );
    let store = reopen::<A>(store, dir.path());
    let listed = store.invites_before(u64::MAX, 10).unwrap();
    assert_eq!(
        listed.iter().map(|i| (i.id, i.uses)).collect::<Vec<_>>(),
        [(2, 1), (1, 1)],
        "newest first, uses kept across a restart"
    );
    assert_eq!(store.invites_before(2, 10).unwrap().len(), 1);
    assert!(store.remove_invite(2).unwrap());
    assert!(!store.remove_invite(2).unwrap());
    assert_eq!(store.take_invite(&[2; 32], 5).unwrap(), InviteTake::Refused);
    assert_eq!(store.invites_before(u64::MAX, 10).unwrap().len(), 1);
}

pub(crate) fn invites_are_bounded_and_unusable_ones_make_room<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.put_invite(&invite(1, 1, 100), 2, 5).unwrap(), Some(1));
    assert_eq!(store.put_invite(&invite(2, 1, 100), 2, 5).unwrap(), Some(2));
    assert_eq!(
        store.put_invite(&invite(3, 1, 100), 2, 5).unwrap(),
        None,
        "full of usable invites"
    );
    assert!(matches!(
        store.take_invite(&[1; 32], 5).unwrap(),
        InviteTake::Taken(_)
    ));
    assert_eq!(
        store.put_invite(&invite(3, 1, 100), 2, 5).unwrap(),
        Some(3),
        "the used-up one made room"
    );
    let ids: Vec<u64> = store
        .invites_before(u64::MAX, 10)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, [3, 2]);
    assert_eq!(store.take_invite(&[1; 32], 5).unwrap(), InviteTake::Refused);
}

pub(crate) fn invites_are_listed_by_issuer_newest_first_and_paged<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    // Three issuers interleaved, one a prefix of another: ids 1..=9 go a, b, c, a, b, c, …
    let (a, b, c) = ("user:7", "admin:root", "user:70");
    for code in 1..=9u8 {
        let issuer = [a, b, c][usize::from(code - 1) % 3];
        let put = InviteRecord {
            issuer: issuer.into(),
            ..invite(code, 1, 1_000)
        };
        assert_eq!(
            store.put_invite(&put, 100, 5).unwrap(),
            Some(u64::from(code))
        );
    }
    let ids = |store: &A::Store, issuer: &str, before: u64, limit: usize| {
        store
            .invites_of_issuer_before(issuer, before, limit)
            .unwrap()
            .iter()
            .map(|i| {
                assert_eq!(i.issuer, issuer, "only the issuer's");
                i.id
            })
            .collect::<Vec<u64>>()
    };
    assert_eq!(ids(&store, a, u64::MAX, 10), [7, 4, 1], "newest first");
    assert_eq!(ids(&store, b, u64::MAX, 10), [8, 5, 2]);
    assert_eq!(ids(&store, c, u64::MAX, 10), [9, 6, 3], "not user:7's");
    assert_eq!(ids(&store, a, u64::MAX, 2), [7, 4], "the limit");
    assert_eq!(ids(&store, a, 4, 2), [1], "below the page's last");
    assert_eq!(ids(&store, a, 7, 10), [4, 1], "before is exclusive");
    assert_eq!(ids(&store, a, 8, 10), [7, 4, 1]);
    assert!(ids(&store, a, 1, 10).is_empty());
    assert!(ids(&store, a, 0, 10).is_empty());
    assert!(ids(&store, a, u64::MAX, 0).is_empty());
    assert!(ids(&store, "user:", u64::MAX, 10).is_empty());
    assert!(ids(&store, "nobody", u64::MAX, 10).is_empty());
    // A use shows in the listing (the record is read, not a copy kept with the index).
    assert!(matches!(
        store.take_invite(&[7; 32], 5).unwrap(),
        InviteTake::Taken(_)
    ));
    let listed = store.invites_of_issuer_before(a, u64::MAX, 1).unwrap();
    assert_eq!((listed[0].id, listed[0].uses), (7, 1));
    assert_eq!(listed[0].code_hash, [7; 32]);
    // A revoked one is gone from its issuer's list, the others' stay.
    assert!(store.remove_invite(4).unwrap());
    assert_eq!(ids(&store, a, u64::MAX, 10), [7, 1]);
    assert_eq!(ids(&store, b, u64::MAX, 10), [8, 5, 2]);
    // So is one dropped to make room when full: 8 stored, 7 used up.
    let put = InviteRecord {
        issuer: b.into(),
        ..invite(10, 1, 1_000)
    };
    assert_eq!(store.put_invite(&put, 8, 5).unwrap(), Some(10));
    assert_eq!(ids(&store, a, u64::MAX, 10), [1]);
    assert_eq!(ids(&store, b, u64::MAX, 10), [10, 8, 5, 2]);
    let store = reopen::<A>(store, dir.path());
    assert_eq!(ids(&store, a, u64::MAX, 10), [1]);
    assert_eq!(ids(&store, b, u64::MAX, 10), [10, 8, 5, 2]);
    assert_eq!(ids(&store, b, 10, 2), [8, 5]);
    assert_eq!(ids(&store, c, u64::MAX, 10), [9, 6, 3]);
}

fn named(store: &impl Store, g: ConvId, name: &str, seq: u64) {
    commit(
        store,
        CommitGroup {
            messages: vec![MessageRecord {
                conv_id: g,
                to: 0,
                ..msg(direct(ALICE, BOB), seq)
            }],
            groups: GroupWrites {
                groups: vec![(g, record(name, 1))],
                ..GroupWrites::default()
            },
            ..CommitGroup::default()
        },
    );
}

pub(crate) fn groups_are_found_by_folded_name_prefix_and_paged<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (g1, g2, g3) = (group_id(1), group_id(2), group_id(3));
    named(&store, g1, "Team Rust", 1);
    named(&store, g2, "team ÄLPHA", 1);
    named(&store, g3, "Other", 1);
    let names = |prefix: &str, after: Option<(&str, ConvId)>, limit| {
        store
            .groups_by_name(&group_name_key(prefix), after, limit)
            .unwrap()
    };
    let page = names("TEAM", None, 1);
    assert_eq!(page, vec![("team rust".to_owned(), g1)]);
    let page = names("team", Some((&page[0].0, page[0].1)), 5);
    assert_eq!(page, vec![("team älpha".to_owned(), g2)], "after the first");
    assert!(names("team", Some(("team älpha", g2)), 5).is_empty());
    assert_eq!(names("", None, 10).len(), 3, "an empty prefix lists all");
    assert!(names("nobody", None, 10).is_empty());
    // A rename moves the entry; a record written again with its name keeps one entry.
    named(&store, g1, "Renamed", 2);
    named(&store, g2, "team ÄLPHA", 2);
    let store = reopen::<A>(store, dir.path());
    let names = |prefix: &str| {
        store
            .groups_by_name(&group_name_key(prefix), None, 10)
            .unwrap()
    };
    assert_eq!(names("team"), vec![("team älpha".to_owned(), g2)]);
    assert_eq!(names("ren"), vec![("renamed".to_owned(), g1)]);
    let all = store.groups_after(0, 10).unwrap();
    assert_eq!(
        all.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [g1, g2, g3]
    );
    assert_eq!(all[0].1.name, "Renamed");
    let rest = store.groups_after(g1.to_wire(), 1).unwrap();
    assert_eq!(rest.iter().map(|(g, _)| *g).collect::<Vec<_>>(), [g2]);
}

fn audit_at(at_ms: u64) -> AuditRecord {
    AuditRecord {
        at_ms,
        actor: "system".into(),
        action: "user.login".into(),
        target: String::new(),
        from: String::new(),
        detail: String::new(),
    }
}

pub(crate) fn audit_entries_are_pruned_oldest_first_in_bounded_steps<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let records: Vec<_> = (1..=5).map(|i| audit_at(i * 100)).collect();
    store.append_audit(1, &records).unwrap();
    assert_eq!(store.prune_audit(50, 10).unwrap(), 0, "nothing that old");
    assert_eq!(store.prune_audit(350, 2).unwrap(), 2, "at most the limit");
    assert_eq!(store.prune_audit(350, 10).unwrap(), 1);
    let store = reopen::<A>(store, dir.path());
    let left: Vec<u64> = store
        .audit_page(u64::MAX, 10)
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(left, [5, 4]);
    assert_eq!(
        store.prune_audit(u64::MAX, 10).unwrap(),
        1,
        "the newest entry stays, so ids are never reused"
    );
    assert_eq!(store.last_audit_id().unwrap(), 5);
}

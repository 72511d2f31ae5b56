//! Conformance: Accounts and tokens.

use super::*;

// ---- accounts ---------------------------------------------------------------------------------

pub(crate) fn user_ids_are_nine_digits_increasing_and_never_reused_after_reopen<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let mut ids = Vec::new();
    for name in ["u0", "u1", "u2"] {
        ids.push(store.create_user(name, "h", "", 1).unwrap().user_id);
    }
    assert_eq!(ids[0], USER_ID_FIRST, "the first id handed out");
    let store = reopen::<A>(store, dir.path());
    for name in ["u3", "u4"] {
        ids.push(store.create_user(name, "h", "", 2).unwrap().user_id);
    }
    let store = reopen::<A>(store, dir.path());
    ids.push(store.create_user("u5", "h", "", 3).unwrap().user_id);
    for id in &ids {
        assert!(
            (USER_ID_FIRST..=USER_ID_LAST).contains(id),
            "{id} is not 9 digits"
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase and are never reused across reopens: {ids:?}"
    );
}

pub(crate) fn usernames_are_unique_regardless_of_ascii_case<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store.create_user("Alice", "h", "", 1).unwrap();
    for taken in ["Alice", "alice", "ALICE", "aLiCe"] {
        assert!(
            matches!(
                store.create_user(taken, "h", "", 2),
                Err(StoreError::UsernameTaken)
            ),
            "{taken:?} is taken by \"Alice\""
        );
    }
    assert_eq!(store.user_id_by_name("aLICE").unwrap(), Some(alice.user_id));
    // Case folding is ASCII only: these are two different names.
    let lower = store.create_user("émile", "h", "", 3).unwrap();
    let upper = store.create_user("ÉMILE", "h", "", 4).unwrap();
    assert_ne!(lower.user_id, upper.user_id);
    assert!(matches!(
        store.create_user("éMILE", "h", "", 5),
        Err(StoreError::UsernameTaken)
    ));

    let store = reopen::<A>(store, dir.path());
    assert!(
        matches!(
            store.create_user("ALICE", "h", "", 6),
            Err(StoreError::UsernameTaken)
        ),
        "still taken after a reopen"
    );
    assert_eq!(store.user_id_by_name("alice").unwrap(), Some(alice.user_id));
    assert_eq!(store.user_id_by_name("ÉMILE").unwrap(), Some(upper.user_id));
    assert_eq!(store.user_id_by_name("émile").unwrap(), Some(lower.user_id));
    assert_eq!(
        store.user_by_id(alice.user_id).unwrap().unwrap().username,
        "Alice",
        "the name is kept as given"
    );
}

pub(crate) fn users_are_found_by_id_and_by_name<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.user_by_id(USER_ID_FIRST).unwrap(), None);
    assert_eq!(store.user_id_by_name("alice").unwrap(), None);
    let alice = store
        .create_user(
            "alice",
            "$argon2id$v=19$x",
            "a@example.com",
            1_700_000_000_000,
        )
        .unwrap();
    let bob = store.create_user("bob", "h2", "", 5).unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.password_hash, "$argon2id$v=19$x");
    assert_eq!(alice.email, "a@example.com");
    assert_eq!(alice.created_at_ms, 1_700_000_000_000);
    let check = |store: &A::Store, when: &str| {
        assert_eq!(
            store.user_by_id(alice.user_id).unwrap().as_ref(),
            Some(&alice),
            "{when}"
        );
        assert_eq!(
            store.user_by_id(bob.user_id).unwrap().as_ref(),
            Some(&bob),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_name("alice").unwrap(),
            Some(alice.user_id),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_name("bob").unwrap(),
            Some(bob.user_id),
            "{when}"
        );
        assert_eq!(store.user_id_by_name("carol").unwrap(), None, "{when}");
        assert_eq!(
            store.user_id_by_name("alic").unwrap(),
            None,
            "{when}: no prefix match"
        );
        assert_eq!(store.user_by_id(bob.user_id + 1).unwrap(), None, "{when}");
        assert_eq!(store.user_by_id(USER_ID_LAST).unwrap(), None, "{when}");
    };
    check(&store, "after create");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

pub(crate) fn tokens_are_put_read_replaced_and_removed<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let (h1, h2, h3): (TokenHash, TokenHash, TokenHash) = ([1; 32], [2; 32], [0; 32]);
    assert_eq!(store.token(&h1).unwrap(), None);
    store.put_token(&h1, &token(ALICE, "phone")).unwrap();
    store.put_token(&h2, &token(BOB, "laptop")).unwrap();
    store.put_token(&h3, &token(CAROL, "")).unwrap();
    assert_eq!(store.token(&h1).unwrap(), Some(token(ALICE, "phone")));
    assert_eq!(store.token(&h2).unwrap(), Some(token(BOB, "laptop")));
    assert_eq!(store.token(&h3).unwrap(), Some(token(CAROL, "")));

    let replaced = TokenRecord {
        expires_at_ms: 99,
        ..token(ALICE, "tablet")
    };
    store.put_token(&h1, &replaced).unwrap();
    assert_eq!(
        store.token(&h1).unwrap(),
        Some(replaced.clone()),
        "put replaces"
    );

    store.remove_token(&h2).unwrap();
    assert_eq!(store.token(&h2).unwrap(), None);
    store
        .remove_token(&[9; 32])
        .expect("removing an absent token is not an error");

    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.token(&h1).unwrap(), Some(replaced));
    assert_eq!(store.token(&h2).unwrap(), None, "a removal survives reopen");
    assert_eq!(store.token(&h3).unwrap(), Some(token(CAROL, "")));
    store.remove_token(&h1).unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.token(&h1).unwrap(), None);
}

pub(crate) fn unicode_usernames_and_emails_round_trip<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let names = [
        ("Zoë", "zoë@exämple.org"),
        ("李小龙", "李@例え.jp"),
        ("🦀crab🦀", "🦀@🦀.rs"),
        ("Ωmega\u{301}", "ω@x"),
    ];
    let created: Vec<_> = names
        .iter()
        .map(|(name, email)| store.create_user(name, "h", email, 1).unwrap())
        .collect();
    let store = reopen::<A>(store, dir.path());
    for ((name, email), user) in names.iter().zip(&created) {
        assert_eq!(user.username, *name);
        assert_eq!(user.email, *email);
        assert_eq!(store.user_id_by_name(name).unwrap(), Some(user.user_id));
        assert_eq!(store.user_by_id(user.user_id).unwrap().as_ref(), Some(user));
    }
}

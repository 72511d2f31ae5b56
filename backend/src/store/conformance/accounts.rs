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

// ---- e-mail index, a user's tokens, password changes ------------------------------------------

pub(crate) fn emails_are_found_case_folded_and_unique<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store
        .create_user("alice", "h", "Alice@Example.COM", 1)
        .unwrap();
    store.create_user("nomail", "h", "", 1).unwrap();
    let zoe = store.create_user("zoe", "h", "ZOË@exämple.org", 1).unwrap();
    for taken in [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        " alice@example.com ",
    ] {
        assert!(
            matches!(
                store.create_user("other", "h", taken, 2),
                Err(StoreError::EmailTaken)
            ),
            "{taken:?} is alice's"
        );
    }
    assert_eq!(
        store.user_id_by_name("other").unwrap(),
        None,
        "a refused user leaves nothing behind"
    );
    let check = |store: &A::Store, when: &str| {
        assert_eq!(
            store.user_id_by_email("alice@example.com").unwrap(),
            Some(alice.user_id),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_email("aLiCe@eXample.com").unwrap(),
            Some(alice.user_id),
            "{when}"
        );
        assert_eq!(
            store.user_id_by_email("zoë@EXÄMPLE.org").unwrap(),
            Some(zoe.user_id),
            "{when}: Unicode case folding"
        );
        assert_eq!(store.user_id_by_email("").unwrap(), None, "{when}");
        assert_eq!(
            store.user_id_by_email("alice@example.co").unwrap(),
            None,
            "{when}: no prefix match"
        );
        assert_eq!(
            store.user_by_id(alice.user_id).unwrap().unwrap().email,
            "Alice@Example.COM",
            "{when}: the address is kept as given"
        );
    };
    check(&store, "after create");
    let store = reopen::<A>(store, dir.path());
    check(&store, "after reopen");
}

fn device_token(user_id: UserId, device: &str, issued_at_ms: u64) -> TokenRecord {
    TokenRecord {
        issued_at_ms,
        last_seen_ms: issued_at_ms,
        expires_at_ms: issued_at_ms + 1000,
        ..token(user_id, device)
    }
}

fn hashes(tokens: &[(TokenHash, TokenRecord)]) -> Vec<TokenHash> {
    let mut h: Vec<TokenHash> = tokens.iter().map(|(h, _)| *h).collect();
    h.sort();
    h
}

pub(crate) fn a_users_tokens_are_listed_and_replaced_atomically<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert!(store.tokens_of_user(ALICE, 100).unwrap().is_empty());
    for (i, device) in ["phone", "laptop", "tablet"].iter().enumerate() {
        store
            .put_token(&[i as u8 + 1; 32], &device_token(ALICE, device, i as u64))
            .unwrap();
    }
    store
        .put_token(&[9; 32], &device_token(BOB, "phone", 5))
        .unwrap();
    let alices = store.tokens_of_user(ALICE, 100).unwrap();
    assert_eq!(hashes(&alices), vec![[1; 32], [2; 32], [3; 32]]);
    assert_eq!(
        alices[0].1,
        device_token(ALICE, "phone", 0),
        "records whole"
    );
    assert_eq!(store.tokens_of_user(ALICE, 2).unwrap().len(), 2, "limited");
    assert_eq!(
        hashes(&store.tokens_of_user(BOB, 100).unwrap()),
        vec![[9; 32]]
    );

    // Revoke two (one of them bob's: left alone) and put one, in one write.
    let new = device_token(ALICE, "phone", 50);
    assert!(
        store
            .replace_tokens(
                ALICE,
                &[[1; 32], [9; 32], [7; 32]],
                Some((&[4; 32], &new)),
                None
            )
            .unwrap()
    );
    assert_eq!(store.token(&[1; 32]).unwrap(), None);
    assert_eq!(store.token(&[4; 32]).unwrap(), Some(new));
    assert!(
        store.token(&[9; 32]).unwrap().is_some(),
        "not alice's token"
    );
    assert!(store.replace_tokens(ALICE, &[[2; 32]], None, None).unwrap());
    // A refresh (`held`) is written only while the token it is made from is alice's.
    let refreshed = device_token(ALICE, "phone", 60);
    assert!(
        !store
            .replace_tokens(ALICE, &[], Some((&[5; 32], &refreshed)), Some(&[1; 32]))
            .unwrap(),
        "made from a revoked token"
    );
    assert!(
        !store
            .replace_tokens(
                ALICE,
                &[[3; 32]],
                Some((&[5; 32], &refreshed)),
                Some(&[9; 32])
            )
            .unwrap(),
        "made from bob's token"
    );
    assert_eq!(store.token(&[5; 32]).unwrap(), None, "nothing written");
    assert!(store.token(&[3; 32]).unwrap().is_some(), "nothing revoked");
    store.remove_token(&[3; 32]).unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        hashes(&store.tokens_of_user(ALICE, 100).unwrap()),
        vec![[4; 32]],
        "removals and the put survive a reopen, index included"
    );
    assert_eq!(
        hashes(&store.tokens_of_user(BOB, 100).unwrap()),
        vec![[9; 32]]
    );
}

pub(crate) fn set_password_revokes_every_token_of_the_user_only<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store.create_user("alice", "old-hash", "", 1).unwrap();
    let bob = store.create_user("bob", "bob-hash", "", 1).unwrap();
    for i in 1..=3u8 {
        store
            .put_token(&[i; 32], &device_token(alice.user_id, &format!("d{i}"), 1))
            .unwrap();
    }
    store
        .put_token(&[8; 32], &device_token(bob.user_id, "d", 1))
        .unwrap();
    let kept = device_token(alice.user_id, "d1", 9);
    // Over a hash that is not the current one: nothing written.
    let other = device_token(alice.user_id, "d2", 9);
    assert_eq!(
        store
            .set_password(
                alice.user_id,
                "lost-hash",
                Some((&[6; 32], &other)),
                Some("not-the-hash")
            )
            .unwrap(),
        None
    );
    assert_eq!(store.token(&[6; 32]).unwrap(), None);
    assert_eq!(store.tokens_of_user(alice.user_id, 100).unwrap().len(), 3);
    let revoked = store
        .set_password(
            alice.user_id,
            "new-hash",
            Some((&[5; 32], &kept)),
            Some("old-hash"),
        )
        .unwrap();
    assert_eq!(revoked, Some(3));
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store
            .user_by_id(alice.user_id)
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
    assert_eq!(
        store.tokens_of_user(alice.user_id, 100).unwrap(),
        vec![([5; 32], kept)],
        "only the new token"
    );
    for i in 1..=3u8 {
        assert_eq!(store.token(&[i; 32]).unwrap(), None);
    }
    assert!(store.token(&[8; 32]).unwrap().is_some(), "bob keeps his");
    assert_eq!(
        store
            .user_by_id(bob.user_id)
            .unwrap()
            .unwrap()
            .password_hash,
        "bob-hash"
    );
    assert_eq!(
        store.set_password(USER_ID_LAST, "x", None, None).unwrap(),
        None,
        "no such user: nothing written"
    );
}

pub(crate) fn a_rehash_lands_only_over_the_hash_it_verified_and_keeps_the_tokens<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    let alice = store.create_user("alice", "cheap-hash", "", 1).unwrap();
    let bob = store.create_user("bob", "cheap-hash", "", 1).unwrap();
    let token = device_token(alice.user_id, "d1", 1);
    store.put_token(&[1; 32], &token).unwrap();
    let hash_of =
        |store: &A::Store, user: UserId| store.user_by_id(user).unwrap().unwrap().password_hash;

    // A login verified "cheap-hash"; a password change landed before its rehash: the change
    // stays.
    assert_eq!(
        store
            .set_password(bob.user_id, "changed-hash", None, Some("cheap-hash"))
            .unwrap(),
        Some(0)
    );
    assert!(
        !store
            .rehash_password(bob.user_id, "cheap-hash", "dearer-hash")
            .unwrap(),
        "a rehash over a hash changed since writes nothing"
    );
    assert_eq!(hash_of(&store, bob.user_id), "changed-hash");

    assert!(
        store
            .rehash_password(alice.user_id, "cheap-hash", "dearer-hash")
            .unwrap()
    );
    assert!(
        !store
            .rehash_password(alice.user_id, "cheap-hash", "other-hash")
            .unwrap(),
        "of two rehashes over the same hash, one lands"
    );
    assert!(
        !store
            .rehash_password(USER_ID_LAST, "cheap-hash", "x")
            .unwrap(),
        "no such user: nothing written"
    );
    let store = reopen::<A>(store, dir.path());
    assert_eq!(hash_of(&store, alice.user_id), "dearer-hash");
    assert_eq!(hash_of(&store, bob.user_id), "changed-hash");
    assert_eq!(
        store.tokens_of_user(alice.user_id, 100).unwrap(),
        vec![([1; 32], token)],
        "a rehash signs no device out"
    );
}

pub(crate) fn touch_tokens_moves_last_seen_forward_and_never_recreates<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    store
        .put_token(&[1; 32], &device_token(ALICE, "a", 100))
        .unwrap();
    store
        .put_token(&[2; 32], &device_token(ALICE, "b", 100))
        .unwrap();
    store
        .touch_tokens(&[([1; 32], 500), ([2; 32], 50), ([3; 32], 900)])
        .unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.token(&[1; 32]).unwrap().unwrap().last_seen_ms, 500);
    assert_eq!(
        store.token(&[2; 32]).unwrap().unwrap().last_seen_ms,
        100,
        "never back"
    );
    assert_eq!(
        store.token(&[3; 32]).unwrap(),
        None,
        "an absent token stays absent"
    );
    store.touch_tokens(&[]).unwrap();
}

//! Conformance: what notifications and offline push need of a store: every user walked a page
//! at a time, and devices' push tokens.

use super::*;
use crate::store::{PushTokenRecord, PushTokenStore};

pub(crate) fn user_ids_are_walked_in_pages_and_counted<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.user_count().unwrap(), 0);
    assert!(store.user_ids_after(0, 10).unwrap().is_empty());
    let ids: Vec<UserId> = (0..7)
        .map(|i| {
            store
                .create_user(&format!("w{i}"), "h", "", 1)
                .unwrap()
                .user_id
        })
        .collect();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(store.user_count().unwrap(), 7);
    let mut walked: Vec<UserId> = Vec::new();
    let mut after = 0;
    loop {
        let page = store.user_ids_after(after, 3).unwrap();
        assert!(page.len() <= 3, "a page holds at most the limit");
        let Some(&last) = page.last() else { break };
        walked.extend(&page);
        after = last;
    }
    assert_eq!(walked, ids, "every user once, ascending");
    assert_eq!(store.user_ids_after(ids[5], 10).unwrap(), vec![ids[6]]);
    assert!(store.user_ids_after(ids[6], 10).unwrap().is_empty());
    assert!(store.user_ids_after(u64::MAX, 10).unwrap().is_empty());
    assert!(store.user_ids_after(0, 0).unwrap().is_empty());
}

fn token(provider: i32, token: &str) -> PushTokenRecord {
    PushTokenRecord {
        provider,
        token: token.into(),
        updated_ms: 5,
    }
}

pub(crate) fn push_tokens_are_put_per_device_replaced_listed_and_removed<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert!(store.push_tokens(ALICE, 10).unwrap().is_empty());
    store
        .put_push_token(ALICE, "phone", &token(1, "a1"))
        .unwrap();
    store
        .put_push_token(ALICE, "tablet", &token(2, "a2"))
        .unwrap();
    store
        .put_push_token(ALICE, "phone", &token(1, "a3"))
        .unwrap();
    store.put_push_token(BOB, "", &token(2, "b")).unwrap();
    store.put_push_token(BOB, "ünï", &token(3, "b2")).unwrap();
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.push_tokens(ALICE, 10).unwrap(),
        vec![
            ("phone".to_owned(), token(1, "a3")),
            ("tablet".to_owned(), token(2, "a2"))
        ],
        "one per device, the latest wins, in device order"
    );
    assert_eq!(store.push_tokens(ALICE, 1).unwrap().len(), 1);
    assert_eq!(
        store.push_tokens(BOB, 10).unwrap().len(),
        2,
        "another user's apart"
    );
    assert!(
        !store
            .remove_push_token_if(ALICE, "phone", &token(1, "a1"))
            .unwrap(),
        "compare and delete: the device registered another token since"
    );
    assert!(
        !store.remove_push_token_if(BOB, "", &token(3, "b")).unwrap(),
        "the same token from another provider is not the one stored"
    );
    assert!(store.remove_push_token_if(BOB, "", &token(2, "b")).unwrap());
    assert!(
        !store.remove_push_token_if(BOB, "", &token(2, "b")).unwrap(),
        "gone already"
    );
    assert!(store.remove_push_token(ALICE, "phone").unwrap());
    assert!(
        !store.remove_push_token(ALICE, "phone").unwrap(),
        "gone already"
    );
    assert!(!store.remove_push_token(CAROL, "x").unwrap());
    let store = reopen::<A>(store, dir.path());
    assert_eq!(
        store.push_tokens(ALICE, 10).unwrap(),
        vec![("tablet".to_owned(), token(2, "a2"))]
    );
    assert_eq!(
        store.push_tokens(BOB, 10).unwrap(),
        vec![("ünï".to_owned(), token(3, "b2"))]
    );
    assert!(store.push_tokens(DAVE, 10).unwrap().is_empty());
}

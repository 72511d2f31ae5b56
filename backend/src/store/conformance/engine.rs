//! Conformance: The data dir and concurrent use.

use super::*;

// ---- the data dir -----------------------------------------------------------------------------

pub(crate) fn a_data_dir_is_used_by_one_store_at_a_time<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let first = A::open(dir.path());
    if !A::EXCLUSIVE {
        // A shared store: every node opens it, and sees what the others wrote.
        let second = A::try_open(dir.path()).expect("a shared store opens twice");
        first.create_user("alice", "h", "", 1).unwrap();
        assert!(second.user_id_by_name("alice").unwrap().is_some());
        return;
    }
    match A::try_open(dir.path()) {
        Err(StoreError::DirInUse(path)) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected DirInUse, got {other}"),
        Ok(_) => panic!("a second store opened the same data dir"),
    }
    first.create_user("alice", "h", "", 1).unwrap();
    drop(first);
    let second = A::try_open(dir.path()).expect("free again once closed");
    assert!(second.user_id_by_name("alice").unwrap().is_some());
}

// ---- concurrency ------------------------------------------------------------------------------

pub(crate) fn a_write_is_visible_to_its_writer_at_once_whatever_others_do<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(A::open(dir.path()));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    if t % 2 == 0 {
                        let name = format!("u{t}x{i}");
                        let user = store.create_user(&name, "h", "", 1).unwrap();
                        assert_eq!(store.user_id_by_name(&name).unwrap(), Some(user.user_id));
                        assert_eq!(store.user_by_id(user.user_id).unwrap(), Some(user));
                    } else {
                        let mut hash = [t; 32];
                        hash[..4].copy_from_slice(&i.to_be_bytes());
                        store.put_token(&hash, &token(ALICE, "d")).unwrap();
                        assert_eq!(store.token(&hash).unwrap(), Some(token(ALICE, "d")));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

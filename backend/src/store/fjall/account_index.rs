//! Builds the account indexes (`emails`, `user_tokens`) once, at open, for a store written
//! before they existed. Idempotent: it writes the same keys whenever it runs, makes them
//! durable, and only then records that the indexes are complete; a crash in between leaves a
//! store that the next open indexes again.
//!
//! E-mail addresses were not unique before: where several users share one (case-folded), the
//! lowest user id keeps it in the index and the others are logged; they still log in by id or
//! name.

use super::accounts::{decode_token, user_token_key};
use super::rebuild::RebuildBatch;
use super::{FjallStore, be_u64, decode};
use crate::store::{StoreError, UserRecord, email_key, keeps_email, log_email_not_indexed};

const META_ACCOUNT_INDEX: &[u8] = b"account_index";
const ACCOUNT_INDEX_CURRENT: u64 = 1;

#[expect(
    clippy::disallowed_methods,
    reason = "runs inside FjallStore::open_with, before any writer or the journal prefill"
)]
pub(super) fn build(store: &FjallStore) -> Result<(), StoreError> {
    if let Some(v) = store.meta.get(META_ACCOUNT_INDEX)?
        && be_u64(&v)? >= ACCOUNT_INDEX_CURRENT
    {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let _writing = store.write_lock();
    let mut batch = RebuildBatch::new(store);

    let (mut emails, mut duplicates) = (0usize, 0usize);
    // Users iterate in id order, so the lowest id of a shared address comes first.
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for guard in store.users.iter() {
        let (_, value) = guard.into_inner()?;
        let user: UserRecord = decode(&value)?;
        let key = email_key(&user.email);
        if key.is_empty() {
            continue;
        }
        let owner = match seen.get(&key) {
            Some(owner) => Some(*owner),
            None => store.emails.get(&key)?.map(|v| be_u64(&v)).transpose()?,
        };
        if owner == Some(user.user_id) {
            continue;
        }
        if !keeps_email(user.user_id, owner) {
            duplicates += 1;
            log_email_not_indexed(user.user_id, owner);
            continue;
        }
        batch.insert(&store.emails, key.as_bytes(), user.user_id.to_be_bytes())?;
        seen.insert(key, user.user_id);
        emails += 1;
    }

    let mut tokens = 0usize;
    for guard in store.tokens.iter() {
        let (key, value) = guard.into_inner()?;
        let Ok(hash) = <[u8; 32]>::try_from(key.as_ref()) else {
            return Err(StoreError::Corrupt("token key is not 32 bytes".into()));
        };
        let token = decode_token(&value)?;
        batch.insert(&store.user_tokens, user_token_key(token.user_id, &hash), [])?;
        tokens += 1;
    }
    // Every index key is durable before the mark is written.
    batch.finish()?;
    store
        .meta
        .insert(META_ACCOUNT_INDEX, ACCOUNT_INDEX_CURRENT.to_be_bytes())?;
    // Synced whatever the durability, as the batches before it: a mark that could reach the
    // disk ahead of them, or stay behind them in the page cache, is `rebuild.rs`'s case.
    store.sync_now()?;
    tracing::info!(
        emails,
        duplicates,
        tokens,
        ms = started.elapsed().as_millis() as u64,
        "account indexes built"
    );
    Ok(())
}

#[cfg(test)]
impl FjallStore {
    /// Writes `user` as a build before the e-mail index did (no `emails` entry, addresses not
    /// unique), durably: the old stores that index builds and migrations meet.
    pub(crate) fn put_old_user(&self, user: &UserRecord) {
        let _writing = self.write_lock();
        let id = user.user_id.to_be_bytes();
        self.insert(&self.users, id, super::encode(user)).unwrap();
        self.insert(
            &self.usernames,
            crate::store::username_key(&user.username),
            id,
        )
        .unwrap();
        self.persist().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::{AccountStore, TokenRecord, USER_ID_FIRST};

    /// A token as the store wrote it before `platform` and `last_seen_ms`.
    #[derive(serde::Serialize)]
    struct TokenV1<'a> {
        user_id: u64,
        device_id: &'a str,
        issued_at_ms: u64,
        expires_at_ms: u64,
    }

    fn old_user(store: &FjallStore, user_id: u64, name: &str, email: &str) {
        store.put_old_user(&UserRecord {
            user_id,
            username: name.into(),
            password_hash: "h".into(),
            email: email.into(),
            created_at_ms: 1,
        });
    }

    #[test]
    fn a_store_from_before_the_account_indexes_opens_with_them_built() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (USER_ID_FIRST, USER_ID_FIRST + 1, USER_ID_FIRST + 2);
        {
            // What an older ringchat left: users and tokens, no `emails` or `user_tokens`
            // entries, no index mark, and e-mail addresses that were never unique.
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            old_user(&store, a, "alice", "Shared@Example.com");
            old_user(&store, b, "bob", "shared@example.COM");
            old_user(&store, c, "carol", "carol@example.com");
            let v1 = TokenV1 {
                user_id: b,
                device_id: "phone",
                issued_at_ms: 7,
                expires_at_ms: u64::MAX,
            };
            let _writing = store.write_lock();
            store
                .insert(&store.tokens, [5u8; 32], postcard::to_stdvec(&v1).unwrap())
                .unwrap();
            store.remove(&store.meta, META_ACCOUNT_INDEX).unwrap();
            store.persist().unwrap();
        }
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(
            store.user_id_by_email("shared@example.com").unwrap(),
            Some(a),
            "a shared address stays with the oldest account"
        );
        assert_eq!(
            store.user_id_by_email("CAROL@example.com").unwrap(),
            Some(c)
        );
        let old = TokenRecord {
            user_id: b,
            device_id: "phone".into(),
            issued_at_ms: 7,
            expires_at_ms: u64::MAX,
            platform: 0,
            last_seen_ms: 7,
        };
        assert_eq!(store.token(&[5; 32]).unwrap(), Some(old.clone()));
        assert_eq!(store.tokens_of_user(b, 10).unwrap(), vec![([5; 32], old)]);
        assert!(
            matches!(
                store.create_user("dave", "h", "SHARED@example.com", 2),
                Err(StoreError::EmailTaken)
            ),
            "new accounts cannot take an indexed address"
        );
        // The old token is revocable like any other.
        assert_eq!(store.set_password(b, "h2", None, None).unwrap(), Some(1));
        assert_eq!(store.token(&[5; 32]).unwrap(), None);
        drop(store);
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(store.tokens_of_user(b, 10).unwrap(), vec![]);
        assert_eq!(
            store.user_id_by_email("shared@example.com").unwrap(),
            Some(a)
        );
    }

    /// A copy's import batches are synced one by one too, whatever the durability.
    #[test]
    fn each_import_batch_is_synced_before_the_next() {
        use crate::store::dump::{DumpItem, DumpStore};
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), Durability::None).unwrap();
        let synced = || {
            store
                .durable_syncs
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = synced();
        for i in 0..2u64 {
            let user = UserRecord {
                user_id: USER_ID_FIRST + i,
                username: format!("u{i}"),
                password_hash: "h".into(),
                email: format!("u{i}@example.com"),
                created_at_ms: 1,
            };
            store.import(&[DumpItem::User(user)]).unwrap();
            assert_eq!(synced(), before + i as usize + 1, "batch {i} synced");
        }
    }

    /// Each batch of the index build is synced before the next is written, and the mark after
    /// them, whatever the durability: with `durability = "none"` (whose own writes are not
    /// synced here), opening a store of two full batches and one key more makes four syncs. Counted by the store: the
    /// fdatasync itself reaching the disk is beyond what a test here can observe.
    #[test]
    fn each_batch_of_the_index_build_is_synced_before_the_next() {
        use super::super::rebuild::REBUILD_BATCH_KEYS_MAX;
        let dir = tempfile::tempdir().unwrap();
        let users = 2 * REBUILD_BATCH_KEYS_MAX as u64 + 1;
        {
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            for i in 0..users {
                let id = USER_ID_FIRST + i;
                old_user(&store, id, &format!("u{i}"), &format!("u{i}@example.com"));
            }
            let _writing = store.write_lock();
            store.remove(&store.meta, META_ACCOUNT_INDEX).unwrap();
            store.persist().unwrap();
        }
        let store = FjallStore::open(dir.path(), Durability::None).unwrap();
        assert_eq!(
            store
                .durable_syncs
                .load(std::sync::atomic::Ordering::Relaxed),
            4,
            "three batches and the mark"
        );
        let last = users - 1;
        assert_eq!(
            store
                .user_id_by_email(&format!("u{last}@example.com"))
                .unwrap(),
            Some(USER_ID_FIRST + last)
        );
    }
}

//! The invites by issuer: `invite_issuers` (issuer's length as a big-endian u32, the issuer,
//! invite id big-endian) → nothing, so that one issuer's invites are one range read, newest
//! first (a user's ListInvites and their day's count of CreateInvite cost their own invites,
//! not every stored one). Written in the same batch as every put and removal of an invite
//! (`account_admin.rs`, an import in `dump.rs`); a use changes no issuer, so no entry. Built
//! once at open for a store written before it existed (idempotent, like `account_index.rs`).

use super::rebuild::DerivedIndex;
use super::{FjallStore, be_u64, decode};
use crate::store::{InviteRecord, StoreError};

const META_INVITE_ISSUERS: &[u8] = b"invite_issuers_index";
const INVITE_ISSUERS_CURRENT: u64 = 1;

/// The start of every entry of `issuer`. Length first, so that no issuer's entries run into
/// another's whatever bytes the issuer holds.
pub(super) fn issuer_prefix(issuer: &str) -> Vec<u8> {
    let len = u32::try_from(issuer.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + issuer.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(issuer.as_bytes());
    key
}

/// Key of an invite's entry: [`issuer_prefix`], then its id.
pub(super) fn issuer_key(issuer: &str, id: u64) -> Vec<u8> {
    let mut key = issuer_prefix(issuer);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The invite id at the end of an entry's key.
pub(super) fn id_of_key(key: &[u8]) -> Result<u64, StoreError> {
    let at = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| StoreError::Corrupt("invite_issuers key".into()))?;
    be_u64(&key[at..])
}

pub(super) fn build(store: &FjallStore) -> Result<(), StoreError> {
    let index = DerivedIndex {
        mark: META_INVITE_ISSUERS,
        version: INVITE_ISSUERS_CURRENT,
        source: &store.invites,
        index: &store.invite_issuers,
        what: "invites",
    };
    index.build(store, |_, value| {
        let invite: InviteRecord = decode(value)?;
        Ok(issuer_key(&invite.issuer, invite.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use fjall::Readable;

    use crate::store::AccountAdminStore;

    fn invite(code: u8, issuer: &str) -> InviteRecord {
        InviteRecord {
            id: 0,
            code_hash: [code; 32],
            issuer: issuer.into(),
            created_ms: 1,
            expires_ms: 1_000,
            uses_max: 1,
            uses: 0,
            note: String::new(),
        }
    }

    #[test]
    fn invites_stored_before_the_issuer_index_are_listed_by_issuer_after_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What an older ringchat left: invites and their codes, no `invite_issuers`
            // entries and no index mark.
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            for (code, issuer) in [(1, "user:7"), (2, "admin:root"), (3, "user:7")] {
                store.put_invite(&invite(code, issuer), 100, 5).unwrap();
            }
            let _writing = store.write_lock();
            let keys: Vec<_> = store
                .view()
                .iter(&store.invite_issuers)
                .map(|g| g.key().unwrap())
                .collect();
            assert_eq!(keys.len(), 3);
            for key in keys {
                store.remove(&store.invite_issuers, key).unwrap();
            }
            store.remove(&store.meta, META_INVITE_ISSUERS).unwrap();
            store.persist().unwrap();
            assert!(
                store
                    .invites_of_issuer_before("user:7", u64::MAX, 10)
                    .unwrap()
                    .is_empty(),
                "the old store's invites are not indexed"
            );
        }
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        let ids = |issuer: &str| {
            store
                .invites_of_issuer_before(issuer, u64::MAX, 10)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("user:7"), [3, 1]);
        assert_eq!(ids("admin:root"), [2]);
        // Kept from here on like any other entry, and built once.
        assert!(store.remove_invite(3).unwrap());
        drop(store);
        let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
        let ids = store
            .invites_of_issuer_before("user:7", u64::MAX, 10)
            .unwrap();
        assert_eq!(ids.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    }

    /// The index built at open is synced, its mark too, whatever the durability: with
    /// `durability = "none"`, one batch and the mark make two syncs.
    #[test]
    fn the_index_built_at_open_and_its_mark_are_synced_whatever_the_durability() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path(), Durability::Fsync).unwrap();
            store.put_invite(&invite(1, "user:7"), 100, 5).unwrap();
            let _writing = store.write_lock();
            store.remove(&store.meta, META_INVITE_ISSUERS).unwrap();
            store.persist().unwrap();
        }
        let store = FjallStore::open(dir.path(), Durability::None).unwrap();
        assert_eq!(
            store
                .durable_syncs
                .load(std::sync::atomic::Ordering::Relaxed),
            2,
            "the batch and the mark"
        );
    }
}

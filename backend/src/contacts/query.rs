//! What other parts of the backend ask of contacts (presence, groups): read from committed
//! state. Checks that must be ordered with a write (a group add racing a block) belong in the
//! sequencer instead: `Relations::may_add_to_group`.

use crate::store::{ContactStore, RelationKey, RelationKind, StoreError, UserId};

/// Up to `limit` of `user`'s friends with an id above `after`, ascending: page through all
/// with the last id of each page.
pub(crate) fn friends_of(
    store: &dyn ContactStore,
    user: UserId,
    after: UserId,
    limit: usize,
) -> Result<Vec<UserId>, StoreError> {
    Ok(store
        .relations(user, RelationKind::Friend, after, limit)?
        .into_iter()
        .map(|(friend, _)| friend)
        .collect())
}

/// Whether `blocker` has blocked `user`.
pub(crate) fn is_blocked_by(
    store: &dyn ContactStore,
    user: UserId,
    blocker: UserId,
) -> Result<bool, StoreError> {
    Ok(store
        .relation(RelationKey::new(blocker, RelationKind::Block, user))?
        .is_some())
}

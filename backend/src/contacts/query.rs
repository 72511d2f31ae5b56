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

/// For each pair `(a, b)`, whether either blocks the other (a pair of the same user: false),
/// in one batched read.
pub(crate) fn blocked_either_way(
    store: &dyn ContactStore,
    pairs: &[(UserId, UserId)],
) -> Result<Vec<bool>, StoreError> {
    let keys: Vec<RelationKey> = pairs
        .iter()
        .flat_map(|(a, b)| {
            [
                RelationKey::new(*a, RelationKind::Block, *b),
                RelationKey::new(*b, RelationKind::Block, *a),
            ]
        })
        .collect();
    let found = store.relations_at(&keys)?;
    Ok(pairs
        .iter()
        .zip(found.chunks(2))
        .map(|((a, b), both)| a != b && both.iter().any(Option::is_some))
        .collect())
}

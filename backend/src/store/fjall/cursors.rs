//! Cursor rows and conversation lists in the fjall store (written by `append`).

use fjall::Readable;

use super::{FjallStore, key_u64, pair_key};
use crate::store::{ConvId, CursorRow, CursorStore, MembershipStore, StoreError, UserId};

/// Key of a recency entry: user, then bucket and conversation inverted, so that an ascending
/// scan yields the newest bucket first and, within it, the highest conversation id first.
pub(super) fn recent_key(user: UserId, bucket: u64, conv: ConvId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&user.to_be_bytes());
    key[8..16].copy_from_slice(&(u64::MAX - bucket).to_be_bytes());
    key[16..].copy_from_slice(&(u64::MAX - conv.to_wire()).to_be_bytes());
    key
}

impl CursorStore for FjallStore {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError> {
        self.get(&self.cursor_rows, pair_key(conv.to_wire(), user))
    }
}

impl MembershipStore for FjallStore {
    fn recent_conversations(
        &self,
        user: UserId,
        buckets: std::ops::RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ConvId)>, StoreError> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let start = recent_key(user, *buckets.end(), ConvId::from_stored(u64::MAX));
        let end = recent_key(user, *buckets.start(), ConvId::from_stored(0));
        self.view()
            .range(&self.recent, start..=end)
            .take(limit)
            .map(|guard| {
                let key = guard.key()?;
                let bucket = u64::MAX - key_u64(&key, 8)?;
                let conv = u64::MAX - key_u64(&key, 16)?;
                Ok((bucket, ConvId::from_stored(conv)))
            })
            .collect()
    }
}

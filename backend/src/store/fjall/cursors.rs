//! Cursor rows and conversation lists in the fjall store (written by `append`).

use fjall::Readable;

use super::{FjallStore, be_u64, pair_key};
use crate::store::{ConvId, CursorRow, CursorStore, MembershipStore, StoreError, UserId};

impl CursorStore for FjallStore {
    fn cursor_row(&self, conv: ConvId, user: UserId) -> Result<Option<CursorRow>, StoreError> {
        self.get(&self.cursor_rows, pair_key(conv.to_wire(), user))
    }
}

impl MembershipStore for FjallStore {
    fn user_conversations(&self, user: UserId, limit: usize) -> Result<Vec<ConvId>, StoreError> {
        self.view()
            .prefix(&self.user_conversations, user.to_be_bytes())
            .take(limit)
            .map(|guard| {
                let key = guard.key()?;
                be_u64(&key[8..]).map(ConvId::from_stored)
            })
            .collect()
    }
}

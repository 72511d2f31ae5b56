//! What operators keep about accounts, apart from [`super::UserRecord`] (whose stored form is
//! left as it is: a field added to it would break decoding every stored user): account flags
//! (disabled) and registration invites.

use serde::{Deserialize, Serialize};

/// An account's operator-set state. No record: enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFlags {
    /// When an operator disabled the account.
    pub disabled_at_ms: u64,
    /// Who disabled it (the audit actor, `admin:NAME` or `key:NAME`).
    pub disabled_by: String,
    /// Why, as the operator said it; shown to operators only.
    pub reason: String,
}

/// A registration invite. Only the SHA-256 of its code is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// Assigned by the store on `put_invite`, increasing from 1.
    pub id: u64,
    pub code_hash: [u8; 32],
    /// Who issued it (the audit actor).
    pub issuer: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Registrations the code allows; `uses` counts those done.
    pub uses_max: u32,
    pub uses: u32,
    pub note: String,
}

impl InviteRecord {
    /// Whether a registration may still use it at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> bool {
        self.uses < self.uses_max && now_ms < self.expires_ms
    }
}

/// What [`super::AccountAdminStore::take_invite`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteTake {
    /// One use taken (`uses` counts it).
    Taken(InviteRecord),
    /// No such code, or one that expired or was used up: nothing changed.
    Refused,
}

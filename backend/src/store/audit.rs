//! The audit log's records: who did what, when, from where. Written by the admin API, the
//! admin CLI (through the server, see `admin/audit/`) and the accounts service (users' security
//! events); read newest first, a page at a time.

use serde::{Deserialize, Serialize};

/// One entry. Ids are assigned by the store, increasing; a page is asked for "before" an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// `admin:NAME`, `key:NAME`, `cli:OS_USER`, `user:ID` or `system`.
    pub actor: String,
    /// A stable dotted name: `admin.login`, `user.disable`, `config.change`, `user.login_failed`…
    pub action: String,
    /// What was acted on (`user:123456789`, `key:deploy`, a config key); empty when nothing.
    pub target: String,
    /// The peer address the action came from; empty when not over the network.
    pub from: String,
    /// Anything else worth keeping (a changed value, a reason), short.
    pub detail: String,
}

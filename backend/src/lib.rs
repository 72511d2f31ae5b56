//! ringchat's backend: accounts and tokens, sessions, messages, storage and the admin API, on a
//! tokio runtime of its own. It never touches a client socket: requests arrive typed from the
//! gateway's shards (`api::Request`) and replies leave as encoded frames (`api::ShardEvent`).
//!
//! The public surface is deliberately small: the `Backend` handle, the `api` types, the config
//! sections, and the few entry points the binary needs to start the runtime and the admin
//! listener. Everything else is `pub(crate)`.

mod accounts;
pub mod admin;
pub mod api;
mod audit;
// Cluster mode (issue 14): the node registry in Redis, the live-node view, gRPC.
pub mod cluster;
// Backup, restore and migration between stores (issue 13).
pub mod backup;
pub mod config;
mod contacts;
// Files and media (issue 15): uploads and downloads over HTTP, the storage port.
pub mod files;
/// For benchmark tools only (`examples/fill_store.rs`): not part of the backend's API.
#[doc(hidden)]
pub mod fill;
mod groups;
mod limits;
pub mod live;
mod login_queue;
pub mod logs;
mod messaging;
mod notifications;
mod observe;
mod per_user_rate;
/// `[observe.otlp]`: tracing across nodes (the binary starts and stops the exporter).
pub use observe::otlp;
mod presence;
mod push;
mod read_gate;
/// Jittered `retry_after_ms` for refusals (the gateway's refused logins draw from it too).
pub mod retry_after;
mod rooms;
mod runtime;
mod same_secret;
mod service;
mod sessions;
mod store;
#[doc(hidden)]
pub mod testkit;
mod text;
/// The names the server gives its threads (15 bytes at most, the kernel's limit).
pub mod threads;
mod throttle;
mod time;

/// The key a client address is counted under (an IPv6 client by its /64).
pub use accounts::limiter::client_key;
/// The key a client's share of a shard-wide bound is counted under (an IPv6 client by its /48).
pub use accounts::limiter::share_key;
/// Unknown tokens one client may try per minute, in token logins and `/files` requests together.
pub use accounts::{UNKNOWN_TOKENS_PER_CLIENT, UNKNOWN_TOKENS_PER_NETWORK};
pub use messaging::{PendingCheck, PendingWrite, Submitted, Writes};
pub use runtime::build_runtime;
pub use service::{Backend, BackendError};

//! ringchat's backend: accounts and tokens, sessions, messages, storage and the admin API, on a
//! tokio runtime of its own. It never touches a client socket: requests arrive typed from the
//! gateway's shards (`api::Request`) and replies leave as encoded frames (`api::ShardEvent`).

pub mod accounts;
pub mod admin;
pub mod api;
pub mod config;
pub mod limits;
pub mod messaging;
pub mod runtime;
mod service;
pub mod sessions;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod time;

pub use service::{Backend, BackendError, platform_by_name};

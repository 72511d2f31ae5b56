//! ringchat's gateway: thread-per-core shards on monoio that own every client connection, and the
//! wiring of the `ringchat` binary. The gateway never touches storage: it decodes frames, keeps
//! sessions honest (handshake, heartbeats, limits) and hands typed requests to the backend.

// Cluster mode: the node's membership and gRPC, and `--role status`.
pub mod cluster;
pub mod config;
// CLI commands that write into a data dir run as its owner.
pub mod data_dir_owner;
// File descriptors: the reserve, and the connection limit RLIMIT_NOFILE holds.
pub mod fd_budget;
// Files (issue 15): `/files` served by the backend over a pipe from the shards.
pub mod files;
// SIGHUP, caught for every command from the start.
pub mod hangup;
pub mod logging;
pub mod panic_policy;
mod per_address;
mod port_owner;
// The PROXY protocol: trusted load balancers and their headers.
pub mod proxy_protocol;
pub mod runtime_config;
pub mod sd_notify;
pub mod security;
pub mod server;
mod shard;
mod stats;
mod status_http;
pub mod tls;
// `ringchat tune check` / `tune plan` (issue 16): host checks and pinning layouts.
pub mod tune;

//! ringchat's load generator, and the protocol client that the integration tests use.

pub mod check;
pub mod client;
pub mod heartbeat;
pub mod procstat;
pub mod provenance;
pub mod report;
pub mod scenario;
pub mod signup;
pub mod stats;
pub mod transport;

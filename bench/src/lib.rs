//! ringchat's load generator, and the protocol client that the integration tests use.

pub mod client;

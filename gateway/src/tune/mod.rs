//! `ringchat tune check` and `ringchat tune plan`: the host read from `/proc` and `/sys`
//! (`host.rs`, under a root directory so that tests read recorded trees of other machines),
//! checked against the configuration (`check.rs`, its sysctls in `sysctls.rs`), and a pinning layout proposed for it
//! (`plan.rs`). Both only read: neither changes the host.

pub mod check;
pub mod cpus;
pub mod host;
pub mod plan;
mod sysctls;

pub use check::{Check, Report, Status};
pub use host::{Host, HostError};
pub use plan::Plan;

#[cfg(test)]
mod sysctl_tests;
#[cfg(test)]
mod tests;

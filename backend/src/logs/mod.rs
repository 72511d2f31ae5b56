//! Logs: every event that passes the filter becomes one JSON line ([`line::LogLine`]), written
//! to rotated files by a writer thread behind a bounded queue ([`sink`], [`files`]), shown on
//! the console, and kept in a small ring for the live tail ([`tail`]). The admin API reads the
//! tail and searches the files ([`search`]); the filter changes live through [`LogControl`].
//!
//! The binary builds the `tracing` subscriber (`gateway/src/logging.rs`) from these parts and
//! hands the admin listener a [`Logs`].
//!
//! *Invariant*: a thread that logs never waits: lines go to the writers with `try_send`, and
//! a full queue drops the line and counts it (`ringchat_log_lines_dropped_total`).

pub mod capture;
pub mod config;
pub mod files;
pub mod filter;
pub mod line;
pub mod search;
pub mod sink;
pub mod streams;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use config::{ConsoleFormat, DEFAULT_FILTER, FILTER_BYTES_MAX, LogConfig, parse_filter};

/// Target of the "ringchat ready" event: the console leaves it out (stdout has the ready
/// line already); files and the tail keep it.
pub const READY_TARGET: &str = "ringchat::ready";

/// Target of events that carry a secret (an e-mail code logged because no SMTP relay is set):
/// the console shows them, the files and the live tail never do, so nothing the log API
/// serves (search, export, tail: a viewer may read them) holds a code that takes over an account.
pub const CONSOLE_ONLY_TARGET: &str = "ringchat::console_only";

/// Reads and changes the live log filter. The binary implements it on its reload handle;
/// `PUT /api/logs/filter` and `PATCH /api/config` (key `log.filter`) call it.
pub trait LogControl: Send + Sync {
    /// The filter in force (directives as set).
    fn filter(&self) -> String;
    /// Replaces the filter, or says why `directives` are not valid (nothing changes then).
    fn set_filter(&self, directives: &str) -> Result<(), String>;
}

/// What the admin API needs of the logging pipeline.
pub struct Logs {
    pub(crate) control: Arc<dyn LogControl>,
    pub(crate) tail: Arc<tail::Tail>,
    /// The files' directory, when files are written.
    pub(crate) dir: Option<PathBuf>,
    pub(crate) config: LogConfig,
    /// The filter the server started with (the configuration's, or `RINGCHAT_LOG`).
    pub(crate) initial_filter: String,
    /// Places for live-tail streams, in all and per operator.
    pub(crate) streams: streams::StreamPlaces,
    pub(crate) scans: Arc<Semaphore>,
}

impl Logs {
    pub fn new(
        control: Arc<dyn LogControl>,
        tail: Arc<tail::Tail>,
        dir: Option<PathBuf>,
        config: LogConfig,
    ) -> Self {
        Self {
            initial_filter: control.filter(),
            streams: streams::StreamPlaces::new(
                config.streams_max,
                config.streams_per_operator_max,
            ),
            scans: Arc::new(Semaphore::new(config.scans_max)),
            control,
            tail,
            dir,
            config,
        }
    }

    pub fn control(&self) -> &dyn LogControl {
        &*self.control
    }
}

//! The process's `tracing` subscriber: one live (reloadable) filter in front of the console
//! (text, coloured only on a terminal, or JSON lines) and the capture layer (rotated JSON-lines
//! files and the live tail). Every writer is a thread behind a bounded queue, so a thread that
//! logs never waits on a disk or a pipe. The `log` crate's records (fjall, lsm-tree) come in
//! through `tracing-log`, their level following the filter.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ringchat_backend::logs::capture::Capture;
use ringchat_backend::logs::files::RotatingFile;
use ringchat_backend::logs::sink::{Sink, Stderr};
use ringchat_backend::logs::tail::Tail;
use ringchat_backend::logs::{
    ConsoleFormat, DEFAULT_FILTER, LogConfig, LogControl, Logs, READY_TARGET, parse_filter,
};
use tracing_log::AsLog;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::filter_fn, fmt, reload};

/// The environment variable that, when set, replaces `log.filter`.
pub const FILTER_ENV: &str = "RINGCHAT_LOG";
/// How long the exit waits for queued lines to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Keeps the writers; dropping it writes out what is queued.
pub struct Logging {
    sinks: Vec<Sink>,
    /// For the admin listener (`serve` only).
    pub logs: Option<Arc<Logs>>,
}

impl Drop for Logging {
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.flush(FLUSH_AT_EXIT);
        }
    }
}

/// The filter from `RINGCHAT_LOG` if set, else `configured`; a bad `RINGCHAT_LOG` is an error
/// that names the variable.
fn directives(configured: &str) -> anyhow::Result<String> {
    match std::env::var(FILTER_ENV) {
        Ok(v) => {
            parse_filter(&v).map_err(|why| anyhow::anyhow!("{FILTER_ENV} (environment): {why}"))?;
            Ok(v)
        }
        Err(_) => Ok(configured.to_owned()),
    }
}

/// Colour only on a terminal, and not when NO_COLOR is set (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The commands other than `serve`: text on stderr, no files, no tail.
pub fn init_cli() -> anyhow::Result<Logging> {
    let filter = directives(DEFAULT_FILTER)?;
    let console = Sink::spawn("console", LogConfig::default().buffer_lines_max, Stderr)?;
    let text = fmt::layer()
        .with_writer(console.clone())
        .with_ansi(colour());
    let env_filter = parse_filter(&filter).map_err(anyhow::Error::msg)?;
    install(Registry::default().with(env_filter).with(text), &filter)?;
    Ok(Logging {
        sinks: vec![console],
        logs: None,
    })
}

/// `serve`: the console, the files in `log.dir` (or beside `data_dir`), the live tail.
pub fn init_serve(config: &LogConfig, data_dir: &Path) -> anyhow::Result<Logging> {
    let filter = directives(&config.filter)?;
    let console = Sink::spawn("console", config.buffer_lines_max, Stderr)?;
    let dir = config.resolve_dir(data_dir);
    // Files that cannot be opened do not stop the server: it says so and logs to the console.
    let (file, file_problem) = if config.file {
        match RotatingFile::open(&dir, config) {
            Ok(f) => (Some(Sink::spawn("file", config.buffer_lines_max, f)?), None),
            Err(err) => (None, Some(format!("{}: {err}", dir.display()))),
        }
    } else {
        (None, None)
    };
    let tail = Arc::new(Tail::new(config.tail_events_max));
    let json = config.format == ConsoleFormat::Json;
    let capture = Capture::new(
        file.clone(),
        json.then(|| console.clone()),
        Arc::clone(&tail),
        config.line_bytes_max,
    );
    let text = (!json).then(|| {
        fmt::layer()
            .with_writer(console.clone())
            .with_ansi(colour())
            // The ready line is on stdout already.
            .with_filter(filter_fn(|m| m.target() != READY_TARGET))
    });
    let (filter_layer, handle) =
        reload::Layer::new(parse_filter(&filter).map_err(anyhow::Error::msg)?);
    install(
        Registry::default()
            .with(filter_layer)
            .with(text)
            .with(capture),
        &filter,
    )?;
    if let Some(problem) = file_problem {
        tracing::warn!(%problem, "log files are off: the directory cannot be written");
    }
    let control = Arc::new(ReloadControl {
        handle,
        current: Mutex::new(filter),
    });
    let logs = Logs::new(control, tail, file.as_ref().map(|_| dir), config.clone());
    let mut sinks = vec![console];
    sinks.extend(file);
    Ok(Logging {
        sinks,
        logs: Some(Arc::new(logs)),
    })
}

/// Makes `subscriber` the process's, and routes the `log` crate into it.
fn install(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
    filter: &str,
) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(subscriber).context("installing the logger")?;
    tracing_log::LogTracer::init().context("routing the log crate into tracing")?;
    set_log_crate_level(filter);
    Ok(())
}

/// The `log` crate checks its own maximum before making a record: keep it at the filter's,
/// so that fjall's debug and trace calls cost nothing unless asked for.
fn set_log_crate_level(filter: &str) {
    let max = parse_filter(filter)
        .ok()
        .and_then(|f| f.max_level_hint())
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    tracing_log::log::set_max_level(max.as_log());
}

/// The live filter behind `PUT /api/logs/filter` and `PATCH /api/config`.
struct ReloadControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogControl for ReloadControl {
    fn filter(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_filter(&self, directives: &str) -> Result<(), String> {
        let filter = parse_filter(directives)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.handle
            .reload(filter)
            .map_err(|e| format!("the filter could not be replaced: {e}"))?;
        set_log_crate_level(directives);
        *current = directives.to_owned();
        Ok(())
    }
}

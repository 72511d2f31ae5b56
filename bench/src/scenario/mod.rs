//! Load scenarios. Each runs on `threads` OS threads, each with its own single-threaded tokio
//! runtime owning a share of the connections (thread-per-core, like the server), so that the
//! load generator scales with cores instead of contending on one scheduler.
//!
//! A new scenario is a module with a config, a `run(&Config, &Observe) -> Report`, and a report
//! type that serialises to the common JSON keys.

pub mod cluster;
pub mod connect;
pub mod files;
pub mod group;
pub mod pairs;
pub mod phases;
pub mod presence;
pub mod room;
pub mod storm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use ringchat_proto::{Body, v1};

use crate::client::Client;

use crate::procstat::{self, ProcSample};

/// How a run is watched from outside: the server process to sample, and a progress line.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    pub server_pid: Option<u32>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

impl Observe {
    pub fn sample(&self) -> Option<ProcSample> {
        self.server_pid.and_then(|pid| procstat::sample(pid).ok())
    }
}

/// Runs `work(thread_index)` on `threads` named OS threads, each inside its own
/// current-thread tokio runtime with a `LocalSet`, and collects the results in order.
pub fn on_threads<T, F, Fut>(threads: usize, work: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
{
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            let work = Arc::clone(&work);
            std::thread::Builder::new()
                .name(format!("bench-{index}"))
                .spawn(move || -> anyhow::Result<T> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, work(index))
                })
        })
        .collect::<Result<_, _>>()?;
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
        })
        .collect()
}

/// Runs `work` on this thread in a current-thread tokio runtime with a `LocalSet`.
pub(crate) fn local_runtime<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, work)
}

/// A step of the splitmix64 generator: cheap, seedable jitter without a dependency.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [0, 1) from a random word (the top 53 bits).
pub(crate) fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Counters the load threads bump and the progress line reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub finished: AtomicBool,
}

/// Prints `label` progress every second until `finished`; returns the printer's thread.
pub fn spawn_progress(
    progress: Arc<Progress>,
    label: &'static str,
    enabled: bool,
) -> Option<std::thread::JoinHandle<()>> {
    if !enabled {
        return None;
    }
    Some(std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut last = 0;
        while !progress.finished.load(Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_secs(1));
            let done = progress.done.load(Ordering::Relaxed);
            eprintln!(
                "  {:>5.1}s  {label} {done} (+{}/s)  errors {}",
                start.elapsed().as_secs_f64(),
                done - last,
                progress.errors.load(Ordering::Relaxed)
            );
            last = done;
        }
    }))
}

/// A random id for this run, so message ids never collide with an earlier run's.
pub fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Raises the open-files limit to cover `needed` descriptors, or says which limit to raise.
pub fn ensure_fd_limit(needed: u64) -> anyhow::Result<()> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= needed {
        return Ok(());
    }
    let target = needed.max(soft);
    if rlimit::setrlimit(rlimit::Resource::NOFILE, target, hard.max(target)).is_ok() {
        return Ok(());
    }
    if hard >= needed {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
        return Ok(());
    }
    anyhow::bail!(
        "{needed} open files are needed but the limit is {soft} (hard {hard}): raise it with `ulimit -n {needed}` (as root, or LimitNOFILE= in systemd)"
    )
}

/// A `DeliveryAck` that wants no answer (request id 0), as receivers send one per read batch.
pub(crate) fn delivery_ack(conversation_id: u64, seq: u64) -> ringchat_proto::Frame {
    ringchat_proto::Frame {
        request_id: 0,
        body: Some(ringchat_proto::Body::DeliveryAck(
            ringchat_proto::v1::DeliveryAck {
                conversation_id,
                seq,
            },
        )),
    }
}

/// Writes one frame on a write half that a connection's tasks take turns on.
pub(crate) async fn write_one(
    write: &tokio::sync::Mutex<crate::transport::FrameWriter>,
    frame: ringchat_proto::Frame,
    scratch: &mut bytes::BytesMut,
) -> anyhow::Result<()> {
    write.lock().await.write(&[frame], scratch).await
}

/// Attempts at one request before giving up on a server that keeps saying "retry".
const ATTEMPTS_MAX: u32 = 20;

/// Sends `make()` and returns the answer, retrying after `retry_after_ms` (with jitter, so that
/// clients told to wait do not come back together) while the server answers `UNAVAILABLE` or
/// `RATE_LIMITED`, as a real client does.
pub(crate) async fn asking(
    c: &mut Client,
    seed: u64,
    retries: &mut u64,
    make: impl Fn() -> Body,
) -> anyhow::Result<Body> {
    for attempt in 0..ATTEMPTS_MAX {
        let body = c.request(make()).await?;
        let wait = match &body {
            Body::Error(e)
                if e.code == v1::ErrorCode::Unavailable as i32
                    || e.code == v1::ErrorCode::RateLimited as i32 =>
            {
                e.retry_after_ms.max(10)
            }
            _ => return Ok(body),
        };
        *retries += 1;
        // Up to half again, spread by user and attempt.
        let spread = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(attempt);
        let jitter = spread % (wait / 2 + 1);
        tokio::time::sleep(Duration::from_millis(wait + jitter)).await;
    }
    bail!("still told to retry after {ATTEMPTS_MAX} attempts")
}

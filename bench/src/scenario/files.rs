//! `files`: concurrent uploads, then downloads, of a mix of file sizes over the real HTTP API
//! on the WebSocket port (`POST /files`, chunks, complete, `GET /files/{id}`), every download
//! checked by SHA-256. Reports MB/s each way, latency per request kind, and the server's CPU
//! per MB. Users sign up through the protocol, as in the other scenarios; their login tokens
//! authorise the HTTP requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Observe, Progress, spawn_progress};
use crate::signup::{Identity, Refusals, sign_up_tcp};

/// Most files one run may upload: each is held in memory until its downloads are checked.
pub const FILES_MAX: usize = 10_000;
/// Largest file one run may upload.
pub const FILE_BYTES_MAX: u64 = 1 << 30;
/// Most bytes one run may hold in memory (every file's content, for the checks).
pub const RUN_BYTES_MAX: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// The protocol listener, where users sign up and log in.
    pub addr: SocketAddr,
    /// The HTTP API: the WebSocket listener (`gateway.ws_listen`).
    pub http: SocketAddr,
    pub users: usize,
    /// Files to upload, spread over the users; their sizes cycle through `sizes`.
    pub files: usize,
    pub sizes: Vec<u64>,
    /// Downloads of each file once every upload is done.
    pub downloads_per_file: usize,
    /// HTTP requests in flight at once.
    pub concurrency: usize,
    /// No upload or download starts after this long.
    pub duration: Duration,
    pub threads: usize,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesReport {
    pub scenario: &'static str,
    pub provenance: crate::provenance::Provenance,
    pub users: usize,
    pub concurrency: usize,
    pub sizes: Vec<u64>,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub upload_s: f64,
    pub upload_mb_per_s: f64,
    pub downloads: u64,
    pub bytes_downloaded: u64,
    pub download_s: f64,
    pub download_mb_per_s: f64,
    /// Requests that failed (connection errors, unexpected statuses), by kind in the log.
    pub errors: u64,
    /// Downloads whose bytes did not hash to the uploaded file's SHA-256.
    pub mismatches: u64,
    /// Uploaded files never downloaded before the run's deadline (their bytes unchecked).
    pub files_unchecked: u64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    pub create_latency: Latency,
    pub chunk_latency: Latency,
    pub complete_latency: Latency,
    pub download_latency: Latency,
    /// Requests slower than the histograms hold (`stats::LATENCY_US_MAX`): recorded at that
    /// bound, so a `max_us` is a floor when this is not 0.
    pub latency_over_max: u64,
    pub server_pid: Option<u32>,
    /// Server CPU (user + system) per MB (10^6 bytes) moved, each way.
    pub server_cpu_ms_per_mb_up: Option<f64>,
    pub server_cpu_ms_per_mb_down: Option<f64>,
}

impl FilesReport {
    /// Every request answered as expected and every download matched.
    /// No error, every download intact, and every uploaded file downloaded at least once.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0 && self.files_unchecked == 0
    }
}

/// An uploaded file, kept to check its downloads.
struct Uploaded {
    file_id: String,
    token: Arc<str>,
    bytes: Arc<Vec<u8>>,
    sha256: String,
}

#[derive(Deserialize)]
struct Created {
    upload_id: String,
    chunk_size: u64,
}

#[derive(Deserialize)]
struct Completed {
    file_id: String,
}

/// Latency histograms per request kind, in microseconds.
struct Latencies {
    create: Histogram<u64>,
    chunk: Histogram<u64>,
    complete: Histogram<u64>,
    download: Histogram<u64>,
    /// Requests slower than the histograms hold, recorded at their bound.
    over_max: u64,
}

impl Latencies {
    fn new() -> Self {
        let h = crate::stats::latency_histogram;
        Self {
            create: h(),
            chunk: h(),
            complete: h(),
            download: h(),
            over_max: 0,
        }
    }
}

fn summary(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `size` bytes that differ from every other file's (the server stores by content).
fn content(seed: u64, size: u64) -> Vec<u8> {
    // Mixed first: from `seed | 1` alone, seeds 2k and 2k + 1 made the same bytes.
    let mut x = super::splitmix(seed) | 1;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size as usize);
    out
}

/// A byte count such as `65536`, `64k`, `64KiB`, `8m`, `8MiB` (k and m are 1024-based).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().with_context(|| format!("size {s:?}"))?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => bail!("size {s:?}: the unit must be k, KiB, m, MiB, g or GiB"),
    };
    Ok(n * factor)
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    latencies: std::sync::Mutex<Latencies>,
    errors: AtomicU64,
    mismatches: AtomicU64,
    progress: Arc<Progress>,
    deadline: Instant,
}

impl Ctx {
    fn record(&self, kind: fn(&mut Latencies) -> &mut Histogram<u64>, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if crate::stats::record_latency(kind(&mut l), us) {
            l.over_max += 1;
        }
    }

    fn error(&self, what: &str, e: &anyhow::Error) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("{what}: {e:#}");
        }
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    async fn upload(&self, token: &str, name: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let sha256 = sha256_hex(bytes);
        let auth = format!("Bearer {token}");
        let started = Instant::now();
        let created: Created = ok(self
            .http
            .post(format!("{}/files", self.base))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "name": name,
                    "size": bytes.len(),
                    "mime": "application/octet-stream",
                    "sha256": sha256,
                })
                .to_string(),
            )
            .send()
            .await?)
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
        self.record(|l| &mut l.create, started);
        if created.chunk_size == 0 {
            bail!("the server gave chunk_size 0");
        }
        for (index, chunk) in bytes.chunks(created.chunk_size as usize).enumerate() {
            let started = Instant::now();
            ok(self
                .http
                .put(format!(
                    "{}/files/{}/chunks/{index}",
                    self.base, created.upload_id
                ))
                .header("authorization", &auth)
                .header("x-chunk-sha256", sha256_hex(chunk))
                .body(chunk.to_vec())
                .send()
                .await?)
            .await?;
            self.record(|l| &mut l.chunk, started);
        }
        let started = Instant::now();
        let done: Completed = ok(self
            .http
            .post(format!(
                "{}/files/{}/complete",
                self.base, created.upload_id
            ))
            .header("authorization", &auth)
            .send()
            .await?)
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
        self.record(|l| &mut l.complete, started);
        Ok(done.file_id)
    }

    /// Downloads the file and checks its bytes: the size moved, or `None` for bytes that do
    /// not match (counted in `mismatches`, not in `errors`: one bad download, one problem).
    async fn download(&self, file: &Uploaded) -> anyhow::Result<Option<u64>> {
        let started = Instant::now();
        let body = ok(self
            .http
            .get(format!("{}/files/{}", self.base, file.file_id))
            .header("authorization", format!("Bearer {}", file.token))
            .send()
            .await?)
        .await?
        .bytes()
        .await?;
        self.record(|l| &mut l.download, started);
        if body.len() != file.bytes.len() || sha256_hex(&body) != file.sha256 {
            if self.mismatches.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!(
                    "file {}: {} bytes downloaded do not hash to the uploaded {} bytes' SHA-256",
                    file.file_id,
                    body.len(),
                    file.bytes.len()
                );
            }
            return Ok(None);
        }
        Ok(Some(body.len() as u64))
    }
}

/// The response if its status is a success, else its status and body as the error.
async fn ok(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("HTTP {status}: {body}")
}

pub fn run(cfg: &FilesConfig, observe: &Observe) -> anyhow::Result<FilesReport> {
    if cfg.users == 0 || cfg.concurrency == 0 || cfg.sizes.is_empty() {
        bail!("--users, --concurrency and --sizes must not be zero or empty");
    }
    if cfg.files > FILES_MAX {
        bail!("at most {FILES_MAX} files per run");
    }
    if let Some(big) = cfg.sizes.iter().find(|s| **s == 0 || **s > FILE_BYTES_MAX) {
        bail!("file size {big}: sizes must be 1 byte to {FILE_BYTES_MAX} bytes");
    }
    let total: u64 = (0..cfg.files).map(|i| cfg.sizes[i % cfg.sizes.len()]).sum();
    if total > RUN_BYTES_MAX {
        bail!("the files add up to {total} bytes; at most {RUN_BYTES_MAX} per run");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg, observe))
}

async fn run_async(cfg: &FilesConfig, observe: &Observe) -> anyhow::Result<FilesReport> {
    let mut tokens: Vec<Arc<str>> = Vec::with_capacity(cfg.users);
    let refusals = Refusals::default();
    for u in 0..cfg.users {
        let name = format!("{}f{u}", cfg.user_prefix);
        let who = Identity {
            username: &name,
            password: &cfg.password,
            device_id: "bench-files",
        };
        let (_client, ok) = sign_up_tcp(cfg.addr, None, &who, &refusals).await?;
        tokens.push(ok.token.into());
    }
    let progress = Arc::new(Progress::default());
    let printer = spawn_progress(Arc::clone(&progress), "requests", observe.progress);
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency)
            .timeout(Duration::from_secs(120))
            .build()?,
        base: format!("http://{}", cfg.http),
        latencies: std::sync::Mutex::new(Latencies::new()),
        errors: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        progress: Arc::clone(&progress),
        deadline: Instant::now() + cfg.duration,
    });
    let limit = Arc::new(Semaphore::new(cfg.concurrency));
    let seed = super::run_id();

    // Uploads.
    let before_up = observe.sample();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.files);
    for i in 0..cfg.files {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        if Instant::now() >= ctx.deadline {
            break;
        }
        let (ctx, token) = (Arc::clone(&ctx), Arc::clone(&tokens[i % cfg.users]));
        let size = cfg.sizes[i % cfg.sizes.len()];
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let bytes = content(seed.wrapping_add(i as u64), size);
            match ctx.upload(&token, &format!("bench-{i}.bin"), &bytes).await {
                Ok(file_id) => {
                    ctx.progress.done.fetch_add(1, Ordering::Relaxed);
                    Some(Uploaded {
                        file_id,
                        token,
                        sha256: sha256_hex(&bytes),
                        bytes: Arc::new(bytes),
                    })
                }
                Err(e) => {
                    ctx.error(&format!("upload {i}"), &e);
                    None
                }
            }
        }));
    }
    let mut uploaded = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Some(file) = t.await? {
            uploaded.push(Arc::new(file));
        }
    }
    let upload_s = started.elapsed().as_secs_f64();
    let after_up = observe.sample();
    let bytes_uploaded: u64 = uploaded.iter().map(|f| f.bytes.len() as u64).sum();

    // Downloads, round-robin over the files.
    let started = Instant::now();
    let mut tasks = Vec::new();
    'all: for _ in 0..cfg.downloads_per_file {
        for file in &uploaded {
            let permit = Arc::clone(&limit).acquire_owned().await?;
            if Instant::now() >= ctx.deadline {
                break 'all;
            }
            let (ctx, file) = (Arc::clone(&ctx), Arc::clone(file));
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                match ctx.download(&file).await {
                    Ok(n) => {
                        ctx.progress.done.fetch_add(1, Ordering::Relaxed);
                        n
                    }
                    Err(e) => {
                        ctx.error("download", &e);
                        None
                    }
                }
            }));
        }
    }
    let tasks_started = tasks.len() as u64;
    let (mut downloads, mut bytes_downloaded) = (0, 0);
    for t in tasks {
        if let Some(n) = t.await? {
            downloads += 1;
            bytes_downloaded += n;
        }
    }
    // The first round visits every file once, in order: files past the tasks started (the
    // deadline came first) were never downloaded, so their bytes were never checked.
    let files_unchecked = (uploaded.len() as u64).saturating_sub(tasks_started);
    let download_s = started.elapsed().as_secs_f64();
    let after_down = observe.sample();
    progress.finished.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        p.thread().unpark();
        let _ = p.join();
    }

    let mb = |bytes: u64| bytes as f64 / 1e6;
    let rate = |bytes: u64, s: f64| if s > 0.0 { mb(bytes) / s } else { 0.0 };
    let cpu_per_mb = |a: Option<crate::procstat::ProcSample>,
                      b: Option<crate::procstat::ProcSample>,
                      bytes: u64| {
        a.zip(b)
            .filter(|_| bytes > 0)
            .map(|(a, b)| b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1000.0 / mb(bytes))
    };
    let latencies = ctx.latencies.lock().unwrap_or_else(|p| p.into_inner());
    Ok(FilesReport {
        scenario: "files",
        provenance: Default::default(),
        users: cfg.users,
        concurrency: cfg.concurrency,
        sizes: cfg.sizes.clone(),
        files_uploaded: uploaded.len() as u64,
        bytes_uploaded,
        upload_s,
        upload_mb_per_s: rate(bytes_uploaded, upload_s),
        downloads,
        bytes_downloaded,
        download_s,
        download_mb_per_s: rate(bytes_downloaded, download_s),
        errors: ctx.errors.load(Ordering::Relaxed),
        mismatches: ctx.mismatches.load(Ordering::Relaxed),
        files_unchecked,
        setup_refusals: refusals.count(),
        create_latency: summary(&latencies.create),
        chunk_latency: summary(&latencies.chunk),
        complete_latency: summary(&latencies.complete),
        download_latency: summary(&latencies.download),
        latency_over_max: latencies.over_max,
        server_pid: observe.server_pid,
        server_cpu_ms_per_mb_up: cpu_per_mb(before_up, after_up, bytes_uploaded),
        server_cpu_ms_per_mb_down: cpu_per_mb(after_up, after_down, bytes_downloaded),
    })
}

/// The report as a table.
pub fn table(r: &FilesReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let _ = writeln!(
        out,
        "files: {} users, {} requests in flight, sizes {:?}",
        r.users, r.concurrency, r.sizes
    );
    let _ = writeln!(
        out,
        "  up:   {} files, {:.1} MB in {:.2}s = {:.1} MB/s, server CPU {} ms/MB",
        r.files_uploaded,
        r.bytes_uploaded as f64 / 1e6,
        r.upload_s,
        r.upload_mb_per_s,
        opt(r.server_cpu_ms_per_mb_up)
    );
    let _ = writeln!(
        out,
        "  down: {} downloads ({} files never downloaded), {:.1} MB in {:.2}s = {:.1} MB/s, server CPU {} ms/MB",
        r.downloads,
        r.files_unchecked,
        r.bytes_downloaded as f64 / 1e6,
        r.download_s,
        r.download_mb_per_s,
        opt(r.server_cpu_ms_per_mb_down)
    );
    for (kind, l) in [
        ("create", &r.create_latency),
        ("chunk", &r.chunk_latency),
        ("complete", &r.complete_latency),
        ("download", &r.download_latency),
    ] {
        let _ = writeln!(
            out,
            "  {kind:<9} {:>7} requests  p50 {:>9} us  p99 {:>9} us  max {:>9} us",
            l.count, l.p50_us, l.p99_us, l.max_us
        );
    }
    let _ = writeln!(
        out,
        "  errors {}  checksum mismatches {}",
        r.errors, r.mismatches
    );
    crate::report::setup_refusals_line(&mut out, r.setup_refusals);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn contents_differ_and_have_the_size_asked() {
        let (a, b) = (content(1, 1000), content(2, 1000));
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b);
        // Neighbouring seeds too: a run's files are seeded `seed + i`.
        for seed in 0..64 {
            assert_ne!(content(seed, 64), content(seed + 1, 64), "seed {seed}");
        }
        assert_eq!(content(3, 7).len(), 7);
    }
}

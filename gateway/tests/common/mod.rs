//! Starts the real `ringchat` binary on loopback port 0 and talks to it over real sockets.
#![allow(dead_code)]

pub mod account;
pub mod admin;
pub mod browser;
pub mod clock;
pub mod cluster;
pub mod contacts;
pub mod files;
pub mod groups;
pub mod http1;
pub mod kill9;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod pg_cluster;
pub mod pipe;
pub mod proxy;
pub mod push;
pub mod resume;
pub mod rooms;
pub mod sse;
pub mod store;
pub mod transport;
pub mod uploads;
pub mod webhook;
pub mod ws;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, KickReason};

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
pub const PASSWORD: &str = "correct horse battery";
/// How long a test waits for something the server does in the background.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// A free port below the system's ephemeral range (32768 and up by default), so that no
/// outgoing connection takes it as its source port between this pick and its bind (a port
/// from `bind(0)` could be, or be handed to another `bind(0)`, and the bind then failed with
/// "address in use"). For a listener that starts later: a node, a Redis, a webhook receiver.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + seed.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// Polls `check` until it holds, or panics saying `what` after [`WAIT_DEADLINE`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] from async code: polls without blocking the runtime's thread.
pub async fn wait_until_async(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to [`READY_TIMEOUT`]) for the `ringchat ready …` line on a spawned server's
/// piped stdout; kills the child if it does not come.
pub fn ready_line(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().expect("the server's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ringchat ready") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(READY_TIMEOUT).map_err(|e| {
        let _ = child.kill();
        format!("no ready line in {READY_TIMEOUT:?}: {e}")
    })
}

/// A server that exited at start-up.
#[derive(Debug)]
pub struct FailedStart {
    pub status: ExitStatus,
    pub stderr: String,
    pub elapsed: Duration,
}

pub struct TestServer {
    child: Option<Child>,
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    /// WebSocket listener (always on in tests).
    pub ws: SocketAddr,
    /// TLS and WebSocket-over-TLS listeners, when started with `start_tls`.
    pub tls: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    /// The self-signed certificate (PEM) the TLS listeners present, when on.
    pub cert_pem: Option<String>,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// `serve --config FILE`, if any.
    pub config_file: Option<PathBuf>,
    pub log_path: PathBuf,
    /// The open-file limit (soft and hard) the server is started with, when not inherited.
    nofile: Option<u64>,
    _tmp: Option<tempfile::TempDir>,
}

/// Settings every test server gets: loopback, port 0, cheap password hashing, its own data dir.
fn base_env(data_dir: &Path) -> Vec<(String, String)> {
    [
        ("GATEWAY__TCP_LISTEN", "127.0.0.1:0".to_owned()),
        ("GATEWAY__WS_LISTEN", "127.0.0.1:0".to_owned()),
        ("GATEWAY__TLS_LISTEN", "127.0.0.1:0".to_owned()),
        ("GATEWAY__WSS_LISTEN", "127.0.0.1:0".to_owned()),
        ("ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
        ("STORAGE__DATA_DIR", data_dir.display().to_string()),
        ("ACCOUNTS__ARGON2_MEMORY_KIB", "256".to_owned()),
        ("ACCOUNTS__ARGON2_ITERATIONS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("RINGCHAT_{k}"), v))
    .collect()
}

impl TestServer {
    /// Starts a server; `env` holds extra overrides as ("GATEWAY__IDLE_TIMEOUT_MS", "1000").
    pub fn start(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut server = Self::start_in(&data_dir, env);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server with TLS on (a fresh self-signed certificate made by `ringchat gen-cert`).
    pub fn start_tls(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        let out = Command::new(env!("CARGO_BIN_EXE_ringchat"))
            .arg("gen-cert")
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .output()
            .expect("run gen-cert");
        assert!(out.status.success(), "gen-cert: {out:?}");
        let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
        let mut all: Vec<(&str, &str)> = vec![
            ("GATEWAY__TLS__CERT_PATH", &cert_s),
            ("GATEWAY__TLS__KEY_PATH", &key_s),
        ];
        all.extend_from_slice(env);
        let mut server = Self::start_in(&tmp.path().join("data"), &all);
        server.cert_pem = Some(std::fs::read_to_string(&cert).unwrap());
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server that must fail to start: waits (bounded) for it to exit, and returns how
    /// it exited and what it wrote to stderr. Panics if it gets ready or does not exit in time.
    pub fn start_expecting_failure(data_dir: &Path, env: &[(&str, &str)]) -> FailedStart {
        Self::start_expecting_failure_with_nofile_opt(data_dir, env, None)
    }

    /// [`Self::start_expecting_failure`] under an open-file limit of `nofile`.
    pub fn start_expecting_failure_with_nofile(
        data_dir: &Path,
        env: &[(&str, &str)],
        nofile: u64,
    ) -> FailedStart {
        Self::start_expecting_failure_with_nofile_opt(data_dir, env, Some(nofile))
    }

    fn start_expecting_failure_with_nofile_opt(
        data_dir: &Path,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> FailedStart {
        let mut all = base_env(data_dir);
        all.extend(
            env.iter()
                .map(|(k, v)| (format!("RINGCHAT_{k}"), (*v).to_owned())),
        );
        all.extend(store::env_for(data_dir, &all));
        let started = Instant::now();
        let mut child = server_command(nofile)
            .arg("serve")
            .env_clear()
            .envs(all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringchat");
        // Read both pipes on threads, so a chatty child never blocks on a full pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(&mut stdout).lines().map_while(Result::ok) {
                if line.starts_with("ringchat ready") {
                    let _ = ready_tx.send(());
                }
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = started + READY_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            let ready = ready_rx.try_recv().is_ok();
            if ready || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let why = if ready {
                    "the server got ready although it should have failed".to_owned()
                } else {
                    format!("the server did not exit within {READY_TIMEOUT:?}")
                };
                panic!(
                    "{why}; stdout:\n{}\nstderr:\n{}",
                    out.join().unwrap(),
                    err.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = err.join().unwrap();
        let stdout = out.join().unwrap();
        assert!(
            !stdout.contains("ringchat ready"),
            "the server got ready before it failed ({status:?}); stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        FailedStart {
            status,
            stderr,
            elapsed: started.elapsed(),
        }
    }

    /// Starts a server on an existing data dir (for restarts).
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_config(data_dir, None, env)
    }

    /// Starts a server whose open-file limit, soft and hard, is `nofile`.
    pub fn start_with_nofile(env: &[(&str, &str)], nofile: u64) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::prepare(&tmp.path().join("data"), None, env);
        server.nofile = Some(nofile);
        server._tmp = Some(tmp);
        server.spawn();
        server
    }

    /// Starts a server with `serve --config FILE` (env overrides still apply).
    pub fn start_with_config(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let mut server = Self::prepare(data_dir, config, env);
        server.spawn();
        server
    }

    /// A server not started yet.
    fn prepare(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let mut all = base_env(data_dir);
        all.extend(
            env.iter()
                .map(|(k, v)| (format!("RINGCHAT_{k}"), (*v).to_owned())),
        );
        all.extend(store::env_for(data_dir, &all));
        // Not beside the data dir: a test may put that on a file system it fills.
        static LOGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log_path = std::env::temp_dir().join(format!(
            "ringchat-test-{}-{}.log",
            std::process::id(),
            LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        Self {
            child: None,
            tcp: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            ws: "0.0.0.0:0".parse().unwrap(),
            tls: None,
            wss: None,
            cert_pem: None,
            data_dir: data_dir.to_owned(),
            env: all,
            config_file: config.map(Path::to_owned),
            log_path,
            nofile: None,
            _tmp: None,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = server_command(self.nofile)
            .arg("serve")
            .args(
                self.config_file
                    .iter()
                    .flat_map(|f| [Path::new("--config"), f]),
            )
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn ringchat");
        let line = match ready_line(&mut child) {
            Ok(line) => line,
            Err(e) => panic!("server not ready: {e}; log:\n{}", self.log_tail()),
        };
        let fields: HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        self.tcp = fields["tcp"].parse().unwrap();
        self.admin = fields["admin"].parse().unwrap();
        self.ws = fields["ws"].parse().unwrap();
        self.tls = fields["tls"].parse().ok();
        self.wss = fields["wss"].parse().ok();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit();
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit in time; log:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data dir and settings.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    /// A variable of the environment the server is started with.
    #[allow(dead_code)] // Used by the cluster test crates only.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many lines of the whole log (every start so far) contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines().filter(|l| l.contains(needle)).count()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.tcp).await.expect("connect")
    }

    /// A new user, registered and logged in on a fresh connection.
    pub async fn user(&self, username: &str) -> (Client, v1::LoginOk) {
        Client::signup(self.tcp, username, PASSWORD, &format!("{username}-dev1"))
            .await
            .expect("signup")
    }

    /// Another logged-in device of an existing user.
    pub async fn device(&self, username: &str, device_id: &str) -> (Client, v1::LoginOk) {
        Client::signup(self.tcp, username, PASSWORD, device_id)
            .await
            .expect("login")
    }

    /// The admin listener's /metrics page, as `name{labels}` -> value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        let body = http_get(self.admin, "/metrics");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    pub fn metric(&self, key: &str) -> f64 {
        self.metrics().get(key).copied().unwrap_or(0.0)
    }

    /// The sum of a family's every series (`name` and each `name{…}`): per-shard gauges summed
    /// over however many shards the machine gave the server.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let labelled = format!("{name}{{");
        self.metrics()
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&labelled))
            .map(|(_, v)| v)
            .sum()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- server log tail ---\n{}", self.log_tail());
        }
        // Its temp dir goes now, and with it the database named after it.
        if self._tmp.is_some() {
            store::drop_database(&self.data_dir);
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The `ringchat` binary, under an open-file limit (soft and hard) of `nofile` when given:
/// util-linux's `prlimit` sets it and execs the server, so the pid is the server's.
fn server_command(nofile: Option<u64>) -> Command {
    match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_ringchat"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ringchat")),
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Reads until the server closes, returning the `Kicked` reason seen on the way (if any).
pub async fn expect_kicked_then_closed(client: &mut Client) -> KickReason {
    let mut reason = None;
    loop {
        match client.recv_timeout().await.expect("frame or close") {
            Some(frame) => {
                if let Some(Body::Kicked(k)) = frame.body {
                    reason = Some(KickReason::try_from(k.reason).unwrap());
                }
            }
            None => return reason.expect("closed without a Kicked frame"),
        }
    }
}

/// Reads until the server closes, returning the `Error` code seen on the way.
pub async fn expect_error_then_closed(client: &mut Client) -> v1::ErrorCode {
    let mut code = None;
    loop {
        match client.recv_timeout().await.expect("frame or close") {
            Some(frame) => {
                if let Some(Body::Error(e)) = frame.body {
                    code = Some(v1::ErrorCode::try_from(e.code).unwrap());
                }
            }
            None => return code.expect("closed without an Error frame"),
        }
    }
}

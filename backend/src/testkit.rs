//! Test support shared by the backend's unit tests and the gateway's integration tests (not
//! part of the product's API).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test's own Redis may take to say it is ready.
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis of a test's own (`RINGCHAT_TEST_REDIS_SERVER`, else `redis-server` on PATH), on
/// loopback without persistence, that the test can stop and start again on the same port.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts it and waits for "Ready to accept connections" (panics after 30 s).
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// [`Self::start`] on a port the system picks (free when asked): `port` says which.
    pub fn start_on_free_port() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Self::start(port)
    }

    /// [`Self::start`] with `extra` arguments, e.g. `["--replicaof", "127.0.0.1", "6379"]`.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let port_arg = port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--port", &port_arg];
        args.extend(["--save", "", "--appendonly", "no"]);
        args.extend(extra);
        Self::spawn(port, &args, "Ready to accept connections")
    }

    /// A Redis Sentinel on `port` watching the primary on `primary_port` as master `master`
    /// (quorum 1; down after 500 ms; failover timeout 2 s), its config file (which Sentinel
    /// rewrites) in `dir`. Ready once it monitors the master.
    pub fn start_sentinel(port: u16, master: &str, primary_port: u16, dir: &Path) -> Self {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {master} 500\n\
                 sentinel failover-timeout {master} 2000\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let conf = conf.to_str().expect("a UTF-8 path").to_owned();
        Self::spawn(port, &[&conf, "--sentinel"], "+monitor master")
    }

    fn spawn(port: u16, args: &[&str], ready: &'static str) -> Self {
        let bin =
            std::env::var("RINGCHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut child = Command::new(&bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test.sh installs redis-server)"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    let _ = tx.send(());
                }
            }
        });
        let redis = Self {
            port,
            child: Some(child),
        };
        rx.recv_timeout(REDIS_READY_TIMEOUT)
            .unwrap_or_else(|_| panic!("the test's redis-server {args:?} gets ready"));
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (what a crash of Redis looks like to the nodes).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sum of the samples of metric `name` (every label set) in a Prometheus text rendering;
/// 0 when it has none.
pub fn metric_sum(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

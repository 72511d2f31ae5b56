//! Test support shared by the backend's unit tests and the gateway's integration tests (not
//! part of the product's API).

use std::io::{BufRead, BufReader};
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
        let bin =
            std::env::var("RINGCHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test.sh installs redis-server)"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        let redis = Self {
            port,
            child: Some(child),
        };
        rx.recv_timeout(REDIS_READY_TIMEOUT)
            .expect("the test's Redis gets ready");
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

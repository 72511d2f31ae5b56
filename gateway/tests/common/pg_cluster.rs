//! A private PostgreSQL cluster for one test, which the test may stop and start: the logic of
//! `scripts/postgres-test-server.sh` in Rust. initdb into a temp dir, listen on 127.0.0.1 on a
//! free port, `pg_ctl start` / `stop -m immediate`. PostgreSQL refuses to run as root: as root,
//! every command runs as the `postgres` OS user (`runuser`), which then owns the dir.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn pg_bin() -> PathBuf {
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql): apt-get install postgresql")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    bins.sort();
    bins.pop().expect("no /usr/lib/postgresql/*/bin/initdb").1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PgCluster {
    /// A fresh cluster, started (fsync on: a stop with `immediate` is a crash of the database).
    pub fn start_new() -> Self {
        let as_postgres = nix_is_root();
        let dir = tempfile::Builder::new()
            .prefix("ringchat-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown postgres: {out:?}");
        }
        let cluster = Self {
            bin: pg_bin(),
            dir,
            port: free_port(),
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "--pgdata",
                &cluster.data().display().to_string(),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        );
        cluster.start();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and returns once it accepts connections (`pg_ctl --wait`).
    pub fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "--pgdata",
                &self.data().display().to_string(),
                "--log",
                &log.display().to_string(),
                "--wait",
                "--options",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`immediate`: no checkpoint, connections cut);
    /// returns once it is gone.
    pub fn stop_immediate(&self) {
        self.run(
            "pg_ctl",
            &[
                "--pgdata",
                &self.data().display().to_string(),
                "--mode=immediate",
                "--wait",
                "stop",
            ],
        );
    }

    /// Stops the server cleanly (`fast`: open transactions rolled back, connections cut, a
    /// shutdown checkpoint); returns once it is gone. For a test that needs the database away
    /// but not a crash: after `immediate`, a commit in flight at the stop may have an xid the
    /// restarted database has not reached yet, and the store treats it as still running
    /// (`store/postgres/in_doubt.rs`) until it has.
    pub fn stop_fast(&self) {
        self.run(
            "pg_ctl",
            &[
                "--pgdata",
                &self.data().display().to_string(),
                "--mode=fast",
                "--wait",
                "stop",
            ],
        );
    }

    /// Freezes the server (SIGSTOP to the postmaster and its children) until the guard is
    /// dropped: a store that stalls rather than fails, its connections open but unanswered.
    pub fn pause(&self) -> Paused {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid")
            .lines()
            .next()
            .expect("postmaster.pid's pid line")
            .trim()
            .to_owned();
        let mut pids = children(&pid);
        pids.push(pid);
        signal("-STOP", &pids);
        Paused { pids }
    }

    /// One of PostgreSQL's programs, as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.current_dir(Path::new("/"));
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Already stopped is fine: the result is not checked.
        let _ = self
            .command("pg_ctl")
            .arg("--pgdata")
            .arg(self.data())
            .args(["--mode=immediate", "--wait", "stop"])
            .output();
    }
}

/// Whether this process runs as root (PostgreSQL then must run as another user).
fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A paused server (`PgCluster::pause`): resumed when this goes.
pub struct Paused {
    pids: Vec<String>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", &self.pids);
    }
}

/// The processes whose parent is `pid` (a postmaster's backends and workers).
fn children(pid: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
            // After the command's `)`: state, then the parent's pid.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .to_owned();
            (ppid == pid).then_some(name)
        })
        .collect()
}

fn signal(which: &str, pids: &[String]) {
    let out = Command::new("kill")
        .arg(which)
        .args(pids)
        .output()
        .expect("run kill");
    assert!(out.status.success(), "kill {which} {pids:?}: {out:?}");
}

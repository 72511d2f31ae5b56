//! Runs a `web-tests/` script (Playwright driving headless Chromium) against a real server:
//! the chat page or the admin dashboard.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::TestServer;

const E2E_TIMEOUT: Duration = Duration::from_secs(180);

/// Messages a second the `load` command sends (paced: a chart moves, the machine is not busy).
const LOAD_MESSAGES_PER_S: u64 = 200;

/// Users `load-a` and `load-b` (signed up on first use) send messages for `length`, on a
/// thread of their own; it stops by itself at the end, or when the server goes away.
fn start_load(tcp: std::net::SocketAddr, length: Duration) {
    use ringchat_bench::client::Client;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the load");
        rt.block_on(async move {
            let pw = super::PASSWORD;
            let Ok((mut a, _)) = Client::signup(tcp, "load-a", pw, "load-a-1").await else {
                return;
            };
            let Ok((mut reader, b)) = Client::signup(tcp, "load-b", pw, "load-b-1").await else {
                return;
            };
            // The recipient reads its pushes (one that did not would be kicked as slow).
            tokio::spawn(
                async move { while let Ok(Some(_)) = reader.next_event_untimed().await {} },
            );
            let end = Instant::now() + length;
            let gap = Duration::from_micros(1_000_000 / LOAD_MESSAGES_PER_S);
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                if !matches!(
                    a.send_text(b.user_id, &format!("load{n}"), "load").await,
                    Ok(Ok(_))
                ) {
                    return;
                }
                tokio::time::sleep(gap).await;
            }
        });
    });
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts a server (with `env` overrides) and runs `web-tests/<script>` against it; the
/// screenshots named in `shots` must have been written.
pub fn run_e2e(script: &str, env: &[(&str, &str)], shots: &[&str]) {
    run_e2e_on(script, env, shots, Target::Chat);
}

/// Which listener a browser script is pointed at.
pub enum Target {
    /// The chat page on the WebSocket listener.
    Chat,
    /// The admin dashboard: operators `root` (admin) and `watcher` (viewer) exist, both with
    /// the password in the script's `ADMIN_PASSWORD` environment variable; the chat page's
    /// URL is in `CHAT_URL`.
    Admin,
    /// The admin dashboard, with these viewer operators too: a script's failed logins name
    /// them as markers to find in the logs (a failed login by a name no operator has is
    /// logged without the name).
    AdminWithOperators(&'static [&'static str]),
}

/// [`run_e2e`] against `target`.
pub fn run_e2e_on(script: &str, env: &[(&str, &str)], shots: &[&str], target: Target) {
    let mut server = TestServer::start(env);
    let url_of = |server: &TestServer| match target {
        Target::Chat => format!("http://{}/", server.ws),
        Target::Admin | Target::AdminWithOperators(_) => format!("http://{}/", server.admin),
    };
    let extra = match target {
        Target::Chat => None,
        Target::Admin => Some(&[][..]),
        Target::AdminWithOperators(names) => Some(names),
    };
    if let Some(extra) = extra {
        let extra = extra.iter().map(|name| (*name, "viewer"));
        for (name, role) in [("root", "admin"), ("watcher", "viewer")]
            .into_iter()
            .chain(extra)
        {
            let out = server.admin_cli(
                &["add-user", name, "--role", role],
                &format!("{}\n", super::admin::OPERATOR_PASSWORD),
            );
            assert!(out.status.success(), "add-user {name}: {out:?}");
        }
    }
    let url = url_of(&server);
    // The chat port (its page, and `/ws` for a script's own protocol client).
    let chat_url = format!("http://{}/", server.ws);
    let mut operator = None;
    run_script(
        script,
        &url,
        &[("CHAT_URL", chat_url)],
        shots,
        |command| match command {
            // SIGTERM, then started again on the same data dir; answered with its new URL.
            "restart-server" => {
                server.stop();
                server.restart();
                format!("restarted {}", url_of(&server))
            }
            // `@load SECONDS`: two users send to each other for that long (at most 30 s), so
            // that the dashboard's charts move; answered at once.
            _ if command.starts_with("load ") => {
                let seconds = command[5..].trim().parse::<u64>().unwrap_or(5).min(30);
                start_load(server.tcp, Duration::from_secs(seconds));
                "loading".to_owned()
            }
            // `@notify JSON`: an operator posts that notification by the admin API; the answer
            // is the HTTP status and the JSON reply.
            _ if command.starts_with("notify ") => {
                let body: serde_json::Value =
                    serde_json::from_str(&command[7..]).expect("@notify takes a JSON body");
                let operator = operator.get_or_insert_with(|| server.api_key("e2e-ops", "admin"));
                let (status, reply) = operator.post("/api/notifications", body);
                format!("{status} {reply}")
            }
            _ => panic!("the browser test asked for {command:?}, which is unknown"),
        },
    );
}

/// Runs `web-tests/<script> URL ARTIFACT_DIR` (with `env` and `ADMIN_PASSWORD`); a line
/// `@command` on its stdout is handed to `on_command`, whose one-line answer goes to its stdin.
/// The script must succeed and the screenshots named in `shots` must have been written.
pub fn run_script(
    script: &str,
    url: &str,
    env: &[(&str, String)],
    shots: &[&str],
    mut on_command: impl FnMut(&str) -> String,
) {
    let root = repo_root();
    let chromium =
        std::env::var("RINGCHAT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install it with `apt-get install -y chromium` (bash .ci/run does)"
    );
    assert!(
        root.join("web-tests/node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix web-tests` (bash .ci/run does)"
    );
    // target/test-artifacts/, kept after the run.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../test-artifacts")
        .canonicalize()
        .unwrap_or_else(|_| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
            std::fs::create_dir_all(&dir).unwrap();
            dir.canonicalize().unwrap()
        });
    for shot in shots {
        // A screenshot left by an earlier run must not pass for this run's.
        let _ = std::fs::remove_file(artifacts.join(format!("{shot}.png")));
    }
    let mut child = Command::new("node")
        .arg(root.join("web-tests").join(script))
        .arg(url)
        .arg(&artifacts)
        .env("RINGCHAT_CHROMIUM", &chromium)
        .env("ADMIN_PASSWORD", super::admin::OPERATOR_PASSWORD)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node (is Node.js installed?)");
    // The script's output is passed on; its `@command` lines are answered on its stdin.
    let mut to_script = child.stdin.take().expect("piped stdin");
    let from_script = child.stdout.take().expect("piped stdout");
    let (requests, requested) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_script).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(command) = line.strip_prefix('@') {
                let _ = requests.send(command.to_owned());
            }
        }
    });
    let deadline = Instant::now() + E2E_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{script} did not finish in {E2E_TIMEOUT:?}");
        }
        if let Ok(command) = requested.recv_timeout(Duration::from_millis(100)) {
            let answer = on_command(&command);
            writeln!(to_script, "{answer}").unwrap();
        }
    };
    assert!(
        status.success(),
        "{script} failed ({status}); screenshots in {}",
        artifacts.display()
    );
    for shot in shots {
        let path = artifacts.join(format!("{shot}.png"));
        assert!(path.exists(), "{} was not written", path.display());
    }
}

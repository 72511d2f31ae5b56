//! The chat page in a real browser: starts the server and runs a script of `web-tests/`
//! (Playwright driving headless Chromium). `chat.e2e.mjs`: a desktop page and a phone-sized
//! page chat, a send fails and is retried, the connection is cut and recovers, the server
//! restarts under it (asked for by the script on its stdout). `contacts.e2e.mjs`: search,
//! friend requests, presence, profiles and blocks through the Contacts view. `groups.e2e.mjs`:
//! three users create a group, chat, mention, read, invite and leave. Screenshots of both
//! widths go to `target/test-artifacts/`.
//! Needs `/usr/bin/chromium` and `npm ci --prefix web-tests`; `.ci/run` installs both. Missing
//! either is a failure that says what to install, never a silent skip.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestServer;

const E2E_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn two_browser_pages_chat_through_the_websocket_listener() {
    run_e2e(
        "chat.e2e.mjs",
        &[],
        &[
            "desktop-chat",
            "desktop-failed-send",
            "desktop-connection-lost",
            "phone-login",
            "phone-list",
            "phone-chat",
        ],
    );
}

#[test]
fn contacts_view_in_browser_pages_search_request_presence_profile_block() {
    run_e2e(
        "contacts.e2e.mjs",
        // Presence drops (away, invisible) show after the quiet period: short here.
        &[("PRESENCE__QUIET_PERIOD_MS", "200")],
        &[
            "desktop-contacts",
            "desktop-blocked-chat",
            "desktop-presence-menu",
            "desktop-profile",
            "phone-contacts",
            "phone-contacts-request",
            "phone-profile",
            "phone-send-refused",
        ],
    );
}

#[test]
fn groups_in_browser_pages_create_chat_mention_read_count_invite_leave() {
    run_e2e(
        "groups.e2e.mjs",
        &[],
        &[
            "desktop-group-info",
            "desktop-group-chat",
            "phone-group-list",
            "phone-group-chat",
            "phone-group-info",
        ],
    );
}

/// Starts a server (with `env` overrides) and runs `web-tests/<script>` against it; the
/// screenshots named in `shots` must have been written.
fn run_e2e(script: &str, env: &[(&str, &str)], shots: &[&str]) {
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
    let mut server = TestServer::start(env);
    let url = format!("http://{}/", server.ws);
    let mut child = Command::new("node")
        .arg(root.join("web-tests").join(script))
        .arg(&url)
        .arg(&artifacts)
        .env("RINGCHAT_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node (is Node.js installed?)");
    // The script's output is passed on; a line `@restart-server` asks us to restart the server
    // (SIGTERM, then start it again on the same data dir); the answer goes to its stdin.
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
        match requested.recv_timeout(Duration::from_millis(100)) {
            Ok(command) if command == "restart-server" => {
                server.stop();
                server.restart();
                writeln!(to_script, "restarted http://{}/", server.ws).unwrap();
            }
            Ok(command) => panic!("the browser test asked for {command:?}, which is unknown"),
            Err(_) => {}
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

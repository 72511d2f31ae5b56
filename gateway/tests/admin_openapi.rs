//! A property-based run of the admin API's own OpenAPI document against the running server
//! (schemathesis): generated requests, valid and invalid, must never get a 5xx, and every
//! answer must match the document (status codes, content types, schemas, headers). Needs
//! schemathesis (`scripts/test.sh` installs it into `target/schemathesis-venv`); missing it is a
//! failure that says how to install it, never a silent skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use common::pipe::Captured;

/// Test cases per operation; each is one request, so the run stays well under a minute.
const EXAMPLES_PER_OPERATION: &str = "40";
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("RINGCHAT_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/schemathesis")
}

#[test]
fn generated_requests_get_no_5xx_and_answers_that_match_the_document() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: run `bash scripts/test.sh` (it installs schemathesis into \
         target/schemathesis-venv) or set RINGCHAT_SCHEMATHESIS",
        st.display()
    );
    let server = TestServer::start(&[]);
    let out = server.admin_cli(&["add-key", "schemathesis", "--role", "admin"], "");
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // schemathesis keeps a cache in its working directory: not in the source tree.
    let scratch = tempfile::tempdir().unwrap();
    let mut child = Command::new(&st)
        .current_dir(scratch.path())
        .arg("run")
        .arg(format!("http://{}/api/openapi.json", server.admin))
        .args(["--header", &format!("Authorization: Bearer {key}")])
        // Every check but "schema-valid data is accepted": the server also refuses values
        // the schema cannot express (a name already taken, a limit of a config's size).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // Revoking keys by name would, in the stateful phase, revoke the run's own key; the live
        // log stream is a stream, not a request and an answer.
        .args(["--exclude-path-regex", "^/api/(keys/|logs/stream)"])
        .args(["--max-examples", EXAMPLES_PER_OPERATION, "--workers", "1"])
        .args([
            "--seed",
            "20261202",
            "--request-timeout",
            "20",
            "--no-color",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    // Both pipes drained as the run goes: its report can be longer than a pipe holds.
    let stdout = Captured::start(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish in {RUN_TIMEOUT:?}; its output so far:\n{}{}",
                stdout.so_far(),
                stderr.so_far()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = format!("{}{}", stdout.finish(), stderr.finish());
    assert!(status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "no test cases ran:\n{text}");
    assert!(
        server.log_lines_with("panicked") == 0,
        "the server panicked:\n{}",
        server.log_tail()
    );
}

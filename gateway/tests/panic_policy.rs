//! A panic on one of the server's own threads ends the process (the supervisor restarts it);
//! one on a runtime's worker does not. Each case runs in a child process of this test binary,
//! which installs the policy, panics on a thread of the given name and exits 0 if it survived.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "RINGCHAT_PANIC_POLICY_THREAD";

/// Runs this test again in a child that panics on a thread called `thread`.
fn panic_in_child(test: &str, thread: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD, thread)
        .output()
        .expect("running the child")
}

/// In the child: panic on a thread named as told, then exit 0 if the process is still here.
fn child_if_asked() {
    let Ok(name) = std::env::var(CHILD) else {
        return;
    };
    ringchat_gateway::panic_policy::install();
    let joined = std::thread::Builder::new()
        .name(name)
        .spawn(|| panic!("a test panic"))
        .expect("spawning")
        .join();
    assert!(joined.is_err(), "the thread panicked");
    std::process::exit(0);
}

#[test]
fn a_shard_panic_aborts_the_process() {
    child_if_asked();
    let out = panic_in_child("a_shard_panic_aborts_the_process", "rc-shard-1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("thread rc-shard-1 panicked; aborting"),
        "{stderr}"
    );
}

#[test]
fn a_sequencer_panic_aborts_the_process() {
    child_if_asked();
    let out = panic_in_child("a_sequencer_panic_aborts_the_process", "rc-commit");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out.status);
}

#[test]
fn a_panic_in_a_runtime_worker_does_not() {
    child_if_asked();
    let out = panic_in_child("a_panic_in_a_runtime_worker_does_not", "rc-backend-0");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

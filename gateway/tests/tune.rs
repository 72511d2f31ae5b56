//! `ringchat tune check` and `tune plan` run for real on this machine and on recorded trees,
//! the configuration snippets of `tuning/` checked by `check-config`, and the server's thread
//! names as the kernel shows them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestServer;

fn ringchat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .env_clear()
        .args(args)
        .output()
        .expect("run ringchat")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `check-config` on a snippet, with the `--host-cores` its `# check-config --host-cores
/// LIST` line names (the cores of the host it was written for).
fn check_config(snippet: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snippet.toml");
    std::fs::write(&file, snippet).unwrap();
    let mut args = vec!["check-config".to_owned(), file.display().to_string()];
    if let Some(cores) = snippet
        .lines()
        .find_map(|l| l.strip_prefix("# check-config --host-cores "))
    {
        args.push("--host-cores".to_owned());
        args.push(cores.trim().to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ringchat(&args);
    assert!(
        out.status.success(),
        "{what}: check-config failed:\n{}\n{snippet}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TOML snippet of `tune plan`'s output: from its header line to the interrupt section.
fn plan_snippet(plan: &str) -> String {
    let start = plan
        .find("# ringchat tune plan:")
        .unwrap_or_else(|| panic!("no snippet in:\n{plan}"));
    let end = plan[start..]
        .find("# NIC interrupts")
        .map_or(plan.len(), |e| start + e);
    plan[start..end].to_owned()
}

#[test]
fn tune_check_json_on_this_machine_has_the_shape_and_the_exit_status() {
    let out = ringchat(&["tune", "check", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let object = json.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), vec!["checks"]);
    let checks = json["checks"].as_array().unwrap();
    let mut critical = false;
    for c in checks {
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["name", "recommended", "status", "value", "why"],
            "{c}"
        );
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "critical"].contains(&status), "{c}");
        critical |= status == "critical";
    }
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "cores",
        "pinning.cores",
        "pinning.overlap",
        "pinning.numa",
        "pinning.irq",
        "rlimit.nofile",
        "rlimit.memlock",
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "net.ipv4.tcp_mem",
        "transparent_hugepage",
        "cpu.governor",
        "kernel.io_uring_disabled",
        "seccomp",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(out.status.code(), Some(if critical { 1 } else { 0 }));
    // The same in words.
    let text = ringchat(&["tune", "check"]);
    assert_eq!(text.status.code(), out.status.code());
    assert!(stdout(&text).contains("recommended:"));
}

#[test]
fn tune_check_exit_status_follows_a_recorded_critical_host() {
    let root = fixture("bare-64core-2numa");
    let out = ringchat(&["tune", "check", "--json", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nofile = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rlimit.nofile")
        .unwrap();
    assert_eq!(nofile["status"], "critical");

    let root = fixture("pinned-irqs-16core");
    let out = ringchat(&["tune", "check", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let out = ringchat(&["tune", "check", "--root", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("online"));
}

#[test]
fn tune_plan_snippets_pass_check_config() {
    // This machine, as it is.
    let out = ringchat(&["tune", "plan"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("CPUAffinity="), "{text}");
    check_config(&plan_snippet(&text), "tune plan on this machine");

    // A recorded two-socket host: valid for its cores, not for this machine's.
    let root = fixture("bare-64core-2numa");
    let out = ringchat(&["tune", "plan", "--root", root.to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("echo 0 > /proc/irq/101/smp_affinity_list"),
        "{text}"
    );
    let snippet = plan_snippet(&text);
    check_config(&snippet, "tune plan for bare-64core-2numa");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, &snippet).unwrap();
    let here = ringchat(&["check-config", file.to_str().unwrap()]);
    if ringchat_gateway::config::online_cores().len() < 64 {
        assert!(!here.status.success());
        assert!(String::from_utf8_lossy(&here.stderr).contains("is not online"));
    }
    let bad = ringchat(&[
        "check-config",
        file.to_str().unwrap(),
        "--host-cores",
        "0-x",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--host-cores"));
}

#[test]
fn tuning_guide_snippets_pass_check_config() {
    let dir = repo().join("tuning");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            check_config(&text, &name);
            checked += 1;
        } else if name.ends_with(".md") {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("```toml\n") {
                let body = &rest[start + "```toml\n".len()..];
                let end = body.find("```").expect("a closed code block");
                check_config(&body[..end], &format!("{name}, block {}", checked + 1));
                checked += 1;
                rest = &body[end + 3..];
            }
        }
    }
    assert!(
        checked >= 4,
        "the guide's layouts for 8, 16, 64 and 2×32 cores: {checked}"
    );
}

#[test]
fn thread_names_fit_the_kernel_and_tell_shards_apart() {
    let cores = ringchat_gateway::config::online_cores();
    let shards: Vec<usize> = cores.iter().copied().take(2).collect();
    let list = format!(
        "[{}]",
        shards
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let server = TestServer::start(&[("GATEWAY__CORES", list.as_str())]);
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim_end().to_owned());
        }
    }
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("rc-")).collect();
    // The kernel cuts a longer name to 15 bytes silently: a cut one would not read whole.
    for n in &ours {
        assert!(
            whole_name(n),
            "{n} is not one of the server's names, cut? {names:?}"
        );
    }
    for i in 0..shards.len() {
        let shard = format!("rc-shard-{i}");
        assert_eq!(
            ours.iter().filter(|n| ***n == shard).count(),
            1,
            "{shard} in {names:?}"
        );
    }
    for expected in ["rc-backend-0", "rc-commit", "rc-log-console"] {
        assert!(
            ours.iter().any(|n| *n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("ringchat-")),
        "an old long name: {names:?}"
    );
}

/// `storage.background_threads` is the number of the embedded engine's flush and compaction
/// threads: one by default (with more, fjall's first one busy-loops while another compacts).
#[test]
fn the_store_runs_as_many_background_threads_as_configured() {
    let engine_threads = |server: &TestServer| {
        std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim_end() == "fjall:worker")
            .count()
    };
    // On the embedded engine even in the PostgreSQL pass (`RINGCHAT_TEST_STORE=postgres`).
    let embedded = ("STORAGE__ENGINE", "embedded");
    let by_default = TestServer::start(&[embedded]);
    assert_eq!(engine_threads(&by_default), 1);
    drop(by_default);
    let three = TestServer::start(&[embedded, ("STORAGE__BACKGROUND_THREADS", "3")]);
    assert_eq!(engine_threads(&three), 3);
}

/// A name of `ringchat_backend::threads`, whole: `rc-shard-N`, `rc-backend-N`, a fixed one.
fn whole_name(name: &str) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered("rc-shard-")
        || numbered("rc-backend-")
        || ["rc-log-console", "rc-log-file", "rc-hangup"].contains(&name)
        || ringchat_backend::threads::FIXED.contains(&name)
}

/// A hard limit that does not hold the server's own reserve (8192 on 2 cores with the default
/// configuration: 1024 + 2 × files.conns_max + admin.conns_max + 74 per shard) is what `serve`
/// refuses to start with ("no room for clients"): critical, exit 1, not a warning.
#[test]
fn tune_check_calls_a_limit_serve_refuses_critical() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture("vm-2core"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(cp.success());
    let root = tmp.path().join("vm-2core");
    let limits = root.join("proc/self/limits");
    let text: String = std::fs::read_to_string(&limits)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("Max open files") {
                format!(
                    "{:<26}{:<21}{:<21}files     \n",
                    "Max open files", 8192, 8192
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&limits, text).unwrap();
    let out = ringchat(&["tune", "check", "--json", "--root", root.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nofile = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rlimit.nofile")
        .unwrap();
    assert_eq!(nofile["value"], "soft 8192, hard 8192", "{nofile}");
    assert_eq!(nofile["status"], "critical", "{nofile}");
    assert!(
        nofile["why"].as_str().unwrap().contains("refuses to start"),
        "{nofile}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

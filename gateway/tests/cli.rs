//! The command line: check-config and start-up errors.

use std::process::Command;

fn ringchat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringchat"));
    c.env_clear();
    c
}

#[test]
fn check_config_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[gateway]\ntcp_listen = \"here\"\nidle_timeout_ms = -5\nwhat = 1\n[limits]\nsync_page_max = 0\n",
    )
    .unwrap();
    let out = ringchat().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 problem(s)"), "{err}");
    for needle in [
        "gateway.tcp_listen",
        "gateway.idle_timeout_ms",
        "gateway.what = 1: unknown key",
        "limits.sync_page_max",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
}

#[test]
fn check_config_names_file_and_line_echoes_the_value_and_tells_env_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(
        &file,
        "# ops\n[gateway]\ntcp_listen = \"chat.example.com:7000\"\nidle_timout_ms = 5\n\n[limits]\nmessages_per_s_max = 0\n",
    )
    .unwrap();
    let out = ringchat()
        .arg("check-config")
        .arg(&file)
        .env("RINGCHAT_STORAGE__DURABILITY", "sometimes")
        .env("RINGCHAT_GATEWAY__CORSE", "[0]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for needle in [
        format!("{f}:3: gateway.tcp_listen = \"chat.example.com:7000\": invalid socket address syntax: expected IP:PORT"),
        "a host name is not accepted".to_owned(),
        format!("{f}:4: gateway.idle_timout_ms = 5: unknown key (did you mean gateway.idle_timeout_ms?)"),
        format!("{f}:7: limits.messages_per_s_max = 0: must be at least 1"),
        "environment variable RINGCHAT_STORAGE__DURABILITY=sometimes: storage.durability: unknown variant `sometimes`".to_owned(),
        "environment variable RINGCHAT_GATEWAY__CORSE=[0]: gateway.corse: unknown key (did you mean gateway.cores?)".to_owned(),
    ] {
        assert!(err.contains(&needle), "{needle} missing in:\n{err}");
    }
    assert!(err.contains("5 problem(s)"), "{err}");
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringchat.example.toml");
    let out = ringchat()
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A load balancer's range that is not one is named with its key, before anything starts.
#[test]
fn check_config_names_a_bad_proxy_protocol_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(
        &file,
        "[gateway]\nproxy_protocol_from = [\"10.0.0.0/8\", \"10.1.0.0/33\"]\n",
    )
    .unwrap();
    let out = ringchat().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let located = format!("{}:2: gateway.proxy_protocol_from = ", file.display());
    assert!(err.contains(&located), "{err}");
    assert!(
        err.contains("\"10.1.0.0/33\" is neither an IP address nor a CIDR range"),
        "{err}"
    );
    assert!(err.contains("1 problem(s)"), "{err}");
}

/// Trusting every address to send PROXY headers would let any client claim any address:
/// check-config refuses it, naming the entry.
#[test]
fn check_config_refuses_trusting_every_address_for_proxy_headers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(
        &file,
        "[gateway]\nproxy_protocol_from = [\"10.0.0.1/32\", \"0.0.0.0/0\", \"::/0\"]\n",
    )
    .unwrap();
    let out = ringchat().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for every in [
        "\"0.0.0.0/0\" trusts every address",
        "\"::/0\" trusts every address",
    ] {
        assert!(err.contains(every), "{err}");
    }
    assert!(err.contains("2 problem(s)"), "{err}");
}

#[test]
fn serve_refuses_a_bad_config_and_says_why() {
    let out = ringchat()
        .arg("serve")
        .env("RINGCHAT_GATEWAY__DRIVER", "turbo")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.driver"), "{err}");
}

#[test]
fn serve_names_the_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = ringchat()
        .arg("serve")
        .env("RINGCHAT_GATEWAY__TCP_LISTEN", &addr)
        .env("RINGCHAT_ADMIN__LISTEN", "")
        .env("RINGCHAT_STORAGE__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}

/// `ringchat check-config FILE` with one setting overridden from the environment.
fn check_config_with(file: &std::path::Path, var: &str, value: &str) -> std::process::Output {
    ringchat()
        .arg("check-config")
        .arg(file)
        .env(var, value)
        .output()
        .unwrap()
}

#[test]
fn the_journal_sync_interval_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(&file, "[storage]\ndurability = \"none\"\n").unwrap();
    let check =
        |ms: u64| check_config_with(&file, "RINGCHAT_STORAGE__JOURNAL_SYNC_MS", &ms.to_string());
    let at_the_bound = check(3_600_000);
    assert!(at_the_bound.status.success(), "{at_the_bound:?}");
    let over = check(3_600_001);
    assert!(!over.status.success());
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(
        err.contains("storage.journal_sync_ms: must be at most 3600000"),
        "{err}"
    );
}

#[test]
fn the_store_background_threads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(&file, "[storage]\n").unwrap();
    let check = |n: &str| check_config_with(&file, "RINGCHAT_STORAGE__BACKGROUND_THREADS", n);
    for ok in ["1", "64"] {
        let out = check(ok);
        assert!(out.status.success(), "{ok}: {out:?}");
    }
    for bad in ["0", "65"] {
        let out = check(bad);
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("storage.background_threads: must be between 1 and 64"),
            "{err}"
        );
    }
}

/// Queue and group sizes and the worker count have an upper bound: past it check-config names
/// the key, where serve used to panic (a channel above 2^61 permits) or abort after the store
/// opened (a commit group's batch allocated whole).
#[test]
fn queue_group_and_worker_sizes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    std::fs::write(&file, "[storage]\n").unwrap();
    for (var, key, max) in [
        (
            "RINGCHAT_BACKEND__QUEUE_REQUESTS_MAX",
            "backend.queue_requests_max",
            1_048_576u64,
        ),
        (
            "RINGCHAT_GATEWAY__QUEUE_EVENTS_MAX",
            "gateway.queue_events_max",
            1_048_576,
        ),
        (
            "RINGCHAT_STORAGE__COMMIT_GROUP_MAX",
            "storage.commit_group_max",
            65_536,
        ),
        (
            "RINGCHAT_BACKEND__WORKER_THREADS",
            "backend.worker_threads",
            1024,
        ),
        (
            "RINGCHAT_BACKEND__BLOCKING_THREADS_MAX",
            "backend.blocking_threads_max",
            1024,
        ),
    ] {
        let at_the_bound = check_config_with(&file, var, &max.to_string());
        assert!(
            at_the_bound.status.success(),
            "{var}={max}: {at_the_bound:?}"
        );
        for over in [max + 1, 100_000_000, 1 << 62] {
            let out = check_config_with(&file, var, &over.to_string());
            assert!(!out.status.success(), "{var}={over} accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("{key}: must be between 1 and {max}")),
                "{var}={over}: {err}"
            );
        }
    }
}

/// The tail cache wraps the embedded store only: with a networked one a nonzero
/// `storage.tail_cache_bytes` is a problem (it used to be ignored without a word), 0 is not.
#[test]
fn a_tail_cache_on_a_networked_store_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringchat.toml");
    let config = |engine: &str, bytes: u64| {
        format!(
            "[storage]\nengine = \"{engine}\"\ntail_cache_bytes = {bytes}\n\
             [storage.postgres]\nurl = \"postgres://ringchat@127.0.0.1:5432/ringchat\"\n\
             [storage.scylla]\nhosts = [\"127.0.0.1:9042\"]\nlocal_datacenter = \"dc1\"\n"
        )
    };
    let check = |engine: &str, bytes: u64| {
        std::fs::write(&file, config(engine, bytes)).unwrap();
        ringchat().arg("check-config").arg(&file).output().unwrap()
    };
    for engine in ["postgres", "scylla"] {
        let out = check(engine, 1 << 20);
        assert!(!out.status.success(), "{engine}: a tail cache accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let needle = format!(
            "{}:3: storage.tail_cache_bytes = 1048576: only the embedded store has a tail cache",
            file.display()
        );
        assert!(
            err.contains(&needle),
            "{engine}: {needle} missing in:\n{err}"
        );
        assert!(err.contains("1 problem(s)"), "{engine}: {err}");
        let off = check(engine, 0);
        assert!(off.status.success(), "{engine}: {off:?}");
    }
    let embedded = check("embedded", 1 << 20);
    assert!(embedded.status.success(), "{embedded:?}");
}

/// Commands that write into a data dir refuse one another user owns (root's `ringchat admin …`
/// on a .deb install, where the service runs as `ringchat`, left a credentials file the server
/// could not read) before writing anything, and say whom to run as.
#[test]
fn commands_that_write_into_a_data_dir_refuse_one_another_user_owns() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(tmp.path()).unwrap().uid();
    // As root: a dir of `nobody`. Otherwise: `/`, which is root's.
    let data = if me == 0 {
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        data
    } else {
        std::path::PathBuf::from("/")
    };
    let owner = std::fs::metadata(&data).unwrap().uid();
    assert_ne!(owner, me);
    let backup = tmp.path().join("backup");
    let runs: [(&[&str], &str); 4] = [
        (
            &["admin", "add-key", "deploy", "--role", "viewer"],
            "admin add-key",
        ),
        (&["admin", "add-chat-user", "alice"], "admin add-chat-user"),
        (&["backup", "--to", backup.to_str().unwrap()], "backup"),
        (&["restore", "--from", backup.to_str().unwrap()], "restore"),
    ];
    for (args, command) in runs {
        let out = ringchat()
            .args(args)
            .env("RINGCHAT_STORAGE__DATA_DIR", &data)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran: {err}");
        assert!(
            err.contains(&format!("is owned by uid {owner}"))
                && err.contains(&format!("ringchat {command} …")),
            "{args:?}: {err}"
        );
    }
    if me == 0 {
        let left: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
        assert!(left.is_empty(), "written anyway: {left:?}");
    }
    assert!(!backup.exists());
}

/// On Kubernetes' volume for a group (`fsGroup`: the mount point stays root's, its group is the
/// server's and may write), the server's user may run `admin …`: the mount point's owner is
/// not whose data it is, what the server made in it is. Another uid's file there still refuses.
#[test]
fn a_group_volume_lets_the_user_whose_files_are_in_it_write() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, chown};
    use std::os::unix::process::CommandExt as _;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        std::fs::metadata(tmp.path()).unwrap().uid(),
        0,
        "this test needs root to make files of other uids (CI runs as root)"
    );
    const SERVER: u32 = 10001;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(tmp.path(), 0o755);
    // What the kubelet leaves: root:10001 2775, mkfs's lost+found, the server's admin/.
    let data = tmp.path().join("data");
    let admin = data.join("admin");
    let lost = data.join("lost+found");
    for d in [&data, &admin, &lost] {
        std::fs::create_dir(d).unwrap();
    }
    chown(&data, Some(0), Some(SERVER)).unwrap();
    mode(&data, 0o2775);
    chown(&lost, Some(0), Some(SERVER)).unwrap();
    chown(&admin, Some(SERVER), Some(SERVER)).unwrap();
    // The server's uid may not reach the build's binary (a checkout under a 0700 directory,
    // such as a fresh clone in `mktemp -d`): it runs a copy from the open temp dir, from there.
    let bin = copy_of_the_binary(tmp.path());
    let add_user = |name: &str| {
        let mut command = Command::new(&bin);
        command
            .env_clear()
            .current_dir(tmp.path())
            .args(["admin", "add-user", name, "--role", "admin"])
            .env("RINGCHAT_STORAGE__DATA_DIR", &data)
            .uid(SERVER)
            .gid(SERVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_copied(&mut command);
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a long enough password\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add_user("alice");
    assert!(out.status.success(), "refused: {out:?}");
    for entry in std::fs::read_dir(&admin).unwrap() {
        let path = entry.unwrap().path();
        let owner = std::fs::metadata(&path).unwrap().uid();
        assert_eq!(owner, SERVER, "{} is uid {owner}'s", path.display());
    }
    // A file of another uid in the volume: its owner is named, nothing is written.
    chown(&admin, Some(65534), Some(SERVER)).unwrap();
    let out = add_user("bob");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran: {err}");
    assert!(
        err.contains(&format!("{} is owned by uid 65534", admin.display())),
        "{err}"
    );
}

/// Only a root-owned mount point is a group's volume: a group-writable dir another user owns
/// is that user's, even empty (else a group member could write files its owner cannot read).
#[test]
fn a_group_writable_dir_another_user_owns_is_not_a_group_volume() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, chown};
    use std::os::unix::process::CommandExt as _;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        std::fs::metadata(tmp.path()).unwrap().uid(),
        0,
        "this test needs root to make files of other uids (CI runs as root)"
    );
    const GROUP: u32 = 10001;
    const CALLER: u32 = 10002;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(tmp.path(), 0o755);
    // Empty, nobody's, group-writable by the caller's group.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chown(&data, Some(65534), Some(GROUP)).unwrap();
    mode(&data, 0o2770);
    // The caller's uid may not reach the build's binary (see the test above): a copy here.
    let bin = copy_of_the_binary(tmp.path());
    let mut child = spawn_copied(
        Command::new(&bin)
            .env_clear()
            .current_dir(tmp.path())
            .args(["admin", "add-user", "alice", "--role", "admin"])
            .env("RINGCHAT_STORAGE__DATA_DIR", &data)
            .uid(CALLER)
            .gid(GROUP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    use std::io::Write as _;
    // Refused before it reads the password: a closed pipe is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran: {err}");
    assert!(
        err.contains(&format!("{} is owned by uid 65534", data.display())),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
    assert!(left.is_empty(), "written anyway: {left:?}");
}

/// SIGHUP never ends a command (`kill -HUP $(pidof ringchat)` reaches CLI runs too): it is
/// caught from the start, and the command carries on.
#[test]
fn a_hangup_does_not_end_a_command() {
    use std::io::Write as _;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = ringchat()
        .args(["admin", "add-user", "alice", "--role", "admin"])
        .env("RINGCHAT_STORAGE__DATA_DIR", tmp.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Waits (bounded) until the process catches SIGHUP (bit 0 of SigCgt), as it must from
    // its first line: until then the signal's default action would end it.
    let status = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&status).unwrap();
        let caught = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        if caught & 1 != 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGHUP is not caught: it would end the command");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A certificate and its key from `ringchat gen-cert`, as `NAME.crt` and `NAME.key` in `dir`.
fn gen_cert(dir: &std::path::Path, name: &str) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = ringchat()
        .arg("gen-cert")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (cert.display().to_string(), key.display().to_string())
}

/// check-config lists every problem at once: a TLS pair that does not load is named beside a
/// problem of the values (it was checked only once the values had none).
#[test]
fn check_config_lists_tls_problems_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = gen_cert(dir.path(), "a");
    let (_, key_b) = gen_cert(dir.path(), "b");
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "[gateway]\nwhat = 1\n[admin.tls]\ncert_path = \"{cert_a}\"\nkey_path = \"{key_b}\"\n"
        ),
    )
    .unwrap();
    let out = ringchat().arg("check-config").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{err}");
    for needle in [
        "gateway.what = 1: unknown key",
        "admin.tls: ",
        "2 problem(s)",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
}

/// check-config says "ok" only to what serve would start with: TLS files that load (each key
/// matching its certificate) and one port per listener; each problem names its key.
#[test]
fn check_config_refuses_what_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = gen_cert(dir.path(), "a");
    let (_, key_b) = gen_cert(dir.path(), "b");
    let cluster = "[storage]\nengine = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@127.0.0.1:1/db\"\n[files]\nenabled = false\n[cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:1\"\nnode_id = \"n1\"\nclient_addrs = [\"ws://127.0.0.1:7001/ws\"]\npeer_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "[gateway.tls]\ncert_path = \"/nonexistent/c.pem\"\nkey_path = \"/nonexistent/k.pem\"\n"
                .to_owned(),
            "gateway.tls: ",
        ),
        (
            format!("[admin.tls]\ncert_path = \"{cert_a}\"\nkey_path = \"{key_b}\"\n"),
            "admin.tls: ",
        ),
        (
            format!(
                "{cluster}[cluster.tls]\ncert_path = \"/nonexistent/c.pem\"\nkey_path = \"{key_a}\"\nca_path = \"{cert_a}\"\n"
            ),
            "cluster.tls: ",
        ),
        (
            "[gateway]\ntcp_listen = \"0.0.0.0:7000\"\nws_listen = \"0.0.0.0:7000\"\n".to_owned(),
            "gateway.ws_listen = \"0.0.0.0:7000\": the same port as gateway.tcp_listen",
        ),
        (
            "[gateway]\ntcp_listen = \"0.0.0.0:7000\"\n[admin]\nlisten = \"127.0.0.1:7000\"\n"
                .to_owned(),
            "admin.listen = \"127.0.0.1:7000\": the same port as gateway.tcp_listen",
        ),
    ];
    for (text, needle) in cases {
        let file = dir.path().join("t.toml");
        std::fs::write(&file, &text).unwrap();
        let out = ringchat().arg("check-config").arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
    // A good pair, and one port on two different addresses, pass.
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        format!(
            "[gateway]\ntcp_listen = \"127.0.0.1:7000\"\nws_listen = \"127.0.0.2:7000\"\n[gateway.tls]\ncert_path = \"{cert_a}\"\nkey_path = \"{key_a}\"\n"
        ),
    )
    .unwrap();
    let out = ringchat().arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A copy of the server's binary in `dir`, readable and runnable by every uid.
fn copy_of_the_binary(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("ringchat");
    std::fs::copy(env!("CARGO_BIN_EXE_ringchat"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Spawns a binary just written by [`copy_of_the_binary`]. A child another test thread forks
/// while the copy is open for writing holds that descriptor until it execs, and an exec of the
/// file meanwhile fails with ETXTBSY (rust-lang/rust#114554): retried until it goes, within a
/// deadline.
fn spawn_copied(cmd: &mut Command) -> std::process::Child {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            spawned => return spawned.unwrap(),
        }
    }
}

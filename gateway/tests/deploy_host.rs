//! The bare-metal deployment files: the systemd unit (`deploy/systemd/`) passes
//! `systemd-analyze verify` and waits longer than the server's graceful stop, the server speaks
//! systemd's readiness protocol (a real server, a real notification socket), and the .deb
//! metadata (`[package.metadata.deb]` in gateway/Cargo.toml) names files that exist.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ringchat_gateway::config::Config;

fn repo_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)
}

fn read(file: &str) -> String {
    let path = repo_path(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const UNIT: &str = "deploy/systemd/ringchat.service";

/// `Key=value` lines of the unit, in order (a key may repeat).
fn unit_values(key: &str) -> Vec<String> {
    read(UNIT)
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

fn unit_value(key: &str) -> String {
    match unit_values(key).as_slice() {
        [one] => one.clone(),
        other => panic!("{UNIT}: {key}= {other:?}, expected one"),
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    // verify wants ExecStart's binary to exist: the same unit, started from the built one.
    let installed = "/usr/bin/ringchat";
    let unit = read(UNIT);
    assert!(
        unit_value("ExecStart").starts_with(&format!("{installed} serve ")),
        "{UNIT}: ExecStart"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ringchat.service");
    std::fs::write(
        &copy,
        unit.replace(installed, env!("CARGO_BIN_EXE_ringchat")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze (systemd's tools)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0) naming the file: none allowed.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ringchat.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{stderr}",
        out.status
    );
}

#[test]
fn the_unit_waits_longer_than_the_servers_graceful_stop() {
    let config = Config::load(Some(&repo_path("deploy/ringchat.toml")), []).unwrap();
    // The worst the unit may run: a cluster node with [observe.otlp] on, and room for the
    // store's last flush after the bounded steps.
    let mut worst = config.clone();
    worst.cluster.enabled = true;
    worst.observe.otlp.endpoint = "http://otel-collector.internal:4317".to_owned();
    assert!(worst.observe.otlp.enabled());
    let stop = ringchat_gateway::server::graceful_stop_max(&worst) + Duration::from_secs(10);
    let timeout: u64 = unit_value("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        Duration::from_secs(timeout) > stop,
        "TimeoutStopSec={timeout} but a graceful stop may take {stop:?}"
    );
    assert_eq!(unit_value("KillSignal"), "SIGTERM");
    // The unit writes only where the configuration keeps its files.
    let writable = unit_value("ReadWritePaths");
    for dir in [
        config.storage.data_dir.display().to_string(),
        config.log.dir.clone(),
    ] {
        assert!(
            writable.split_whitespace().any(|w| w == dir),
            "ReadWritePaths={writable} lacks {dir}"
        );
    }
    let filter = unit_values("SystemCallFilter").join(" ");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(filter.contains(call), "SystemCallFilter lacks {call}");
    }
    assert_eq!(unit_value("Type"), "notify");
}

/// What a `Type=notify` unit sees: the server sends READY=1 once it prints its ready line and
/// STOPPING=1 when SIGTERM starts the drain, on the socket named by NOTIFY_SOCKET.
#[test]
fn the_server_notifies_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .arg("serve")
        .env_clear()
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RINGCHAT_GATEWAY__TCP_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__WS_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__CORES", "[0]")
        .env("RINGCHAT_ADMIN__LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_STORAGE__DATA_DIR", dir.path().join("data"))
        .env("RINGCHAT_LOG__FILE", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .expect("spawn ringchat");
    let mut buf = [0u8; 256];
    let mut next = || match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification within the read timeout: {e}; the server's log:\n{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        ),
    };
    let ready = next();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = next();
    let exit = child.wait().unwrap();
    assert_eq!(ready, "READY=1");
    assert_eq!(stopping, "STOPPING=1");
    assert!(exit.success(), "exit after SIGTERM: {exit}");
}

#[test]
fn the_deb_metadata_names_files_that_exist() {
    let manifest: toml::Table = toml::from_str(&read("gateway/Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let gateway = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bins: Vec<&str> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let mut dests = Vec::new();
    for asset in deb["assets"].as_array().expect("assets") {
        let [source, dest, mode] = asset.as_array().unwrap().as_slice() else {
            panic!("asset {asset}: [source, dest, mode]")
        };
        let (source, dest) = (source.as_str().unwrap(), dest.as_str().unwrap());
        u32::from_str_radix(mode.as_str().unwrap(), 8).expect("an octal mode");
        // cargo-deb builds target/release/NAME: one of this package's binaries.
        match source.strip_prefix("target/release/") {
            Some(bin) => assert!(
                bins.contains(&bin),
                "{source}: not a [[bin]] of the gateway"
            ),
            None => assert!(gateway.join(source).is_file(), "{source}: no such file"),
        }
        dests.push(dest.to_owned());
    }
    assert!(dests.iter().any(|d| d == "usr/bin/"));
    // The configuration the unit starts with is installed where ExecStart reads it (a conffile).
    let config = unit_value("ExecStart")
        .split_once("--config ")
        .expect("ExecStart names its --config")
        .1
        .to_owned();
    assert!(
        dests.iter().any(|d| format!("/{d}") == config),
        "no asset installs {config}"
    );

    let scripts = gateway.join(deb["maintainer-scripts"].as_str().unwrap());
    let postinst = std::fs::read_to_string(scripts.join("postinst")).expect("a postinst");
    assert!(
        postinst.contains("adduser --system"),
        "postinst makes the user"
    );
    assert!(
        postinst.contains("#DEBHELPER#"),
        "postinst keeps cargo-deb's systemd snippet"
    );
    let units = &deb["systemd-units"];
    let unit_dir = gateway.join(units["unit-scripts"].as_str().unwrap());
    let unit_name = units["unit-name"].as_str().unwrap();
    let packaged = unit_dir
        .join(format!("{unit_name}.service"))
        .canonicalize()
        .expect("the unit cargo-deb installs");
    assert_eq!(packaged, repo_path(UNIT).canonicalize().unwrap());
}

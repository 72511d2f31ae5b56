//! Logs against the real binary: the JSON-lines files (no colour codes, no storage-engine
//! chatter at the default level, the ready line once), rotation, the live filter, the live tail
//! over Server-Sent Events with its filters, the search with its cursor, the export, and who
//! may do what. Every wait is on an event with a deadline.

mod common;

use common::wait_until;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;
use common::admin::AdminClient;
use common::sse::Sse;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
/// How soon an export's scan slot must come back once its client has gone.
const SLOT_BACK_WITHIN: Duration = Duration::from_secs(5);

fn log_dir(server: &TestServer) -> PathBuf {
    server.data_dir.parent().unwrap().join("ringchat-logs")
}

/// Every line of every log file, oldest file first.
fn file_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn files_are_json_lines_without_colour_or_storage_chatter_and_ready_is_said_once() {
    // Started by hand to read all of stdout and stderr.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .arg("serve")
        .env_clear()
        .env("RINGCHAT_GATEWAY__TCP_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__WS_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_ADMIN__LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_STORAGE__DATA_DIR", &data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ringchat ready") {
                let _ = ready_tx.send(());
            }
            all.push(line);
        }
        all
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    ready_rx.recv_timeout(WAIT).expect("ready");
    let dir = tmp.path().join("ringchat-logs");
    wait_until("the ready event in the log file", || {
        file_lines(&dir)
            .iter()
            .any(|l| l.contains("ringchat ready"))
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");

    let ready_on_stdout = stdout
        .iter()
        .filter(|l| l.contains("ringchat ready"))
        .count();
    assert_eq!(ready_on_stdout, 1, "stdout:\n{}", stdout.join("\n"));
    assert!(
        !stderr.contains("ringchat ready"),
        "stderr repeats it:\n{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "colour codes on a pipe:\n{stderr}"
    );
    assert!(stderr.contains("shard running"), "stderr logs:\n{stderr}");
    assert!(
        !stderr.contains("Creating database"),
        "fjall's INFO at the default level:\n{stderr}"
    );

    let lines = file_lines(&dir);
    assert!(!lines.is_empty());
    let mut ready_in_file = 0;
    for line in &lines {
        assert!(!line.contains('\x1b'), "colour code in a file: {line}");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        let target = v["target"].as_str().unwrap();
        assert!(
            !(target.starts_with("fjall") || target.starts_with("lsm_tree"))
                || v["level"] != "INFO",
            "storage INFO in the file: {line}"
        );
        if v["msg"] == "ringchat ready" {
            ready_in_file += 1;
            assert!(v["fields"]["tcp"].is_string(), "{line}");
        }
    }
    assert_eq!(ready_in_file, 1);
    assert!(
        lines.iter().any(|l| l.contains("\"msg\":\"stopped\"")),
        "the last line is written at exit"
    );
}

#[test]
fn a_filter_naming_the_storage_engine_shows_its_info_lines() {
    if common::store::embedded_only(
        "a_filter_naming_the_storage_engine_shows_its_info_lines",
        "fjall's own INFO lines",
    ) {
        return;
    }
    let server = TestServer::start(&[("LOG__FILTER", "info")]);
    let dir = log_dir(&server);
    wait_until("fjall's INFO line in the file", || {
        file_lines(&dir)
            .iter()
            .any(|l| l.contains("Creating database"))
    });
    assert!(server.log_lines_with("Creating database") >= 1);
}

#[test]
fn rotation_keeps_at_most_files_max_files_under_the_size_limit() {
    let server = TestServer::start(&[("LOG__FILE_BYTES_MAX", "2048"), ("LOG__FILES_MAX", "3")]);
    let admin = server.api_key("ops", "admin");
    let dir = log_dir(&server);
    // Each change logs a line of about 250 bytes: 40 of them fill five files or more.
    for i in 0..40 {
        let (status, body) = admin.call(
            "PUT",
            "/api/logs/filter",
            Some(json!({ "filter": format!("info,rotation_{i:03}=debug") }).to_string()),
        );
        assert_eq!(status, 200, "{body}");
    }
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    };
    wait_until("the last change in the newest file", || {
        file_lines(&dir).iter().any(|l| l.contains("rotation_039"))
    });
    let files = names();
    assert_eq!(files.len(), 3, "{files:?}");
    let numbers: Vec<u64> = files
        .iter()
        .map(|n| n.rsplit('.').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers[0] >= 4, "older files were deleted: {files:?}");
    for f in &files {
        assert!(f.starts_with("ringchat-") && f.ends_with(".log"), "{f}");
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len <= 2048, "{f} is {len} bytes");
    }
    assert!(!file_lines(&dir).iter().any(|l| l.contains("rotation_000")));
}

/// A failed dashboard login by `name`: logged at WARN by the admin auth module.
/// A failed dashboard login of operator `name` (made first: a name that is no operator's is
/// not logged, since it may be a password typed in the wrong field).
fn failed_login(server: &TestServer, name: &str) {
    let out = server.admin_cli(
        &["add-user", name, "--role", "viewer"],
        "the right password 1\n",
    );
    assert!(out.status.success(), "add-user: {out:?}");
    let (status, _) = AdminClient::new(server).login(name, "not the password");
    assert_eq!(status, 401);
}

#[test]
fn the_live_tail_streams_new_events_through_its_filters_and_resumes() {
    let server = TestServer::start(&[("LOG__STREAMS_MAX", "3")]);
    let admin = server.api_key("ops", "admin");
    let vkey = viewer_key(&server, "watch");
    let marker = "tailmarker7";

    let everything = Sse::open(server.admin, Some(&vkey), &format!("q={marker}"), None);
    let warnings = Sse::open(
        server.admin,
        Some(&vkey),
        &format!("level=warn&q={marker}"),
        None,
    );
    let auth_only = Sse::open(
        server.admin,
        Some(&vkey),
        &format!("target=ringchat_backend::admin::auth&q={marker}"),
        None,
    );
    assert_eq!(
        (everything.status, warnings.status, auth_only.status),
        (200, 200, 200)
    );
    // A fourth stream is over log.streams_max.
    let refused = Sse::open(server.admin, Some(&vkey), "", None);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_body()["error"]["code"], "unavailable");

    // First an INFO event from the logs API, then a WARN one from the auth module.
    let (status, body) = admin.call(
        "PUT",
        "/api/logs/filter",
        Some(json!({ "filter": format!("info,{marker}=debug") }).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    failed_login(&server, marker);

    let (first_id, first) = everything.next_log();
    assert_eq!(first["msg"], "log filter changed", "{first}");
    assert_eq!(first["level"], "INFO");
    let (_, second) = everything.next_log();
    assert_eq!(second["msg"], "admin login failed", "{second}");
    // The WARN-and-up and the target-filtered streams skip the INFO event.
    let (_, w) = warnings.next_log();
    assert_eq!(w["msg"], "admin login failed", "{w}");
    assert_eq!(w["level"], "WARN");
    let (_, a) = auth_only.next_log();
    assert_eq!(a["msg"], "admin login failed", "{a}");
    drop((everything, warnings, auth_only));

    // A reconnect resumes after its Last-Event-ID, from the ring.
    // The closed streams' slots come back when the server notices (its next write to them, a
    // keep-alive at the latest): until then a new stream may be refused.
    let open = |last_id: Option<&str>, query: &str| {
        let mut stream = None;
        wait_until("a free stream slot", || {
            let s = Sse::open(server.admin, Some(&vkey), query, last_id);
            assert!(matches!(s.status, 200 | 503), "{}", s.status);
            stream = (s.status == 200).then_some(s);
            stream.is_some()
        });
        stream.unwrap()
    };
    let before = (first_id.parse::<u64>().unwrap() - 1).to_string();
    let resumed = open(Some(&before), &format!("q={marker}"));
    assert_eq!(resumed.next_log().0, first_id);
    drop(resumed);
    // With a backlog, a new reader sees recent events first.
    let backlog = open(None, &format!("q={marker}&backlog=100"));
    assert_eq!(backlog.next_log().1["msg"], "log filter changed");
}

/// A viewer API key's secret (made by the CLI).
fn viewer_key(server: &TestServer, name: &str) -> String {
    let out = server.admin_cli(&["add-key", name, "--role", "viewer"], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn search_pages_newest_first_and_export_downloads_the_matching_lines() {
    let server = TestServer::start(&[("LOGIN__FAILURES_FREE", "100")]);
    let viewer = server.api_key("watch", "viewer");
    for i in 0..5 {
        failed_login(&server, &format!("searchmark{i}"));
    }
    let search = |query: &str| viewer.get(&format!("/api/logs?{query}"));
    wait_until("the five lines in the files", || {
        search("q=searchmark&limit=50").1["items"]
            .as_array()
            .map(Vec::len)
            == Some(5)
    });

    // Two at a time, newest first, following the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("q=searchmark&level=warn&limit=2&cursor={c}"),
            None => "q=searchmark&level=warn&limit=2".to_owned(),
        };
        let (status, page) = search(&q);
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["fields"]["operator"].as_str().unwrap().to_owned());
        }
        assert!(page["scanned_bytes"].as_u64().unwrap() > 0);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..5)
        .rev()
        .map(|i| format!("admin:searchmark{i}"))
        .collect();
    assert_eq!(seen, expected);
    // Filters narrow: no ERROR, and nothing before a time in the future.
    assert_eq!(search("q=searchmark&level=error").1["items"], json!([]));
    assert_eq!(
        search("q=searchmark&since=2999-01-01T00:00:00Z").1["items"],
        json!([])
    );
    assert_eq!(
        search("target=ringchat_backend::admin::auth&q=searchmark").1["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // The export: a download of the same lines, oldest first.
    let resp = raw_get(
        server.admin,
        &viewer_key(&server, "exporter"),
        "/api/logs/export?q=searchmark",
    );
    assert_eq!(resp.0, 200);
    assert!(
        resp.1
            .contains("content-disposition: attachment; filename=\"ringchat-logs-"),
        "{}",
        resp.1
    );
    assert!(
        resp.1.contains("content-type: application/x-ndjson"),
        "{}",
        resp.1
    );
    let names: Vec<String> = resp
        .2
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["fields"]["operator"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let oldest_first: Vec<String> = expected.into_iter().rev().collect();
    assert_eq!(names, oldest_first);
}

/// GET with a key: (status, lower-cased head, body).
fn raw_get(admin: SocketAddr, key: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn readers_may_read_only_admins_change_the_filter_and_bad_input_is_a_json_4xx() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watch", "viewer");
    let nobody = AdminClient::new(&server);

    for path in ["/api/logs", "/api/logs/filter", "/api/logs/export"] {
        let (status, body) = nobody.get(path);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{path}"
        );
        assert_eq!(viewer.get(path).0, 200, "{path}");
    }
    let unauthenticated = Sse::open(server.admin, None, "", None);
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        unauthenticated.error_body()["error"]["code"],
        "unauthenticated"
    );

    // The filter: a viewer reads it, only an admin changes it, and only to a valid one.
    let (_, info) = viewer.get("/api/logs/filter");
    assert_eq!(info["filter"], "info,fjall=warn,lsm_tree=warn");
    assert_eq!(info["initial"], info["filter"]);
    let set =
        |c: &AdminClient, body: Value| c.call("PUT", "/api/logs/filter", Some(body.to_string()));
    let (status, body) = set(&viewer, json!({ "filter": "debug" }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = set(&admin, json!({ "filter": "info,=x=y" }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    let (status, body) = set(&admin, json!({ "filter": "" }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    let (status, body) = set(&admin, json!({ "filter": "x".repeat(2000) }));
    assert_eq!(status, 422, "{body}");
    let (status, body) = set(&admin, json!({ "filter": "info", "extra": 1 }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = set(&admin, json!({ "filter": 5 }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        viewer.get("/api/logs/filter").1["filter"],
        "info,fjall=warn,lsm_tree=warn",
        "refusals change nothing"
    );
    let (status, body) = set(&admin, json!({ "filter": "warn,ringchat_backend=debug" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filter"], "warn,ringchat_backend=debug");
    // The audit log is written in batches: wait for the entry.
    wait_until("the change in the audit log", || {
        let (_, audit) = viewer.get("/api/audit?limit=5");
        audit["items"].as_array().unwrap().iter().any(|e| {
            e["action"] == "log.filter_set"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .ends_with("-> warn,ringchat_backend=debug")
        })
    });

    // Bad queries.
    for (query, status, code) in [
        ("level=loud", 422, "invalid"),
        ("since=yesterday", 422, "invalid"),
        (
            "since=2026-12-02T10:00:00Z&until=2026-12-01T10:00:00Z",
            422,
            "invalid",
        ),
        ("cursor=nonsense", 400, "bad_request"),
        ("limit=0", 422, "invalid"),
        ("limit=100000", 422, "invalid"),
        ("colour=blue", 400, "bad_request"),
    ] {
        let (s, body) = viewer.get(&format!("/api/logs?{query}"));
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
    let long = "q".repeat(300);
    assert_eq!(viewer.get(&format!("/api/logs?q={long}")).0, 422);
    assert_eq!(viewer.get("/api/logs/export?cursor=1-0").0, 400);
    let bad_stream = Sse::open(
        server.admin,
        Some(&viewer_key(&server, "w2")),
        "level=loud",
        None,
    );
    assert_eq!(bad_stream.status, 422);
    let bad_id = Sse::open(
        server.admin,
        Some(&viewer_key(&server, "w3")),
        "",
        Some("abc"),
    );
    assert_eq!(bad_id.status, 400);
    let big_backlog = Sse::open(
        server.admin,
        Some(&viewer_key(&server, "w4")),
        "backlog=999999",
        None,
    );
    assert_eq!(big_backlog.status, 422);
}

/// An old log file that never ends: a named pipe that a thread keeps filling with lines no
/// export below matches, until the returned guard is dropped. An export reading it holds its
/// scan slot for as long as it reads, so only its client leaving can give the slot back.
/// The test holds the pipe open for reading and writing itself (nonblocking), so that a search
/// opening it meanwhile never waits for a writer and the filler never blocks on a full pipe.
struct EndlessLogFile {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    filler: Option<std::thread::JoinHandle<()>>,
}

impl EndlessLogFile {
    fn create(dir: &Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        // Number 0: before the server's own files, so an export reads it first.
        let path = dir.join("ringchat-2026-01-01.000000.log");
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {path:?}");
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let line = b"{\"ts\":\"2026-01-01T00:00:00.000000Z\",\"level\":\"INFO\",\"target\":\"filler\",\"msg\":\"filler\"}\n";
        // At most PIPE_BUF (4096 bytes on Linux): a nonblocking write of it is whole or none.
        let block: Vec<u8> = line.repeat(4096 / line.len());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let filler = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            // Whole blocks only, so that a reader never sees a torn line.
            while !stopped.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                match pipe.write(&block) {
                    Ok(n) => {
                        assert_eq!(n, block.len(), "a write of PIPE_BUF bytes at most is whole")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => panic!("filling the log pipe: {e}"),
                }
            }
        });
        Self {
            stop,
            filler: Some(filler),
        }
    }
}

impl Drop for EndlessLogFile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(filler) = self.filler.take() {
            let _ = filler.join();
        }
    }
}

#[test]
fn an_export_whose_client_left_gives_its_scan_slot_back_though_nothing_matched() {
    let server = TestServer::start(&[("LOG__SCANS_MAX", "1")]);
    let key = viewer_key(&server, "exporter");
    let viewer = AdminClient::new(&server).with_key(&key);
    let _endless = EndlessLogFile::create(&log_dir(&server));

    let mut export = TcpStream::connect(server.admin).unwrap();
    write!(
        export,
        "GET /api/logs/export?q=nolinesaysthis HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    // The answer's head comes once the export holds the one scan slot; its scan of a file
    // that never ends can only stop because its client leaves.
    export.set_read_timeout(Some(WAIT)).unwrap();
    let mut status_line = String::new();
    BufReader::new(&export).read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    // A search is refused meanwhile. (The searches here skip every file by its time, so
    // each answers at once.)
    let search = || viewer.get("/api/logs?since=2999-01-01T00:00:00Z");
    let (status, body) = search();
    assert_eq!(status, 503, "the export holds the slot: {body}");
    drop(export);
    let deadline = std::time::Instant::now() + SLOT_BACK_WITHIN;
    loop {
        let (status, body) = search();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the scan slot was not given back within {SLOT_BACK_WITHIN:?} of the client leaving"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `log.filter` through `PATCH /api/config` changes the filter in force at once, the same one
/// `GET /api/logs/filter` shows: it used to be stored, audited and shown, and applied only at
/// the next start.
#[test]
fn a_live_log_filter_change_applies_at_once() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let dir = log_dir(&server);
    let debug_line = "admin connection ended with an error";
    let filter = "info,fjall=warn,lsm_tree=warn,ringchat_backend::admin::http1=debug";
    let (status, body) = admin.patch("/api/config", json!({ "log.filter": filter }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.get("/api/logs/filter").1["filter"], filter);
    // A DEBUG event of the target the filter names (`admin::http1`, which serves the admin
    // listener's connections): a request the admin listener cannot parse.
    let mut conn = TcpStream::connect(server.admin).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"NOT HTTP\r\n\r\n").unwrap();
    let _ = conn.read_to_end(&mut Vec::new());
    wait_until("the DEBUG line in the log file", || {
        file_lines(&dir).iter().any(|l| l.contains(debug_line))
    });
}

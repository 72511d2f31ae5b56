//! A log export or live tail whose client stops reading gives its slot back: hyper writes an
//! answer only as fast as the client reads it and stops asking the body for more once the
//! socket is full, so neither the export's reader thread (waiting for room) nor the tail's own
//! deadline (checked when the next event is asked for) ends it alone. Against the real binary;
//! every wait is on an event with a deadline.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestServer;
use common::admin::AdminClient;
use common::sse::Sse;
use serde_json::json;

/// Slack on top of a deadline the server keeps, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(10);

fn log_dir(server: &TestServer) -> PathBuf {
    server.data_dir.parent().unwrap().join("ringchat-logs")
}

/// A viewer API key's secret (made by the CLI).
fn viewer_key(server: &TestServer, name: &str) -> String {
    let out = server.admin_cli(&["add-key", name, "--role", "viewer"], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A GET whose client reads the answer's head and then nothing: a small receive window and
/// small segments, so that the server's socket fills after a few hundred KiB. The status and
/// the socket (kept open by the caller).
fn unread_get(admin: SocketAddr, key: &str, path: &str) -> (u16, TcpStream) {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(admin),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(1024).unwrap();
    socket.connect(&admin.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(MARGIN)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    // Byte by byte up to the blank line: nothing of the body is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, s)
}

/// Polls until `GET /api/logs` is answered with something else than 503, within `within`.
fn wait_search_served(viewer: &AdminClient, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let (status, body) = viewer.get("/api/logs?limit=1");
        if status != 503 {
            assert_eq!(status, 200, "{body}");
            return;
        }
        assert!(
            Instant::now() < end,
            "searches still refused after {within:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_export_nobody_reads_gives_its_scan_slot_back_at_its_deadline() {
    // The write-stall limit stays at its default (30 s): the export's own deadline frees it.
    let server = TestServer::start(&[("LOG__SCANS_MAX", "1"), ("LOG__EXPORT_DURATION_MAX_S", "3")]);
    let viewer = server.api_key("watch", "viewer");
    // 16 MiB of matching lines in an old file: far more than the socket and hyper buffer.
    let line = json!({
        "ts": "2026-01-01T00:00:00.000000Z",
        "level": "INFO",
        "target": "ringchat::test",
        "msg": "x".repeat(1000),
    })
    .to_string();
    let file: String = std::iter::repeat_n(format!("{line}\n"), 16 * 1024).collect();
    std::fs::write(
        log_dir(&server).join("ringchat-2026-01-01.000000.log"),
        file,
    )
    .unwrap();

    let (status, _socket) = unread_get(
        server.admin,
        &viewer_key(&server, "exporter"),
        "/api/logs/export",
    );
    assert_eq!(status, 200);
    // The export holds the one slot (its lines cannot all be buffered) …
    let (status, body) = viewer.get("/api/logs?limit=1");
    assert_eq!(status, 503, "{body}");
    // … until its deadline, though its client never reads.
    wait_search_served(&viewer, Duration::from_secs(3) + MARGIN);
}

#[test]
fn a_live_tail_nobody_reads_gives_its_place_back() {
    let server = TestServer::start(&[
        ("LOG__STREAMS_PER_OPERATOR_MAX", "1"),
        ("LOG__STREAM_DURATION_MAX_S", "1"),
        ("ADMIN__WRITE_STALL_TIMEOUT_MS", "1000"),
    ]);
    let admin = server.api_key("ops", "admin");
    let key = viewer_key(&server, "watch");
    // About 3 MiB of events in the tail's ring: each filter change logs both filters.
    let long = |c: char| format!("info,{}=debug", c.to_string().repeat(1000));
    for i in 0..1_500 {
        let filter = long(if i % 2 == 0 { 'a' } else { 'b' });
        let (status, body) = admin.call(
            "PUT",
            "/api/logs/filter",
            Some(json!({ "filter": filter }).to_string()),
        );
        assert_eq!(status, 200, "{body}");
    }
    // The backlog is sent at once and fills the socket long before the stream's deadline.
    let (status, _socket) = unread_get(server.admin, &key, "/api/logs/stream?backlog=1500");
    assert_eq!(status, 200);
    let refused = Sse::open(server.admin, Some(&key), "", None);
    assert_eq!(refused.status, 503, "the one place is held");
    drop(refused);
    // The stream's deadline (1 s) plus the write-stall limit, with room to spare.
    let end = Instant::now() + Duration::from_millis(2_000) + MARGIN;
    loop {
        let again = Sse::open(server.admin, Some(&key), "", None);
        if again.status == 200 {
            break;
        }
        assert_eq!(again.status, 503);
        assert!(
            Instant::now() < end,
            "the unread stream still holds its place"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric("ringchat_admin_write_stalls_total") >= 1.0);
}

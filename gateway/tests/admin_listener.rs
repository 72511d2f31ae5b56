//! The admin listener's own limits, against the real server over raw sockets: a request head
//! and body must arrive in time, an idle kept-alive connection is closed, and past
//! `admin.conns_max` a new connection is closed at once while the chat listeners serve on.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection (or resets it); what came, and when it closed.
/// Panics after [`DEADLINE`].
async fn until_closed(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {DEADLINE:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_bodies_and_idle_connections_are_closed_in_time() {
    let server = TestServer::start(&[
        ("ADMIN__HEADER_READ_TIMEOUT_MS", "600"),
        ("ADMIN__BODY_READ_TIMEOUT_MS", "600"),
    ]);
    let least = Duration::from_millis(500);

    // Half a request head, then nothing.
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n")
        .await
        .unwrap();
    let (_, after) = until_closed(&mut s).await;
    assert!(after >= least, "closed after {after:?}");

    // Nothing at all.
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    let (got, after) = until_closed(&mut s).await;
    assert!(after >= least, "closed after {after:?}: {got}");

    // One answered request, then an idle kept-alive connection.
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let (got, after) = until_closed(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(after >= least, "closed after {after:?}");

    // A whole head, then a body that stops halfway: a JSON 408, and the connection closed.
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    s.write_all(
        b"POST /api/session HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let (got, after) = until_closed(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":"request_timeout""#), "{got}");
    assert!(after >= least, "answered after {after:?}");

    // A prompt client is served as before.
    let admin = server.api_key("ops", "admin");
    assert_eq!(admin.get("/api/overview").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_conns_max_a_new_connection_is_closed_and_chat_logins_go_on() {
    let server = TestServer::start(&[("ADMIN__CONNS_MAX", "3")]);
    // Idle connections that send nothing: each holds a place until the head timeout (10 s).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.admin).await.unwrap());
    }
    let mut extra = TcpStream::connect(server.admin).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await;
    let (got, after) = until_closed(&mut extra).await;
    assert!(got.is_empty(), "served past admin.conns_max: {got}");
    assert!(
        after < Duration::from_secs(5),
        "closed at once, not by a timeout: {after:?}"
    );

    // The chat listeners do not share the cap.
    let (mut carol, _) = server.user("carol").await;
    carol.ping().await.expect("a chat session works");

    // A place comes back when a connection closes.
    drop(held.pop());
    wait_until_async("a free admin connection", || {
        std::net::TcpStream::connect(server.admin)
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                s.write_all(b"GET /healthz HTTP/1.0\r\nHost: admin\r\n\r\n")
                    .ok()?;
                let mut answer = String::new();
                s.read_to_string(&mut answer).ok()?;
                Some(answer.starts_with("HTTP/1.0 200"))
            })
            .unwrap_or(false)
    })
    .await;
    drop(held);
    wait_until_async("the refusal counted", || {
        server.metric("ringchat_admin_conns_refused_total") >= 1.0
    })
    .await;
}

/// `GET path` over TLS (checked against `pem`), with an API key if given: status and body.
async fn tls_get(server: &TestServer, pem: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let mut tls = common::ws::tls_connect(server.admin, pem)
        .await
        .expect("TLS handshake");
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, tls.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("a readable answer");
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_the_overview_sampler_runs_as_over_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key_file) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(["gen-cert", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (c, k) = (cert.display().to_string(), key_file.display().to_string());
    let server = TestServer::start_with_config(
        &tmp.path().join("data"),
        None,
        &[("ADMIN__TLS__CERT_PATH", &c), ("ADMIN__TLS__KEY_PATH", &k)],
    );
    let pem = std::fs::read_to_string(&cert).unwrap();
    let viewer = server.api_key("watch", "viewer");
    let key = viewer.key().unwrap();

    let (mut alice, _) = server.user("alice").await;
    let (_bob, bob) = server.user("bob").await;
    alice
        .send_text(bob.user_id, "m1", "hello")
        .await
        .unwrap()
        .expect("sent");

    // The sampler fills the overview's `now` and the store's size, once a second.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = tls_get(&server, &pem, "/api/overview", Some(&key)).await;
        assert_eq!(status, 200, "{body}");
        let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (_, metrics) = tls_get(&server, &pem, "/metrics", None).await;
        let disk_total = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ringchat_store_disk_total_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if !overview["now"].is_null() && disk_total > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sample over TLS: now = {}, ringchat_store_disk_total_bytes = {disk_total}",
            overview["now"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

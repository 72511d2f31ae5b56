//! Files (issue 15) end to end through the real `ringchat` binary: HTTP under `/files` on the
//! WebSocket listener and its TLS twin, handed by the shard to the backend's files service over
//! an in-process pipe. Uploads in chunks and downloads, keep-alive, a cut connection resumed,
//! a big file streamed both ways in bounded memory (and to a client that stops reading), the
//! file-connection limits, idle and stalled connections closed, and WebSocket chat on the same
//! listener alongside. Uploads through a kill -9: files_crash.rs.

mod common;

use std::net::SocketAddr;

use common::http1::{Http1, Response, sha256_hex};
use common::uploads::{
    completed, content, create, download, expect_status, present, put_chunk, upload,
};
use common::ws::WsClient;
use common::{PASSWORD, TestServer, wait_until};
use ringchat_bench::client::{password_login, text_message};
use ringchat_proto::{Body, PROTOCOL_VERSION, v1};
use sha2::{Digest, Sha256};

fn hello() -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "files-test".into(),
    })
}

/// Logs `name` in over WebSocket on `addr` (TLS with `cert`) and sends `to` a message.
async fn chat_over_ws(addr: SocketAddr, cert: Option<&str>, name: &str, to: u64) {
    let mut ws = match cert {
        Some(pem) => WsClient::connect_tls(addr, pem).await,
        None => WsClient::connect(addr).await,
    };
    assert!(matches!(ws.request(hello()).await, Body::HelloOk(_)));
    let login = Body::Login(password_login(name, PASSWORD, &format!("{name}-ws")));
    assert!(matches!(ws.request(login).await, Body::LoginOk(_)));
    let sent = ws.request(text_message(to, "alongside", "hi")).await;
    assert!(matches!(sent, Body::SendAck(_)), "{sent:?}");
}

/// Resident and peak memory of a process, in bytes (VmRSS, VmHWM).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("a memory field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn upload_and_download_over_the_websocket_port_and_its_tls_twin() {
    let server = TestServer::start_tls(&[]);
    let cert = server.cert_pem.clone().unwrap();
    let (_alice, alice) = server.user("alice").await;
    let (_bob, bob) = server.user("bob").await;
    for (listener, addr, pem) in [
        ("ws", server.ws, None),
        ("wss", server.wss.unwrap(), Some(cert.as_str())),
    ] {
        let data = content(listener.len() as u64, 2 * 1024 * 1024 + 12_345);
        // Every request of the upload and the download on one connection (keep-alive).
        let mut c = Http1::connect_to(addr, pem).await;
        let up = create(&mut c, &alice.token, &format!("{listener}.bin"), &data).await;
        let chunks = up.chunks(&data);
        assert!(chunks >= 3, "{listener}: several chunks ({chunks})");
        // Out of order, one twice.
        for index in (0..chunks).rev() {
            put_chunk(&mut c, &alice.token, &up, &data, index).await;
        }
        put_chunk(&mut c, &alice.token, &up, &data, 1).await;
        assert_eq!(
            present(&mut c, &alice.token, &up).await,
            (0..chunks).collect::<Vec<_>>()
        );
        // WebSocket chat on the same listener while the file connection is open.
        chat_over_ws(addr, pem, "alice", bob.user_id).await;
        let file_id = completed(&mut c, &alice.token, &up).await;

        let got = download(&mut c, &alice.token, &file_id).await;
        expect_status(&got, 200, "download");
        assert_eq!(got.body.len(), data.len(), "{listener}: size");
        assert!(got.body == data, "{listener}: the same bytes");
        let ranged = c
            .request(
                "GET",
                &format!("/files/{file_id}"),
                Some(&alice.token),
                &[("Range", "bytes=1000-1999")],
                b"",
            )
            .await
            .unwrap();
        expect_status(&ranged, 206, "range");
        assert_eq!(ranged.body, &data[1000..2000]);
        // Without the token, refused with the service's JSON error, and the connection ends
        // (a client without a valid token does not keep a file connection); a new one works.
        let anonymous = c
            .request("GET", &format!("/files/{file_id}"), None, &[], b"")
            .await
            .unwrap();
        expect_status(&anonymous, 401, "no token");
        assert_eq!(anonymous.header("connection"), Some("close"), "{listener}");
        let mut c = Http1::connect_to(addr, pem).await;
        let again = download(&mut c, &alice.token, &file_id).await;
        expect_status(&again, 200, "after a refusal, on a new connection");
    }
    // Page files and the WebSocket path are served as before.
    let page = common::http_get(server.ws, "/");
    assert!(page.contains("<html"), "the chat page");
}

#[tokio::test]
async fn a_connection_cut_mid_chunk_resumes_on_a_new_one() {
    let server = TestServer::start_tls(&[]);
    let cert = server.cert_pem.clone().unwrap();
    let (_alice, alice) = server.user("alice").await;
    for (seed, addr, pem) in [
        (1, server.ws, None),
        (2, server.wss.unwrap(), Some(cert.as_str())),
    ] {
        let data = content(seed, 3 * 1024 * 1024 + 7);
        let mut c = Http1::connect_to(addr, pem).await;
        let up = create(&mut c, &alice.token, "resume.bin", &data).await;
        put_chunk(&mut c, &alice.token, &up, &data, 0).await;
        // Chunk 1: its head and half its body, then the connection is gone.
        let chunk = up.chunk(&data, 1);
        let sha = sha256_hex(chunk);
        c.send_head(
            "PUT",
            &format!("/files/{}/chunks/1", up.id),
            Some(&alice.token),
            &[("X-Chunk-Sha256", &sha)],
            Some(chunk.len()),
        )
        .await
        .unwrap();
        c.send_body(&chunk[..chunk.len() / 2]).await.unwrap();
        drop(c);

        let mut c = Http1::connect_to(addr, pem).await;
        assert_eq!(
            present(&mut c, &alice.token, &up).await,
            vec![0],
            "only the whole chunk is present"
        );
        for index in 1..up.chunks(&data) {
            put_chunk(&mut c, &alice.token, &up, &data, index).await;
        }
        let file_id = completed(&mut c, &alice.token, &up).await;
        let got = download(&mut c, &alice.token, &file_id).await;
        expect_status(&got, 200, "download");
        assert!(got.body == data, "the resumed file is the original");
    }
}

#[tokio::test]
async fn a_big_file_streams_both_ways_without_the_server_growing_by_its_size() {
    const FILE_BYTES: usize = 64 * 1024 * 1024;
    let server = TestServer::start(&[]);
    let (_alice, alice) = server.user("alice").await;
    let mut c = Http1::connect(server.ws).await;
    // Warm up: the first upload and download allocate what every one reuses.
    let small = content(7, 3 * 1024 * 1024);
    let small_id = upload(&mut c, &alice.token, "warm.bin", &small).await;
    assert!(download(&mut c, &alice.token, &small_id).await.body == small);
    let (rss_before, _) = memory(server.pid());

    let data = content(8, FILE_BYTES);
    let file_id = upload(&mut c, &alice.token, "big.bin", &data).await;
    let (rss_uploaded, peak_uploaded) = memory(server.pid());
    // The download is hashed as it comes, never held whole by the test either.
    let mut sha = Sha256::new();
    let mut received = 0usize;
    c.send_head(
        "GET",
        &format!("/files/{file_id}"),
        Some(&alice.token),
        &[],
        None,
    )
    .await
    .unwrap();
    let head = c
        .read_response_into(false, |piece| {
            sha.update(piece);
            received += piece.len();
        })
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(received, FILE_BYTES);
    assert_eq!(common::http1::hex(&sha.finalize()), sha256_hex(&data));
    let (rss_after, peak_after) = memory(server.pid());
    let bound = (FILE_BYTES / 2) as u64;
    eprintln!(
        "server memory: before {rss_before}, after the upload {rss_uploaded} (peak \
         {peak_uploaded}), after the download {rss_after} (peak {peak_after}); file {FILE_BYTES}"
    );
    for (what, value) in [
        ("resident after the upload", rss_uploaded),
        ("peak during the upload", peak_uploaded),
        ("resident after the download", rss_after),
        ("peak during the download", peak_after),
    ] {
        assert!(
            value < rss_before + bound,
            "{what}: {value} bytes, grown past {bound} from {rss_before} for a {FILE_BYTES}-byte file"
        );
    }

    // A client that stops reading: the server stops sending once the socket, the pipe and a
    // buffer each way are full, and holds no more of the file than that.
    let bytes_out = || -> f64 {
        server
            .metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("ringchat_bytes_out_total"))
            .map(|(_, v)| v)
            .sum()
    };
    let sent_before = bytes_out();
    let mut slow = Http1::connect(server.ws).await;
    slow.send_head(
        "GET",
        &format!("/files/{file_id}"),
        Some(&alice.token),
        &[],
        None,
    )
    .await
    .unwrap();
    let mut last = -1.0;
    wait_until(
        "the server to stop sending to a client that reads nothing",
        || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = bytes_out();
            let stalled = now == last && now > sent_before;
            last = now;
            stalled
        },
    );
    let in_flight = (last - sent_before) as u64;
    let (rss_stalled, _) = memory(server.pid());
    eprintln!("stalled client: {in_flight} bytes sent, resident {rss_stalled}");
    assert!(
        in_flight < bound,
        "{in_flight} bytes sent to a client that reads nothing"
    );
    assert!(
        rss_stalled < rss_before + bound,
        "resident with a stalled client: {rss_stalled}"
    );
    // It reads again: the whole file arrives.
    let mut sha = Sha256::new();
    let head = slow
        .read_response_into(false, |piece| sha.update(piece))
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(common::http1::hex(&sha.finalize()), sha256_hex(&data));
}

#[tokio::test]
async fn past_the_file_connection_limit_the_shard_answers_503() {
    let server = TestServer::start(&[("GATEWAY__FILES__CONNS_MAX", "2")]);
    let (_alice, alice) = server.user("alice").await;
    let (_bob, bob) = server.user("bob").await;
    let data = content(3, 100_000);
    let mut open = Vec::new();
    for i in 0..2 {
        let mut c = Http1::connect(server.ws).await;
        let up = create(&mut c, &alice.token, &format!("held{i}.bin"), &data).await;
        put_chunk(&mut c, &alice.token, &up, &data, 0).await;
        open.push((c, up));
    }
    let mut third = Http1::connect(server.ws).await;
    let busy = third
        .request(
            "GET",
            "/files/anything/chunks",
            Some(&alice.token),
            &[],
            b"",
        )
        .await
        .unwrap();
    expect_status(&busy, 503, "third file connection");
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.json()["code"], "busy");
    assert!(
        third.closed_by_server().await,
        "the refused connection is closed"
    );
    let refused: f64 = server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_files_refused_busy_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(refused >= 1.0, "counted: {refused}");
    // Chat is not held back by the file limit.
    chat_over_ws(server.ws, None, "alice", bob.user_id).await;
    // The held connections still work (keep-alive), and once one closes a new one is served.
    let (mut c, up) = open.pop().unwrap();
    let file_id = completed(&mut c, &alice.token, &up).await;
    drop(c);
    let mut retried = None;
    wait_until("a file connection to be served again", || {
        let resp = download_on_a_new_connection(server.ws, &alice.token, &file_id);
        let served = resp.status == 200;
        retried = Some(resp);
        served
    });
    assert!(retried.unwrap().body == data);
}

/// A download on a connection of its own, from a thread of its own (for `wait_until`, which
/// polls from the test's runtime).
fn download_on_a_new_connection(
    addr: std::net::SocketAddr,
    token: &str,
    file_id: &str,
) -> Response {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = Http1::connect(addr).await;
                download(&mut c, token, file_id).await
            })
        })
        .join()
        .unwrap()
    })
}

#[tokio::test]
async fn past_the_per_shard_limit_the_tls_listener_answers_503_too() {
    let server = TestServer::start_tls(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__FILES__CONNS_PER_SHARD_MAX", "1"),
    ]);
    let cert = server.cert_pem.clone().unwrap();
    let wss = server.wss.unwrap();
    let (_alice, alice) = server.user("alice").await;
    let mut first = Http1::connect_tls(wss, &cert).await;
    let data = content(5, 10_000);
    let file_id = upload(&mut first, &alice.token, "one.bin", &data).await;
    let mut second = Http1::connect_tls(wss, &cert).await;
    let busy = download(&mut second, &alice.token, &file_id).await;
    expect_status(&busy, 503, "a second file connection on the one shard");
    assert_eq!(busy.json()["code"], "busy");
    // The first is still served, on the same connection.
    assert!(download(&mut first, &alice.token, &file_id).await.body == data);
}

#[tokio::test]
async fn idle_and_stalled_file_connections_are_closed() {
    let server = TestServer::start(&[
        ("GATEWAY__FILES__HEADER_READ_TIMEOUT_MS", "300"),
        ("GATEWAY__IDLE_TIMEOUT_MS", "800"),
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", "100"),
    ]);
    let (_alice, alice) = server.user("alice").await;
    let data = content(9, 200_000);
    // Keep-alive with no next request: closed after header_read_timeout_ms.
    let mut idle = Http1::connect(server.ws).await;
    let up = create(&mut idle, &alice.token, "idle.bin", &data).await;
    let started = std::time::Instant::now();
    assert!(idle.closed_by_server().await, "an idle file connection");
    eprintln!("idle keep-alive closed after {:?}", started.elapsed());
    // A chunk whose body stops halfway: nothing moves, the idle timeout closes it.
    let mut stalled = Http1::connect(server.ws).await;
    let chunk = up.chunk(&data, 0);
    let sha = sha256_hex(chunk);
    stalled
        .send_head(
            "PUT",
            &format!("/files/{}/chunks/0", up.id),
            Some(&alice.token),
            &[("X-Chunk-Sha256", &sha)],
            Some(chunk.len()),
        )
        .await
        .unwrap();
    stalled.send_body(&chunk[..1000]).await.unwrap();
    let started = std::time::Instant::now();
    let resp = stalled.read_response(false).await;
    assert!(
        resp.as_ref()
            .is_err_and(|e| e.kind() != std::io::ErrorKind::TimedOut),
        "no answer to half a chunk, closed (not timed out here): {resp:?}"
    );
    eprintln!("stalled body closed after {:?}", started.elapsed());
    // Neither left anything behind: the upload goes on from new connections, one a request
    // (a kept-alive one is closed by the 300 ms above if this test is off the CPU a moment).
    let fresh = || Http1::connect(server.ws);
    assert!(
        present(&mut fresh().await, &alice.token, &up)
            .await
            .is_empty()
    );
    put_chunk(&mut fresh().await, &alice.token, &up, &data, 0).await;
    let file_id = completed(&mut fresh().await, &alice.token, &up).await;
    assert!(
        download(&mut fresh().await, &alice.token, &file_id)
            .await
            .body
            == data
    );
}

#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_is_answered_408_and_frees_its_chunk_slot() {
    let server = TestServer::start(&[
        ("FILES__BODY_TIMEOUT_MS_MIN", "400"),
        ("FILES__BODY_BYTES_PER_S_MIN", "1048576"),
        ("FILES__CHUNKS_IN_FLIGHT_PER_USER_MAX", "1"),
    ]);
    let (_alice, alice) = server.user("alice").await;
    // A `POST /files` whose JSON stops after 10 of its 100 bytes.
    let mut c = Http1::connect(server.ws).await;
    c.send_head("POST", "/files", Some(&alice.token), &[], Some(100))
        .await
        .unwrap();
    c.send_body(b"{\"name\": \"").await.unwrap();
    let resp = c
        .read_response(false)
        .await
        .expect("an answer, not a close");
    expect_status(&resp, 408, "a JSON body that stopped");
    assert_eq!(resp.json()["code"], "body_timeout");
    assert!(c.closed_by_server().await, "its connection is closed");
    // A chunk that stops halfway holds the user's one chunk slot only until its time is up.
    let data = content(11, 200_000);
    let mut c = Http1::connect(server.ws).await;
    let up = create(&mut c, &alice.token, "slow.bin", &data).await;
    let chunk = up.chunk(&data, 0);
    let sha = sha256_hex(chunk);
    c.send_head(
        "PUT",
        &format!("/files/{}/chunks/0", up.id),
        Some(&alice.token),
        &[("X-Chunk-Sha256", &sha)],
        Some(chunk.len()),
    )
    .await
    .unwrap();
    c.send_body(&chunk[..1000]).await.unwrap();
    let resp = c
        .read_response(false)
        .await
        .expect("an answer, not a close");
    expect_status(&resp, 408, "a chunk that stopped");
    assert!(c.closed_by_server().await, "its connection is closed");
    let mut c = Http1::connect(server.ws).await;
    put_chunk(&mut c, &alice.token, &up, &data, 0).await;
    let file_id = completed(&mut c, &alice.token, &up).await;
    assert!(download(&mut c, &alice.token, &file_id).await.body == data);
}

#[tokio::test]
async fn past_the_file_connections_of_one_address_the_shard_answers_503() {
    let server = TestServer::start(&[("GATEWAY__FILES__CONNS_PER_IP_MAX", "2")]);
    let (_alice, alice) = server.user("alice").await;
    let data = content(12, 10_000);
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Http1::connect(server.ws).await;
        let file_id = upload(&mut c, &alice.token, &format!("held{i}.bin"), &data).await;
        held.push((c, file_id));
    }
    let mut third = Http1::connect(server.ws).await;
    let busy = download(&mut third, &alice.token, &held[0].1).await;
    expect_status(&busy, 503, "a third file connection from 127.0.0.1");
    assert_eq!(busy.json()["code"], "busy");
    // One closed, its place is free again.
    let (c, file_id) = held.pop().unwrap();
    drop(c);
    wait_until(
        "a file connection from the address to be served again",
        || download_on_a_new_connection(server.ws, &alice.token, &file_id).status == 200,
    );
}

/// A file connection is counted among the file connections from its first request on, no
/// longer among its client's connections not logged in (`gateway.prelogin_conns_per_ip_max`):
/// kept alive, it leaves the address's one pre-login place to a chat connection.
#[tokio::test]
async fn a_file_connection_gives_its_pre_login_place_back() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__PRELOGIN_CONNS_PER_IP_MAX", "1"),
    ]);
    let (_alice, alice) = server.user("alice").await;
    let mut held = Http1::connect(server.ws).await;
    upload(&mut held, &alice.token, "held.bin", &content(5, 1000)).await;
    assert_eq!(
        server.metric("ringchat_files_connections{shard=\"0\"}"),
        1.0,
        "the file connection is kept alive"
    );
    let mut chat = server.client().await;
    chat.hello()
        .await
        .expect("a chat connection gets the place");
    assert_eq!(
        server.metric("ringchat_prelogin_refused_total{shard=\"0\"}"),
        0.0
    );
}

#[tokio::test]
async fn without_a_token_or_under_a_wrong_path_the_answers_are_clear() {
    let server = TestServer::start(&[]);
    let mut c = Http1::connect(server.ws).await;
    let resp = c
        .request(
            "POST",
            "/files",
            None,
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .await
        .unwrap();
    expect_status(&resp, 401, "no token");
    assert!(resp.json()["code"].is_string());
    // A file connection without a valid token is not kept: it would hold a place among the
    // address's and the node's file connections for as long as it kept asking.
    assert_eq!(
        resp.header("Connection"),
        Some("close"),
        "{:?}",
        resp.headers
    );
    let closing = std::time::Instant::now();
    assert!(
        c.closed_by_server().await,
        "a 401 closes the file connection"
    );
    assert!(
        closing.elapsed() < std::time::Duration::from_secs(5),
        "closed by the keep-alive timeout, not after the 401"
    );
    // A path that only starts like /files is the page server's: not found, connection closed.
    let mut other = Http1::connect(server.ws).await;
    let resp = other
        .request("GET", "/filesx", None, &[], b"")
        .await
        .unwrap();
    expect_status(&resp, 404, "/filesx");
    // With the files service off, the shard itself says so.
    let off = TestServer::start(&[("FILES__ENABLED", "false")]);
    let mut c = Http1::connect(off.ws).await;
    let resp = c.request("GET", "/files/x", None, &[], b"").await.unwrap();
    expect_status(&resp, 404, "files off");
    assert_eq!(resp.json()["code"], "not_found");
    assert!(c.closed_by_server().await);
}

/// A browser sends its next request to the origin on any idle kept-alive connection: after an
/// upload, a reload's `GET /` may go down a file connection. It gets the page, as from the
/// shard, and the connection closes after it (a page needs no token: it must not keep a file
/// connection open); any other path is a 404 that closes the connection.
#[tokio::test]
async fn a_file_connection_reused_for_the_page_serves_the_page() {
    let server = TestServer::start(&[]);
    let (_alice, alice) = server.user("alice").await;
    let data = content(7, 1000);
    let file_id = upload(
        &mut Http1::connect(server.ws).await,
        &alice.token,
        "a.txt",
        &data,
    )
    .await;
    for path in ["/", "/files.js", "/files-view.js", "/app.css"] {
        let mut c = Http1::connect(server.ws).await;
        expect_status(
            &download(&mut c, &alice.token, &file_id).await,
            200,
            "download",
        );
        let page = c.request("GET", path, None, &[], b"").await.unwrap();
        expect_status(&page, 200, path);
        assert!(
            page.header("Content-Security-Policy")
                .is_some_and(|v| v.contains("media-src 'self' blob:")),
            "{path}: the page's headers: {:?}",
            page.headers
        );
        assert_eq!(page.header("Connection"), Some("close"), "{path}");
        assert!(c.closed_by_server().await, "{path}: closed after the page");
    }
    let mut c = Http1::connect(server.ws).await;
    expect_status(
        &download(&mut c, &alice.token, &file_id).await,
        200,
        "download",
    );
    let other = c.request("GET", "/assign", None, &[], b"").await.unwrap();
    expect_status(&other, 404, "/assign on a file connection");
    assert!(
        c.closed_by_server().await,
        "a 404 closes the file connection"
    );
}

/// A method a path does not take (`GET /files`, `DELETE /files/x`) is answered only after the
/// token check: a stranger gets the 401, which closes the connection, and cannot hold a file
/// connection by asking that way. A signed-in client gets the 405 and keeps its connection.
#[tokio::test]
async fn a_method_a_path_does_not_take_closes_a_strangers_connection() {
    // The keep-alive timeout past the test's own read timeout: a close seen here is the rule's.
    let server = TestServer::start(&[("GATEWAY__FILES__HEADER_READ_TIMEOUT_MS", "120000")]);
    let (_alice, alice) = server.user("alice").await;
    for (method, path) in [
        ("GET", "/files"),
        ("DELETE", "/files/x"),
        ("PUT", "/files/x/complete"),
    ] {
        let mut c = Http1::connect(server.ws).await;
        let resp = c.request(method, path, None, &[], b"").await.unwrap();
        expect_status(&resp, 401, &format!("{method} {path} without a token"));
        assert_eq!(
            resp.header("Connection"),
            Some("close"),
            "{method} {path}: {:?}",
            resp.headers
        );
        assert!(
            c.closed_by_server().await,
            "{method} {path}: the connection closes"
        );
    }
    // Signed in: the 405, and the connection goes on, as after any signed-in refusal.
    let mut c = Http1::connect(server.ws).await;
    let resp = c
        .request("GET", "/files", Some(&alice.token), &[], b"")
        .await
        .unwrap();
    expect_status(&resp, 405, "GET /files signed in");
    assert_eq!(resp.header("Connection"), None, "{:?}", resp.headers);
    let resp = c
        .request("GET", "/files/none/chunks", Some(&alice.token), &[], b"")
        .await
        .unwrap();
    expect_status(&resp, 404, "no such upload, on the same connection");
    assert_eq!(resp.header("Connection"), None, "{:?}", resp.headers);
}

/// Unknown bearer tokens on `/files` count against the client address's unknown tokens, as
/// token logins do: past `UNKNOWN_TOKENS_PER_CLIENT` the answer is 429 with `Retry-After` (and
/// the connection closes); a known token from the same address is never held back.
#[tokio::test]
async fn unknown_tokens_past_the_address_limit_are_answered_429() {
    let server = TestServer::start(&[]);
    let (_alice, alice) = server.user("alice").await;
    let bogus = |i: u32| format!("{:064x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15);
    for i in 0..ringchat_backend::UNKNOWN_TOKENS_PER_CLIENT {
        let mut c = Http1::connect(server.ws).await;
        let resp = c
            .request("GET", "/files/x/chunks", Some(&bogus(i)), &[], b"")
            .await
            .unwrap();
        expect_status(&resp, 401, &format!("unknown token {i}"));
        assert!(c.closed_by_server().await, "a 401 closes");
    }
    let mut c = Http1::connect(server.ws).await;
    let resp = c
        .request("GET", "/files/x/chunks", Some(&bogus(u32::MAX)), &[], b"")
        .await
        .unwrap();
    expect_status(&resp, 429, "one unknown token past the address's limit");
    assert_eq!(resp.json()["code"], "rate_limited");
    let retry_after: u64 = resp
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in seconds: {:?}", resp.headers));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(c.closed_by_server().await, "a 429 closes");
    let data = content(13, 1000);
    let mut c = Http1::connect(server.ws).await;
    let file_id = upload(&mut c, &alice.token, "mine.bin", &data).await;
    assert!(download(&mut c, &alice.token, &file_id).await.body == data);
}

//! TLS on the TCP listener (length-prefixed frames inside TLS) and WebSocket over TLS, with real
//! clients (tokio-rustls, tokio-tungstenite), a certificate made by `ringchat gen-cert`.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use common::ws::{FramedClient, WsClient, tls_connect};
use ringchat_bench::client::password_login;
use ringchat_proto::v1;
use ringchat_proto::{Body, PROTOCOL_VERSION};

fn hello() -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "tls-test".into(),
    })
}

#[tokio::test]
async fn length_prefixed_frames_inside_tls() {
    let server = TestServer::start_tls(&[]);
    let tls = tls_connect(server.tls.unwrap(), server.cert_pem.as_ref().unwrap())
        .await
        .expect("TLS handshake with the generated certificate");
    let mut c = FramedClient::new(tls);
    assert!(matches!(c.request(1, hello()).await, Body::HelloOk(_)));
    let register = Body::Register(v1::Register {
        username: "tina".into(),
        password: common::PASSWORD.into(),
        ..Default::default()
    });
    assert!(matches!(c.request(2, register).await, Body::RegisterOk(_)));
    let login = Body::Login(password_login("tina", common::PASSWORD, "d1"));
    let Body::LoginOk(ok) = c.request(3, login).await else {
        panic!("login failed")
    };
    // A message from a plain TCP user arrives inside TLS.
    let (mut bob, _) = server.user("bob").await;
    bob.send_text(ok.user_id, "m1", "over tls")
        .await
        .unwrap()
        .expect("sent");
    loop {
        let frame = c.recv().await.expect("a push");
        if let Some(Body::Push(p)) = frame.body {
            assert_eq!(&p.message.unwrap().content[..], b"over tls");
            break;
        }
    }
}

#[tokio::test]
async fn websocket_over_tls() {
    let server = TestServer::start_tls(&[]);
    let mut ws =
        WsClient::connect_tls(server.wss.unwrap(), server.cert_pem.as_ref().unwrap()).await;
    assert!(matches!(ws.request(hello()).await, Body::HelloOk(_)));
    let pong = ws
        .request_json(r#"{"requestId":"9","ping":{"clientTimeMs":"42"}}"#)
        .await;
    assert_eq!(pong["pong"]["clientTimeMs"], "42");
}

#[tokio::test]
async fn a_stalled_handshake_does_not_stall_the_shard_and_times_out() {
    // One shard, so every connection shares it.
    let server = TestServer::start_tls(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__HANDSHAKE_TIMEOUT_MS", "1500"),
    ]);
    let tls_addr = server.tls.unwrap();
    // A client that opens TCP and sends half a ClientHello, then nothing.
    let mut stalled = std::net::TcpStream::connect(tls_addr).unwrap();
    std::io::Write::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    // Others are served meanwhile, on TLS and on plain TCP.
    let tls = tls_connect(tls_addr, server.cert_pem.as_ref().unwrap())
        .await
        .unwrap();
    let mut c = FramedClient::new(tls);
    assert!(matches!(c.request(1, hello()).await, Body::HelloOk(_)));
    let mut plain = server.client().await;
    plain.hello().await.unwrap();
    // A client that does not trust the certificate fails its handshake, and nothing breaks.
    let other = ringchat_gateway::tls::self_signed(vec!["localhost".into()])
        .unwrap()
        .0;
    assert!(tls_connect(tls_addr, &other).await.is_err());
    assert!(matches!(c.request(2, hello()).await, Body::Error(_)));
    // The stalled one is closed at the handshake timeout.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed by the timeout"
    );
}

#[test]
fn a_missing_certificate_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .arg("serve")
        .env_clear()
        .env("RINGCHAT_GATEWAY__TCP_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__WS_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__TLS_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_GATEWAY__WSS_LISTEN", "127.0.0.1:0")
        .env("RINGCHAT_ADMIN__LISTEN", "")
        .env("RINGCHAT_STORAGE__DATA_DIR", dir.path())
        .env("RINGCHAT_GATEWAY__TLS__CERT_PATH", "/nonexistent/cert.pem")
        .env("RINGCHAT_GATEWAY__TLS__KEY_PATH", "/nonexistent/key.pem")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gateway.tls.cert_path /nonexistent/cert.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn bytes_after_close_notify_do_not_freeze_the_shard() {
    use tokio::io::AsyncWriteExt;
    // One shard: if this connection spun, nobody else would be served.
    let server = TestServer::start_tls(&[("GATEWAY__CORES", "[0]")]);
    let mut tls = tls_connect(server.tls.unwrap(), server.cert_pem.as_ref().unwrap())
        .await
        .unwrap();
    // close_notify, then in the same flight several KiB that rustls will never take.
    tls.get_mut().1.send_close_notify();
    let mut records = Vec::new();
    while tls.get_ref().1.wants_write() {
        tls.get_mut().1.write_tls(&mut records).unwrap();
    }
    records.extend(std::iter::repeat_n(0x17u8, 6000));
    tls.get_mut().0.write_all(&records).await.unwrap();
    let (mut other, _) = server.user("other").await;
    other
        .ping()
        .await
        .expect("the shard still serves its other connections");
}

/// A ClientHello as a real client sends it, from a client that trusts nothing: the server
/// cannot tell, and the test never gets past the server's answer.
fn client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Sends a ClientHello on a new connection from `source` (a loopback address) and returns the
/// first bytes the server answers with (empty: closed, or reset, without a word), waiting at
/// most `WAIT_DEADLINE`.
async fn hello_and_answer(
    addr: std::net::SocketAddr,
    source: [u8; 4],
) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    // A reset may come before the write does: that is a refusal too.
    let _ = tcp.write_all(&client_hello()).await;
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(common::WAIT_DEADLINE, tcp.read(&mut answer))
        .await
        .expect("the server answers or closes")
        .unwrap_or(0);
    answer.truncate(n);
    (tcp, answer)
}

fn refused_in_flight(server: &TestServer) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| {
            k.starts_with("ringchat_connections_refused_total{")
                && k.contains(r#"reason="tls_handshakes_in_flight""#)
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The handshakes in flight are bounded per shard and per client, and only handshakes count:
/// sockets that send nothing hold no place, so they cannot lock real clients out.
#[tokio::test]
async fn tls_handshakes_past_the_shards_or_a_clients_share_are_closed_before_any_crypto() {
    const IN_FLIGHT: u8 = 8;
    // A quarter of the places for one client.
    const SHARE: u8 = IN_FLIGHT / 4;
    // One shard, so every handshake counts against the same gate.
    let server = TestServer::start_tls(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__TLS_HANDSHAKES_IN_FLIGHT_PER_SHARD_MAX", "8"),
    ]);
    let addr = server.tls.unwrap();
    let cert = server.cert_pem.as_ref().unwrap();
    let mut open = FramedClient::new(tls_connect(addr, cert).await.unwrap());
    assert!(matches!(open.request(1, hello()).await, Body::HelloOk(_)));
    // More silent sockets than there are places: they take none.
    let mut silent = Vec::new();
    for _ in 0..3 * IN_FLIGHT {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Clients that send a ClientHello and stop there: the server answers each (the key
    // exchange and signature done), and each holds its place while it waits. One client
    // (127.0.0.2) gets its share, then is refused.
    let mut stalled = Vec::new();
    let answered = |answer: &Vec<u8>| answer.first() == Some(&0x16);
    for _ in 0..SHARE {
        let (tcp, answer) = hello_and_answer(addr, [127, 0, 0, 2]).await;
        assert!(answered(&answer), "a handshake record: {answer:?}");
        stalled.push(tcp);
    }
    let (_refused, answer) = hello_and_answer(addr, [127, 0, 0, 2]).await;
    assert!(
        answer.is_empty(),
        "past its share, refused without crypto; got {} bytes of handshake",
        answer.len()
    );
    assert_eq!(refused_in_flight(&server), 1.0);
    // Other clients take the shard's other places, then the shard is full.
    for i in 0..IN_FLIGHT - SHARE {
        let (tcp, answer) = hello_and_answer(addr, [127, 0, 1, i]).await;
        assert!(
            answered(&answer),
            "client {i}: a handshake record: {answer:?}"
        );
        stalled.push(tcp);
    }
    let (_refused, answer) = hello_and_answer(addr, [127, 0, 2, 1]).await;
    assert!(answer.is_empty(), "past the shard's places: refused");
    assert_eq!(refused_in_flight(&server), 2.0);
    // The session already open is served all the while.
    let ping = Body::Ping(v1::Ping { client_time_ms: 7 });
    assert!(matches!(open.request(2, ping).await, Body::Pong(_)));
    // Their places come back when they go: a new client completes its handshake, though the
    // silent sockets are still there.
    drop(stalled);
    let deadline = Instant::now() + common::WAIT_DEADLINE;
    let mut c = loop {
        match tls_connect(addr, cert).await {
            Ok(tls) => break FramedClient::new(tls),
            Err(err) => assert!(Instant::now() < deadline, "no place came back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(matches!(c.request(1, hello()).await, Body::HelloOk(_)));
    drop(silent);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_sighup_and_a_broken_pair_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let pair = || ringchat_gateway::tls::self_signed(vec!["localhost".into()]).unwrap();
    let (cert_a, key_a) = pair();
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = TestServer::start(&[
        ("GATEWAY__TLS__CERT_PATH", &cert_s),
        ("GATEWAY__TLS__KEY_PATH", &key_s),
    ]);
    let addr = server.tls.unwrap();
    tls_connect(addr, &cert_a)
        .await
        .expect("certificate A at start");

    // Renewed in place (as certbot does), then SIGHUP.
    let (cert_b, key_b) = pair();
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + common::WAIT_DEADLINE;
    while tls_connect(addr, &cert_b).await.is_err() {
        assert!(Instant::now() < deadline, "certificate B never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tls_connect(addr, &cert_a).await.is_err(),
        "A is no longer served"
    );

    // A pair that does not match (B's certificate, A's key): refused, B stays.
    std::fs::write(&key, &key_a).unwrap();
    server.signal("HUP");
    common::wait_until_async("the refused reload logged", || {
        server.log_lines_with("TLS certificate not reloaded") == 1
    })
    .await;
    let mut c = FramedClient::new(tls_connect(addr, &cert_b).await.expect("B still served"));
    assert!(matches!(c.request(1, hello()).await, Body::HelloOk(_)));
}

fn refused_for(server: &TestServer, reason: &str) -> f64 {
    let label = format!(r#"reason="{reason}""#);
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_connections_refused_total{") && k.contains(&label))
        .map(|(_, v)| *v)
        .sum()
}

/// A flood from one address: connect, write `bytes`, close, over and over, counted in the
/// returned counter; it stops when told, after `FLOOD_FOR`, or after `FLOOD_CONNS_MAX`
/// connections, whichever comes first.
fn flood(
    addr: std::net::SocketAddr,
    source: [u8; 4],
    bytes: Vec<u8>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncWriteExt;
    const FLOOD_FOR: Duration = Duration::from_secs(2);
    const FLOOD_CONNS_MAX: usize = 5_000;
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counted, stopped) = (made.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let until = Instant::now() + FLOOD_FOR;
        while !stopped.load(Relaxed)
            && Instant::now() < until
            && counted.load(Relaxed) < FLOOD_CONNS_MAX
        {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(std::net::SocketAddr::from((source, 0)))
                .unwrap();
            let Ok(mut tcp) = socket.connect(addr).await else {
                continue;
            };
            // Refused or not, it goes at once.
            let _ = tcp.write_all(&bytes).await;
            drop(tcp);
            counted.fetch_add(1, Relaxed);
        }
    });
    (made, stop, task)
}

/// A TLS handshake from `source` (a loopback address), then a registration and a login on it.
async fn tls_login_from(
    addr: std::net::SocketAddr,
    cert: &str,
    source: [u8; 4],
    username: &str,
) -> Result<(), String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(common::WAIT_DEADLINE, common::ws::tls_over(tcp, cert))
        .await
        .map_err(|_| "no handshake by the deadline".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
    let mut c = FramedClient::new(tls);
    assert!(matches!(c.request(1, hello()).await, Body::HelloOk(_)));
    let register = Body::Register(v1::Register {
        username: username.into(),
        password: common::PASSWORD.into(),
        ..Default::default()
    });
    assert!(matches!(c.request(2, register).await, Body::RegisterOk(_)));
    let login = Body::Login(password_login(username, common::PASSWORD, "d1"));
    match c.request(3, login).await {
        Body::LoginOk(_) => Ok(()),
        other => Err(format!("login: {other:?}")),
    }
}

/// Connections past the shard's burst and a second's rate at 50 a second: the gate would have
/// spent its rate by then, were they charged.
const FLOODED: usize = 64 + 50;

/// One host looping "connect, send one byte, close" spends none of the shard's handshake rate:
/// a handshake is charged only once its whole ClientHello is in, so another client's handshake
/// and login go through while the flood runs.
#[tokio::test]
async fn a_one_byte_connect_flood_does_not_spend_the_tls_handshake_rate() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = TestServer::start_tls(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__TLS_HANDSHAKES_PER_SHARD_PER_S", "50"),
    ]);
    let addr = server.tls.unwrap();
    let cert = server.cert_pem.as_ref().unwrap();
    let (made, stop, task) = flood(addr, [127, 0, 0, 2], vec![0x16]);
    common::wait_until_async("the flood under way", || made.load(Relaxed) >= FLOODED).await;
    let login = tls_login_from(addr, cert, [127, 0, 0, 3], "tina").await;
    stop.store(true, Relaxed);
    task.await.unwrap();
    login.expect("a handshake and a login during the flood");
    assert_eq!(refused_for(&server, "tls_handshake_rate"), 0.0);
}

/// One host sending whole ClientHellos (each costing the shard its crypto) and closing spends
/// only its share of the rate: another client's handshake and login go through.
#[tokio::test]
async fn a_client_hello_flood_from_one_host_spends_only_its_share_of_the_rate() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = TestServer::start_tls(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__TLS_HANDSHAKES_PER_SHARD_PER_S", "50"),
    ]);
    let addr = server.tls.unwrap();
    let cert = server.cert_pem.as_ref().unwrap();
    let (made, stop, task) = flood(addr, [127, 0, 0, 4], client_hello());
    common::wait_until_async("the flood under way", || made.load(Relaxed) >= FLOODED).await;
    // Refusals begin: the flood has spent what it could of the rate.
    common::wait_until_async("the flood refused", || {
        refused_for(&server, "tls_handshake_rate_client")
            + refused_for(&server, "tls_handshake_rate")
            > 0.0
    })
    .await;
    let login = tls_login_from(addr, cert, [127, 0, 0, 5], "tina").await;
    stop.store(true, Relaxed);
    task.await.unwrap();
    login.expect("a handshake and a login during the flood");
    // Refused past its share; the shard's own rate never ran out.
    assert!(refused_for(&server, "tls_handshake_rate_client") > 0.0);
    assert_eq!(refused_for(&server, "tls_handshake_rate"), 0.0);
}

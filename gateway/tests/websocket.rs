//! The WebSocket listener, spoken to by a real WebSocket client library (tokio-tungstenite):
//! binary and JSON frames, messaging across transports, ping/pong liveness, close codes, bad
//! input, and the chat page served on the same port.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::contacts::ask;
use common::groups::{create_id, send_body};
use common::ws::{Event, WsClient};
use common::{PASSWORD, TestServer};
use ringchat_bench::client::{password_login, text_message};
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

fn hello() -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "ws-test".into(),
    })
}

/// Hello, register and log in over WebSocket (binary frames).
async fn ws_user(server: &TestServer, name: &str) -> (WsClient, u64) {
    let mut ws = WsClient::connect(server.ws).await;
    assert!(matches!(ws.request(hello()).await, Body::HelloOk(_)));
    let register = Body::Register(v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        ..Default::default()
    });
    assert!(matches!(ws.request(register).await, Body::RegisterOk(_)));
    let login = Body::Login(password_login(name, PASSWORD, &format!("{name}-ws")));
    let Body::LoginOk(ok) = ws.request(login).await else {
        panic!("login failed")
    };
    (ws, ok.user_id)
}

#[tokio::test]
async fn binary_frames_carry_the_same_session_and_messages_as_tcp() {
    let server = TestServer::start(&[]);
    let (mut alice, alice_id) = ws_user(&server, "alice").await;
    let (mut bob, bob_login) = server.user("bob").await;

    let Body::SendAck(ack) = alice
        .request(text_message(bob_login.user_id, "m1", "hi bob"))
        .await
    else {
        panic!("no ack")
    };
    assert_eq!(ack.seq, 1);
    let push = bob.next_push().await.unwrap();
    assert_eq!(&push.content[..], b"hi bob");

    bob.send_text(alice_id, "m2", "hi alice")
        .await
        .unwrap()
        .expect("sent");
    loop {
        match alice.recv().await {
            Event::Frame(f) => {
                if let Some(Body::Push(p)) = f.body {
                    let m = p.message.unwrap();
                    assert_eq!((&m.content[..], m.seq), (&b"hi alice"[..], 2));
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let Body::Pong(_) = alice
        .request(Body::Ping(v1::Ping { client_time_ms: 5 }))
        .await
    else {
        panic!("no pong")
    };
}

#[tokio::test]
async fn text_frames_speak_canonical_protobuf_json() {
    let server = TestServer::start(&[]);
    let (_bob, bob_login) = server.user("bob").await;
    let mut ws = WsClient::connect(server.ws).await;
    let ok = ws
        .request_json(r#"{"requestId":"1","hello":{"protocolVersion":1,"clientName":"json"}}"#)
        .await;
    assert_eq!(ok["requestId"], "1");
    assert_eq!(ok["helloOk"]["protocolVersion"], 1);
    assert_eq!(ok["helloOk"]["frameBytesMax"], 65536);
    let reg = ws
        .request_json(r#"{"requestId":"2","register":{"username":"carol","password":"correct horse battery"}}"#)
        .await;
    assert!(reg["registerOk"]["userId"].is_string(), "{reg}");
    let login = ws
        .request_json(r#"{"requestId":"3","login":{"username":"carol","password":"correct horse battery","deviceId":"web1","platform":"PLATFORM_WEB"}}"#)
        .await;
    assert!(login["loginOk"]["token"].is_string(), "{login}");
    // content is bytes: base64 in JSON ("aGk=" is "hi").
    let send = format!(
        r#"{{"requestId":"4","send":{{"clientMsgId":"c1","toUserId":"{}","contentType":"CONTENT_TYPE_TEXT","content":"aGk="}}}}"#,
        bob_login.user_id
    );
    let ack = ws.request_json(&send).await;
    assert_eq!(
        ack["sendAck"]["seq"], "1",
        "64-bit integers are strings: {ack}"
    );
    let bad_login = ws
        .request_json(r#"{"requestId":"5","login":{"username":"carol","password":"x"}}"#)
        .await;
    assert_eq!(
        bad_login["error"]["code"],
        "ERROR_CODE_ALREADY_AUTHENTICATED"
    );
}

/// A logged-in WebSocket connection that speaks JSON, of a user made over TCP.
async fn json_login(server: &TestServer, name: &str) -> WsClient {
    let mut ws = WsClient::connect(server.ws).await;
    ws.request_json(r#"{"requestId":"1","hello":{"protocolVersion":1,"clientName":"json"}}"#)
        .await;
    let login = ws
        .request_json(&format!(
            r#"{{"requestId":"2","login":{{"username":"{name}","password":"{PASSWORD}","deviceId":"{name}-web","platform":"PLATFORM_WEB"}}}}"#
        ))
        .await;
    assert!(login["loginOk"]["token"].is_string(), "{login}");
    ws
}

/// A group's message is one shared frame per shard; its JSON is rendered once for all the
/// shard's text clients. Each gets it, whole and the same.
#[tokio::test]
async fn a_group_message_reaches_every_json_client_as_the_same_json() {
    let server = TestServer::start(&[]);
    let (mut owner, owner_login) = server.user("owner").await;
    let (mut ids, mut clients, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for name in ["ann", "ben", "cat"] {
        let (c, login) = server.user(name).await;
        tcp.push(c);
        ids.push(login.user_id);
        clients.push(json_login(&server, name).await);
    }
    let g = create_id(&mut owner, &ids, v1::JoinPolicy::Open).await;
    let Body::SendAck(ack) = ask(&mut owner, send_body(g, "m1", "hello", &[], false)).await else {
        panic!("no ack")
    };
    let mut seen = Vec::new();
    for ws in &mut clients {
        loop {
            match ws.recv().await {
                Event::Json(v) if v["push"]["message"]["clientMsgId"] == "m1" => {
                    seen.push(v);
                    break;
                }
                // The CREATED event, before it.
                Event::Json(_) => {}
                other => panic!("expected JSON, got {other:?}"),
            }
        }
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let m = &seen[0]["push"]["message"];
    assert_eq!(m["conversationId"], g.to_string(), "{m}");
    assert_eq!(m["seq"], ack.seq.to_string());
    assert_eq!(m["fromUserId"], owner_login.user_id.to_string());
    assert_eq!(m["content"], "aGVsbG8=", "\"hello\" in base64");
}

#[tokio::test]
async fn websocket_pings_count_as_liveness_and_silence_is_kicked() {
    // Pings every 200 ms against a 3 s idle timeout: a stall of a second or two on a loaded
    // machine does not end the connection the test expects to stay.
    let server = TestServer::start(&[
        ("GATEWAY__IDLE_TIMEOUT_MS", "3000"),
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", "1000"),
    ]);
    let (mut ws, _) = ws_user(&server, "pinger").await;
    // Only WebSocket pings for well over the idle timeout: the connection stays.
    let until = Instant::now() + Duration::from_millis(6000);
    while Instant::now() < until {
        ws.send_message(Message::Ping(vec![7u8].into())).await;
        match ws.recv().await {
            Event::Pong(p) => assert_eq!(p, vec![7]),
            other => panic!("expected a pong, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then silence: kicked with Kicked{idle_timeout} and close 1008.
    let (code, reason, seen) = ws.until_close().await;
    assert_eq!((code, reason.as_str()), (1008, "KICK_REASON_IDLE_TIMEOUT"));
    assert!(seen.iter().any(|e| matches!(e, Event::Frame(f)
        if matches!(&f.body, Some(Body::Kicked(k)) if k.reason == v1::KickReason::IdleTimeout as i32))));
}

#[tokio::test]
async fn bad_input_gets_an_error_and_a_close_code() {
    let server = TestServer::start(&[
        ("LIMITS__FRAME_BYTES_MAX", "1024"),
        ("LIMITS__MESSAGE_BYTES_MAX", "512"),
    ]);

    let mut ws = WsClient::connect(server.ws).await;
    ws.send_json("{not json").await;
    let (code, reason, seen) = ws.until_close().await;
    assert_eq!((code, reason.as_str()), (1007, "ERROR_CODE_BAD_FRAME"));
    assert!(matches!(&seen[..], [Event::Json(v)] if v["error"]["code"] == "ERROR_CODE_BAD_FRAME"));

    let mut ws = WsClient::connect(server.ws).await;
    ws.send_message(Message::Binary(vec![0u8; 2000].into()))
        .await;
    let (code, reason, _) = ws.until_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "ERROR_CODE_FRAME_TOO_LARGE")
    );

    let mut ws = WsClient::connect(server.ws).await;
    ws.send(Body::Ping(v1::Ping { client_time_ms: 1 })).await;
    let (code, reason, seen) = ws.until_close().await;
    assert_eq!((code, reason.as_str()), (1008, "ERROR_CODE_HELLO_REQUIRED"));
    assert!(matches!(&seen[..], [Event::Frame(f)]
        if matches!(&f.body, Some(Body::Error(e)) if e.code == ErrorCode::HelloRequired as i32)));

    // The client closes: the server answers with the same code.
    let mut ws = WsClient::connect(server.ws).await;
    ws.send_message(Message::Close(Some(CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    })))
    .await;
    let (code, _, _) = ws.until_close().await;
    assert_eq!(code, 1000);

    // A frame without a mask breaks the protocol: close 1002.
    let mut raw = raw_upgrade(server.ws);
    raw.write_all(&[0x82, 0x01, 0x00]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    let close_at = rest
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(&rest[close_at + 2..close_at + 4], &1002u16.to_be_bytes());

    // The server still serves.
    let mut ws = WsClient::connect(server.ws).await;
    assert!(matches!(ws.request(hello()).await, Body::HelloOk(_)));
}

/// A WebSocket upgrade by hand, to send what no client library would.
fn raw_upgrade(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Sends `parts` as separate segments, then reads the response head.
fn upgrade_in_parts<'a>(
    addr: std::net::SocketAddr,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for part in parts {
        s.write_all(part).unwrap();
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("{other:?} after {}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The server parses a request head only once a line of it has ended (not after every read):
/// an upgrade still works however its head is cut into segments.
#[test]
fn an_upgrade_works_however_its_head_is_split() {
    let server = TestServer::start(&[]);
    let one_byte_each = upgrade_in_parts(server.ws, UPGRADE.chunks(1));
    assert!(one_byte_each.starts_with("HTTP/1.1 101"), "{one_byte_each}");
    for at in 1..UPGRADE.len() {
        let (a, b) = UPGRADE.split_at(at);
        let head = upgrade_in_parts(server.ws, [a, b]);
        assert!(head.starts_with("HTTP/1.1 101"), "split at {at}: {head}");
    }
}

fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (431) before it has read everything.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_chat_page_is_served_on_the_websocket_port() {
    let server = TestServer::start(&[]);
    let page = http(server.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.contains("text/html") && page.contains("app.js"),
        "{page}"
    );
    // Every script and stylesheet the page names is served (a file left out of http.rs is not).
    let files: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with('/') && (s.ends_with(".js") || s.ends_with(".css")))
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let got = http(
            server.ws,
            format!("GET {file} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{file}: {got}");
        assert!(
            !got.contains("unsafe-inline"),
            "{file}: the CSP allows inline code"
        );
    }
    assert!(
        page.contains("Content-Security-Policy: default-src 'self'"),
        "{page}"
    );
    // No other site may frame the page (clickjacking), nor redirect its links or forms.
    for directive in [
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(page.contains(directive), "{directive} missing: {page}");
    }
    let missing = http(server.ws, b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let not_ws = http(server.ws, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(not_ws.starts_with("HTTP/1.1 426"), "{not_ws}");
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    let too_big = http(server.ws, &huge);
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    // The admin listener's paths are not served here: the page server knows none of them.
    for path in ["/api/users", "/api/audit", "/metrics", "/api/openapi.json"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = http(server.ws, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        // …while the admin listener does answer them (401 without a key, or the page).
        let admin = http(server.admin, request.as_bytes());
        assert!(
            !admin.starts_with("HTTP/1.1 404"),
            "{path} on admin: {admin}"
        );
    }
}

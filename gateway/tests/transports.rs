//! Session behaviours on every transport: each behaviour is written once and run as its own test
//! on TCP, TLS, WebSocket and WebSocket over TLS (`handshake_timeout::wss`, …), through real
//! sockets against the real binary, so a transport that misbehaves fails by name.

mod common;

use std::time::Duration;

use common::TestServer;
use common::transport::{AnyClient, Kind, REPLY_TIMEOUT, deadline, describe};
use ringchat_bench::client::text_message;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};

/// Generates one test per transport for each behaviour: `mod behaviour { fn tcp, tls, ws, wss }`.
macro_rules! on_every_transport {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use super::common::transport::Kind;

            #[tokio::test]
            async fn tcp() {
                super::$behaviour(Kind::Tcp).await;
            }

            #[tokio::test]
            async fn tls() {
                super::$behaviour(Kind::Tls).await;
            }

            #[tokio::test]
            async fn ws() {
                super::$behaviour(Kind::Ws).await;
            }

            #[tokio::test]
            async fn wss() {
                super::$behaviour(Kind::Wss).await;
            }
        }
    )*};
}

on_every_transport!(
    handshake_timeout,
    heartbeats,
    oversize_frame,
    garbage_frame,
    slow_consumer,
    shutdown_notice,
    shutdown_notice_while_opening,
    server_full,
    login_then_messaging,
);

/// How long a close may take to arrive once it is due.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Hello but no login: `Kicked{HANDSHAKE_TIMEOUT}` at the handshake timeout, then close.
async fn handshake_timeout(kind: Kind) {
    const TIMEOUT_MS: u64 = 1000;
    let server = kind.server(&[("GATEWAY__HANDSHAKE_TIMEOUT_MS", "1000")]);
    let connected = tokio::time::Instant::now();
    let mut c = AnyClient::connect(&server, kind).await;
    c.hello().await;
    c.expect_kicked_then_closed(
        KickReason::HandshakeTimeout,
        deadline(Duration::from_millis(TIMEOUT_MS) + CLOSE_WITHIN),
    )
    .await;
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS / 2),
        "{kind}: kicked after {waited:?}, well before the {TIMEOUT_MS} ms handshake timeout"
    );
}

/// A logged-in client pinging every third of the idle timeout stays past two idle timeouts,
/// while a silent one on the same server is kicked with `IDLE_TIMEOUT`.
async fn heartbeats(kind: Kind) {
    const IDLE_MS: u64 = 1500;
    let server = kind.server(&[
        ("GATEWAY__IDLE_TIMEOUT_MS", "1500"),
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", "500"),
    ]);
    let (mut active, _) = AnyClient::user(&server, kind, "active").await;
    let (mut silent, _) = AnyClient::user(&server, kind, "silent").await;
    let started = tokio::time::Instant::now();
    let silent_end = tokio::spawn(async move {
        let until = deadline(Duration::from_millis(IDLE_MS) + CLOSE_WITHIN);
        silent.last_body_before_close(until).await
    });
    let mut silent_end = std::pin::pin!(silent_end);
    let mut silent_done = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(IDLE_MS / 3));
    // Ping until the silent one is gone and two idle timeouts have passed.
    while !silent_done || started.elapsed() < Duration::from_millis(2 * IDLE_MS + IDLE_MS / 3) {
        tokio::select! {
            end = &mut silent_end, if !silent_done => {
                silent_done = true;
                let last = end.expect("the silent client's task");
                assert!(
                    matches!(&last, Some(Body::Kicked(k)) if k.reason == KickReason::IdleTimeout as i32),
                    "{kind}: the silent client should get Kicked{{IDLE_TIMEOUT}} then close, got {} then close",
                    describe(last.as_ref())
                );
            }
            _ = ticker.tick() => {
                active.ping().await;
            }
        }
    }
    active.ping().await;
}

/// A frame over `frame_bytes_max`: `Error{FRAME_TOO_LARGE}`, then close.
async fn oversize_frame(kind: Kind) {
    let server = kind.server(&[
        ("LIMITS__FRAME_BYTES_MAX", "1024"),
        ("LIMITS__MESSAGE_BYTES_MAX", "512"),
    ]);
    let mut c = AnyClient::connect(&server, kind).await;
    c.hello().await;
    c.send_payload(&[0u8; 2000]).await;
    c.expect_error_then_closed(ErrorCode::FrameTooLarge, deadline(CLOSE_WITHIN))
        .await;
}

/// A well-sized frame that is not a protobuf `Frame`: `Error{BAD_FRAME}`, then close.
async fn garbage_frame(kind: Kind) {
    let server = kind.server(&[]);
    let mut c = AnyClient::connect(&server, kind).await;
    c.hello().await;
    c.send_payload(&[0xff, 0xff, 0xff, 0xff]).await;
    c.expect_error_then_closed(ErrorCode::BadFrame, deadline(CLOSE_WITHIN))
        .await;
}

/// A logged-in client that never reads while another user sends it large messages is dropped:
/// the server counts a `SLOW_CONSUMER` kick, and the connection ends.
async fn slow_consumer(kind: Kind) {
    const SIZE: usize = 16 * 1024;
    // 16 MiB: several times what the socket buffers (a few MiB) and 64 queued frames hold.
    const COUNT: usize = 1024;
    const PIPELINE: usize = 32;
    let server = kind.server(&[
        ("GATEWAY__OUTBOUND_FRAMES_MAX", "64"),
        ("STORAGE__DURABILITY", "none"),
    ]);
    let (mut sender, _) = server.user("sender").await;
    let mut slow = AnyClient::connect_with_recv_buffer(&server, kind, 4096).await;
    let recipient = slow.signup("recipient").await.user_id;
    let kicked_before = slow_consumer_kicks(&server);

    // Send until the kick shows (it is counted once the server has given up on the stalled
    // write, a moment after the queue overflowed), or all of them.
    let mut sent = 0;
    while sent < COUNT && slow_consumer_kicks(&server) <= kicked_before {
        let mut pending = Vec::with_capacity(PIPELINE);
        for _ in 0..PIPELINE {
            let body = Body::Send(v1::Send {
                client_msg_id: format!("c{sent}"),
                to_user_id: recipient,
                content_type: v1::ContentType::Custom as i32,
                content: vec![b'x'; SIZE].into(),
                ..Default::default()
            });
            pending.push(sender.send(body).await.unwrap());
            sent += 1;
        }
        for rid in pending {
            let reply = sender.reply_to(rid).await.unwrap();
            assert!(matches!(reply, Body::SendAck(_)), "{kind}: {reply:?}");
        }
    }
    let until = deadline(Duration::from_secs(20));
    while slow_consumer_kicks(&server) <= kicked_before {
        if tokio::time::Instant::now() >= until {
            let mut kicks: Vec<_> = server
                .metrics()
                .into_iter()
                .filter(|(k, _)| k.starts_with("ringchat_kicks_total"))
                .collect();
            kicks.sort_by(|a, b| a.0.cmp(&b.0));
            panic!(
                "{kind}: no SLOW_CONSUMER kick after {sent} messages of {SIZE} bytes to a client that reads nothing; kicks: {kicks:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever it still gets (possibly ending inside a frame the server had to cut), the
    // connection ends.
    let until = deadline(Duration::from_secs(30));
    while slow.recv(until).await.is_some() {}
}

/// `ringchat_kicks_total` for slow consumers, over every shard.
fn slow_consumer_kicks(server: &TestServer) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| {
            k.starts_with("ringchat_kicks_total{")
                && k.contains("reason=\"KICK_REASON_SLOW_CONSUMER\"")
        })
        .map(|(_, v)| v)
        .sum()
}

/// A client whose socket was accepted, but which opens its transport (TLS handshake, WebSocket
/// upgrade) only once the server is stopping: the opening completes and the client is told
/// `Kicked{SERVER_SHUTDOWN}` (on WebSocket, then close 1001). Before, the server closed the
/// socket at once with the opening unread: a reset or the end of the stream, no reason.
async fn shutdown_notice_while_opening(kind: Kind) {
    let mut server = kind.server(&[]);
    let shards = server.log_lines_with("shard running");
    let tcp = AnyClient::connect_socket(&server, kind).await;
    server.signal("TERM");
    common::wait_until_async("every shard is stopping", || {
        server.log_lines_with("shard stopping") >= shards
    })
    .await;
    let mut c = AnyClient::try_open(&server, kind, tcp)
        .await
        .unwrap_or_else(|e| panic!("{kind}: the opening after the stop began: {e:#}"));
    c.expect_kicked_then_closed(KickReason::ServerShutdown, deadline(CLOSE_WITHIN))
        .await;
    drop(c);
    let status = server.wait_exit();
    assert!(
        status.success(),
        "{kind}: the server exited with {status:?}"
    );
}

/// SIGTERM: a logged-in client gets `Kicked{SERVER_SHUTDOWN}`, then close; the server exits 0.
async fn shutdown_notice(kind: Kind) {
    let mut server = kind.server(&[]);
    let (mut c, _) = AnyClient::user(&server, kind, "alice").await;
    server.signal("TERM");
    c.expect_kicked_then_closed(KickReason::ServerShutdown, deadline(CLOSE_WITHIN))
        .await;
    drop(c);
    let status = server.wait_exit();
    assert!(
        status.success(),
        "{kind}: the server exited with {status:?}"
    );
    // Every handle on the sequencer's queue went with the shards, so the commit thread drained
    // and stopped rather than being abandoned after its timeout.
    let log = std::fs::read_to_string(&server.log_path).expect("the server's log");
    assert!(
        log.contains("commit thread stopped") && !log.contains("did not stop in time"),
        "{kind}: the commit thread did not stop cleanly; log:\n{}",
        server.log_tail()
    );
}

/// A shard at `conns_per_shard_max`: one connection more gets `Error{SERVER_FULL}`, then close;
/// the others keep being served.
async fn server_full(kind: Kind) {
    let server = kind.server(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__CONNS_PER_SHARD_MAX", "2"),
    ]);
    let mut a = AnyClient::connect(&server, kind).await;
    let mut b = AnyClient::connect(&server, kind).await;
    a.hello().await;
    b.hello().await;
    let mut extra = match AnyClient::try_connect(&server, kind, None).await {
        Ok(c) => c,
        Err(e) => panic!(
            "{kind}: the connection over the limit failed before any frame ({e:#}); expected Error{{SERVER_FULL}} then close"
        ),
    };
    extra
        .expect_error_then_closed(ErrorCode::ServerFull, deadline(CLOSE_WITHIN))
        .await;
    a.ping().await;
    b.ping().await;
}

/// Two users register and log in over the transport; a message reaches the peer as a push and
/// the sender gets its ack.
async fn login_then_messaging(kind: Kind) {
    let server = kind.server(&[]);
    let (mut alice, alice_ok) = AnyClient::user(&server, kind, "alice").await;
    let (mut bob, bob_ok) = AnyClient::user(&server, kind, "bob").await;
    let ack = match alice
        .request(text_message(bob_ok.user_id, "m1", "hello bob"))
        .await
    {
        Body::SendAck(ack) => ack,
        other => panic!("{kind}: Send answered with {other:?}"),
    };
    assert_eq!(ack.seq, 1, "{kind}: {ack:?}");
    let until = deadline(REPLY_TIMEOUT);
    let message = loop {
        let frame = bob
            .recv(until)
            .await
            .unwrap_or_else(|| panic!("{kind}: bob's connection closed before the push"));
        if let Some(Body::Push(p)) = frame.body {
            break p.message.expect("a pushed message");
        }
    };
    assert_eq!(&message.content[..], b"hello bob", "{kind}");
    assert_eq!(
        (message.from_user_id, message.seq, message.conversation_id),
        (alice_ok.user_id, ack.seq, ack.conversation_id),
        "{kind}"
    );
}

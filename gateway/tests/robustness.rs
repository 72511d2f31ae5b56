//! Bad input, many connections, shards, shutdown and restart.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestServer, expect_error_then_closed, expect_kicked_then_closed};
use ringchat_bench::client::Client;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use ringchat_proto::{Body, Frame};

#[tokio::test]
async fn garbage_bytes_get_an_error_and_a_close_and_nobody_else_notices() {
    let server = TestServer::start(&[]);
    let (mut bystander, _) = server.user("bystander").await;

    // An HTTP request: its first four bytes read as a length far over the limit.
    let mut http = server.client().await;
    http.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut http).await,
        ErrorCode::FrameTooLarge
    );

    // A well-sized frame whose bytes are not protobuf.
    let mut junk = server.client().await;
    junk.hello().await.unwrap();
    junk.send_raw(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(
        expect_error_then_closed(&mut junk).await,
        ErrorCode::BadFrame
    );

    bystander
        .ping()
        .await
        .expect("other connections are unaffected");
}

#[tokio::test]
async fn a_length_prefix_over_the_limit_is_refused_before_the_body() {
    let server = TestServer::start(&[
        ("LIMITS__FRAME_BYTES_MAX", "1024"),
        ("LIMITS__MESSAGE_BYTES_MAX", "512"),
    ]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    // Announce 1025 bytes and send none of them: the server must not wait for them.
    c.send_raw(&1025u32.to_be_bytes()).await.unwrap();
    assert_eq!(
        expect_error_then_closed(&mut c).await,
        ErrorCode::FrameTooLarge
    );

    // A frame of exactly the limit is read and answered (here: a password far too long).
    let mut ok = server.client().await;
    ok.hello().await.unwrap();
    let mut password = String::new();
    let frame = loop {
        let frame = Frame {
            request_id: 5,
            body: Some(Body::Register(v1::Register {
                username: "alice".into(),
                password: password.clone(),
                ..Default::default()
            })),
        };
        if prost::Message::encoded_len(&frame) == 1024 {
            break frame;
        }
        password.push('x');
    };
    ok.send_frame(&frame).await.unwrap();
    let Body::Error(e) = ok.reply_to(5).await.unwrap() else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::InvalidArgument as i32);
    ok.ping().await.unwrap();
}

#[tokio::test]
async fn a_frame_cut_in_the_middle_then_closed_leaves_the_server_well() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let whole = ringchat_proto::encode_to_bytes(&Frame {
        request_id: 9,
        body: Some(Body::Ping(v1::Ping {
            client_time_ms: 123_456,
        })),
    });
    c.send_raw(&whole[..whole.len() / 2]).await.unwrap();
    drop(c);
    let (mut after, _) = server.user("after").await;
    after.ping().await.unwrap();
    // The cut connection is gone from the gauges once the server noticed the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open = server.metric_sum("ringchat_connections");
        if open == 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections gauge stuck at {open}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_frame_split_over_many_writes_is_reassembled() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let whole = ringchat_proto::encode_to_bytes(&Frame {
        request_id: 77,
        body: Some(Body::Ping(v1::Ping { client_time_ms: 42 })),
    });
    for byte in whole.iter() {
        c.send_raw(&[*byte]).await.unwrap();
    }
    let Body::Pong(p) = c.reply_to(77).await.unwrap() else {
        panic!()
    };
    assert_eq!(p.client_time_ms, 42);
}

#[tokio::test]
async fn a_thousand_connections_log_in_at_once_on_both_shards() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0, 1]"),
        ("ACCOUNTS__HASH_CONCURRENCY", "4"),
    ]);
    let addr = server.tcp;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        tasks.spawn(async move {
            let name = format!("user{i:04}");
            let (mut c, ok) = Client::signup(addr, &name, PASSWORD, "d").await?;
            c.ping().await?;
            anyhow::Ok((c, ok.user_id))
        });
    }
    let mut clients = Vec::new();
    let mut ids = std::collections::HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (c, id) = joined.unwrap().unwrap();
        assert!(ids.insert(id), "user ids are unique");
        clients.push(c);
    }
    assert_eq!(ids.len(), 1000);
    let metrics = server.metrics();
    let authed: Vec<f64> = (0..2)
        .map(|s| metrics[&format!("ringchat_authenticated_connections{{shard=\"{s}\"}}")])
        .collect();
    assert_eq!(authed.iter().sum::<f64>(), 1000.0, "{authed:?}");
    assert!(
        authed.iter().all(|&n| n > 0.0),
        "both shards accept: {authed:?}"
    );
    assert_eq!(metrics["ringchat_online_users"], 1000.0);
}

#[tokio::test]
async fn a_full_shard_refuses_with_server_full() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__CONNS_PER_SHARD_MAX", "2"),
    ]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.hello().await.unwrap();
    b.hello().await.unwrap();
    let mut c = server.client().await;
    assert_eq!(
        expect_error_then_closed(&mut c).await,
        ErrorCode::ServerFull
    );
    a.ping().await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_every_client_and_exits_cleanly() {
    let mut server = TestServer::start(&[]);
    let mut clients = Vec::new();
    for name in ["ann", "ben", "cat"] {
        clients.push(server.user(name).await.0);
    }
    let mut unauthenticated = server.client().await;
    unauthenticated.hello().await.unwrap();
    clients.push(unauthenticated);
    server.signal("TERM");
    for c in &mut clients {
        assert_eq!(
            expect_kicked_then_closed(c).await,
            KickReason::ServerShutdown
        );
    }
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_restart_keeps_accounts_and_tokens() {
    let mut server = TestServer::start(&[]);
    let (_c, ok) = server.user("alice").await;
    drop(_c);
    assert!(server.stop().success());
    server.restart();
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let by_token = c
        .login_token(ok.user_id, &ok.token, "d")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_token.user_id, ok.user_id);
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let by_password = c
        .login_password("alice", PASSWORD, "d2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_password.user_id, ok.user_id);
    // Ids continue after the restart, never reused.
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let next = c.register("bob", PASSWORD).await.unwrap().unwrap();
    assert_eq!(next, ok.user_id + 1);
}

#[tokio::test]
async fn the_epoll_driver_serves_too() {
    let server = TestServer::start(&[("GATEWAY__DRIVER", "epoll")]);
    let (mut c, _) = server.user("alice").await;
    c.ping().await.unwrap();
    assert_eq!(
        server.metric("ringchat_shard_driver{shard=\"0\",driver=\"epoll\"}"),
        1.0
    );
}

/// Sends `count` messages of `size` bytes from `sender` to `to`, 32 in flight; every one is
/// acknowledged.
fn send_many(
    mut sender: Client,
    to: u64,
    count: usize,
    size: usize,
) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        for i in 0..count {
            let body = Body::Send(v1::Send {
                client_msg_id: format!("c{i}"),
                to_user_id: to,
                content_type: v1::ContentType::Custom as i32,
                content: vec![b'x'; size].into(),
                ..Default::default()
            });
            pending.push_back(sender.send(body).await.unwrap());
            if pending.len() >= 32 {
                let rid = pending.pop_front().unwrap();
                let reply = sender.reply_to(rid).await.unwrap();
                assert!(matches!(reply, Body::SendAck(_)), "{reply:?}");
            }
        }
        for rid in pending {
            let reply = sender.reply_to(rid).await.unwrap();
            assert!(matches!(reply, Body::SendAck(_)), "{reply:?}");
        }
        sender
    })
}

/// A client on a slow link (a small receive window, read slowly) logged in as `username`.
async fn slow_link(server: &TestServer, username: &str) -> Client {
    let mut slow = Client::connect_with_recv_buffer(server.tcp, 4096)
        .await
        .unwrap();
    slow.hello().await.unwrap();
    slow.login_password(username, PASSWORD, "slow-link")
        .await
        .unwrap()
        .unwrap();
    slow
}

/// While a backlog goes out to a client, the server reads nothing from it (its pings
/// included). A healthy client on a slow link, taking a backlog for several idle timeouts
/// while it pings, stays: the bytes its link acknowledges count as hearing from it. It was
/// kicked with `IDLE_TIMEOUT`.
#[tokio::test]
async fn a_slow_link_taking_a_long_backlog_is_not_kicked_as_idle() {
    const COUNT: usize = 300;
    const SIZE: usize = 16 * 1024;
    let server = TestServer::start(&[
        ("GATEWAY__IDLE_TIMEOUT_MS", "1000"),
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", "300"),
        ("STORAGE__DURABILITY", "none"),
    ]);
    let (sender, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1.user_id;
    let mut slow = slow_link(&server, "recipient").await;
    let sending = send_many(sender, recipient, COUNT, SIZE);
    // 16 KiB every 10 ms: about 5 s for the 4.9 MB, five idle timeouts.
    let started = std::time::Instant::now();
    let mut last_ping = std::time::Instant::now();
    let mut pushed = 0;
    while pushed < COUNT {
        if last_ping.elapsed() >= Duration::from_millis(300) {
            slow.send(Body::Ping(v1::Ping { client_time_ms: 1 }))
                .await
                .unwrap();
            last_ping = std::time::Instant::now();
        }
        match slow.recv_timeout().await.unwrap() {
            Some(Frame {
                body: Some(Body::Push(_)),
                ..
            }) => pushed += 1,
            Some(Frame {
                body: Some(Body::Kicked(k)),
                ..
            }) => panic!(
                "kicked ({:?}) after {pushed} of {COUNT} messages, {:?} in",
                KickReason::try_from(k.reason),
                started.elapsed()
            ),
            Some(_) => {}
            None => panic!("closed after {pushed} of {COUNT} messages"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() > Duration::from_millis(2000),
        "the backlog went out in {:?}, not slowly enough to test anything",
        started.elapsed()
    );
    sending.await.unwrap();
    slow.ping().await.expect("still connected");
}

/// On the epoll driver a socket that stays readable is ready again at once, so a connection's
/// task never waited while its client kept sending: a client streaming WebSocket pongs (which
/// need no answer) held its shard's thread, and nobody else on the shard was served until it
/// stopped. Each connection now lets the others run after a few reads in a row.
#[tokio::test]
async fn a_client_that_never_stops_sending_does_not_starve_its_shard_on_epoll() {
    never_stops_sending("epoll").await;
}

/// The same on io_uring, where each readiness is a completion of its own.
#[tokio::test]
async fn a_client_that_never_stops_sending_does_not_starve_its_shard_on_io_uring() {
    never_stops_sending("io_uring").await;
}

async fn never_stops_sending(driver: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[("GATEWAY__DRIVER", driver), ("GATEWAY__CORES", "[0]")]);
    let (mut bystander, _) = server.user("bystander").await;

    let mut flood = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    flood
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        flood.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Masked, empty pongs: 6 bytes each, no answer. The server's replies (none expected) are
    // left unread.
    let pongs: Vec<u8> = std::iter::repeat_n([0x8a, 0x80, 1, 2, 3, 4], 64 * 1024 / 6)
        .flatten()
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flooding = tokio::spawn({
        let (stop, written) = (
            std::sync::Arc::clone(&stop),
            std::sync::Arc::clone(&written),
        );
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if flood.write_all(&pongs).await.is_err() {
                    break;
                }
                written.fetch_add(pongs.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    // The flood is under way: the shard has taken more than the socket buffers hold.
    common::wait_until_async("the flood under way", || {
        written.load(std::sync::atomic::Ordering::Relaxed) > 256 * 1024
    })
    .await;
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        bystander.ping().await.unwrap();
        let mut newcomer = server.client().await;
        newcomer.hello().await.unwrap();
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flooding.await.unwrap();
    let written = written.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        served.is_ok(),
        "{driver}: the shard served nobody else within 5 s while one client sent pongs ({written} bytes)"
    );
    assert!(
        written > 256 * 1024,
        "only {written} bytes of pongs: no flood"
    );
    bystander.ping().await.unwrap();
}

/// A connection the server closed (here a bad frame: `Error`, then its end of the stream) is
/// drained for a moment, so that the client reads the last frames rather than a reset. A
/// client that floods meanwhile must not hold the shard there either: on epoll the drain's
/// readiness never waits, and before, its loop never let the shard's other tasks (nor its
/// own one-second grace) run for as long as the flood went on.
#[tokio::test]
async fn a_client_that_floods_a_closing_connection_does_not_hold_its_shard_on_epoll() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    /// The flood's own bound, should the test fail before it stops it.
    const FLOOD_FOR: Duration = Duration::from_secs(15);
    let server = TestServer::start(&[
        ("GATEWAY__DRIVER", "epoll"),
        ("GATEWAY__CORES", "[0]"),
        // Small reads: the drain, not the client, is the slow side of the flood, so its socket
        // always has bytes waiting (as a busy shard's would).
        ("GATEWAY__READ_BUFFER_BYTES", "1024"),
    ]);
    let (mut bystander, _) = server.user("bystander").await;

    let mut closing = server.client().await;
    closing.hello().await.unwrap();
    closing
        .send_raw(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    // Told why and closed: the server drains what comes from now on.
    assert_eq!(
        expect_error_then_closed(&mut closing).await,
        ErrorCode::BadFrame
    );
    let flood = closing.into_parts().0.into_std().unwrap();
    flood.set_nonblocking(false).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    // A thread of its own, writing as fast as the socket takes it.
    let flooding = std::thread::spawn({
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        move || -> std::io::Result<()> {
            let mut flood = flood;
            let chunk = vec![0x5a; 1024 * 1024];
            let until = std::time::Instant::now() + FLOOD_FOR;
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                flood.write_all(&chunk)?;
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            Ok(())
        }
    });
    common::wait_until_async("the flood under way", || {
        written.load(Ordering::Relaxed) > 4 * 1024 * 1024
    })
    .await;
    let served = tokio::time::timeout(Duration::from_secs(5), bystander.ping()).await;
    // The drain's grace ends and the socket is closed under the flood: its writes fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !flooding.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = flooding.join().unwrap();
    let written = written.load(Ordering::Relaxed);
    assert!(
        matches!(served, Ok(Ok(_))),
        "the shard served nobody else within 5 s while a closing connection was flooded \
         ({written} bytes)"
    );
    assert!(
        flooded.is_err(),
        "the flooded connection was not closed within 5 s ({written} bytes)"
    );
    bystander.ping().await.unwrap();
}

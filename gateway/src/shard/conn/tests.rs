use super::*;
use monoio::{LegacyDriver, RuntimeBuilder};

/// Every connection keeps one: 96 bytes and its `Rc`'s 16 fill a 112-byte allocator class
/// (80 before the outbound queue counted its bytes, 88 before it kept the idle timeout its
/// session was told).
#[test]
fn a_connections_shared_state_stays_small() {
    let bytes = std::mem::size_of::<ConnShared>();
    assert!(bytes <= 96, "ConnShared is {bytes} bytes, over 96");
}

/// A connection of a shard with room, from a client that is not a load balancer.
const PLAIN: Accepted = Accepted {
    turn_away: None,
    proxied: false,
    prelogin: None,
};

/// A shard with the default settings and no backend behind it (its requests are kept).
pub(super) fn test_shard() -> (
    Rc<Shard>,
    tokio::sync::mpsc::Receiver<ringchat_backend::api::Request>,
) {
    crate::shard::tests::shard_with(crate::config::GatewayConfig::default())
}

/// A slow consumer's kick drops the frames still waiting: `Kicked` follows the write under
/// way (here stalled: the client reads nothing until the kick), not the whole queue. Each
/// later batch of the queue got its own grace, so a client that read again within it got
/// the whole backlog first. The server's send buffer is made small, so that what the
/// kernel holds does not hide the queue (loopback's grows to megabytes).
#[test]
fn a_slow_consumer_kick_drops_the_backlog_and_sends_kicked_alone() {
    use ringchat_proto::{Body, Frame, v1};
    use std::io::Read;
    const QUEUED: u64 = 64;
    const FRAME_BYTES: usize = 16 * 1024;
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (stream, _peer) = listener.accept().await.expect("accept");
        rustix::net::sockopt::set_socket_send_buffer_size(crate::shard::stream::fd(&stream), 4096)
            .expect("SO_SNDBUF");
        let (shard, _requests) = test_shard();
        let shared = shard.register();
        let task = monoio::spawn(serve(
            Rc::clone(&shard),
            Rc::clone(&shared),
            stream,
            Listen::Tcp,
            PLAIN,
        ));
        for request_id in 0..QUEUED {
            let frame = Frame {
                request_id,
                body: Some(Body::Error(v1::Error {
                    message: "x".repeat(FRAME_BYTES),
                    ..Default::default()
                })),
            };
            shard.enqueue(&shared, ringchat_proto::encode_to_bytes(&frame));
        }
        // Let the first write start and fill the socket (the client reads nothing yet). Not
        // load-bearing: a close set before any write must drop the backlog just the same.
        monoio::time::sleep(Duration::from_millis(200)).await;
        shared.close_with(Close::Kick(KickReason::SlowConsumer));
        // The client reads again well within the grace of the write under way.
        let reader = std::thread::spawn(move || {
            let mut client = client;
            let mut buf = BytesMut::new();
            let mut frames = 0;
            loop {
                while let Some(frame) = ringchat_proto::decode(&mut buf, 1 << 20).unwrap() {
                    if let Some(Body::Kicked(k)) = frame.body {
                        return (frames, Some(k.reason));
                    }
                    frames += 1;
                }
                let mut chunk = [0u8; 64 * 1024];
                match client.read(&mut chunk) {
                    Ok(0) | Err(_) => return (frames, None),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        monoio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the connection ends");
        let (frames, kicked) = reader.join().unwrap();
        assert_eq!(
            kicked,
            Some(KickReason::SlowConsumer as i32),
            "after {frames} frames"
        );
        assert!(
            frames < QUEUED / 2,
            "{frames} of the {QUEUED} queued frames came before Kicked"
        );
    });
}

/// Every idle connection's task is this future: it must stay small. In release builds it
/// was 2,072 bytes before the work after a wake-up was boxed, 664 after, and 384 once the
/// captured connection was no longer moved into a second slot (with monoio's task header,
/// 24 bytes, and trailer, 16, that is mimalloc's 448-byte class rather than 768).
#[test]
fn a_connection_task_stays_small() {
    const TASK_BYTES_MAX: usize = if cfg!(debug_assertions) { 1024 } else { 400 };
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = monoio::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let (stream, _peer) = listener.accept().await.expect("accept");
        let (shard, _requests) = test_shard();
        // One future type serves every listener.
        let task = serve(
            Rc::clone(&shard),
            shard.conn_shared(1),
            stream,
            Listen::Tcp,
            PLAIN,
        );
        let bytes = std::mem::size_of_val(&task);
        assert!(
            bytes <= TASK_BYTES_MAX,
            "a connection's task is {bytes} bytes, over {TASK_BYTES_MAX}"
        );
    });
}

/// The client side of these tests: blocking std sockets on their own threads, length-prefixed
/// frames as on the TCP listener.
pub(super) mod client {
    use bytes::BytesMut;
    use ringchat_proto::{Body, Frame};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn send(client: &mut TcpStream, request_id: u64, body: Body) {
        let frame = ringchat_proto::frame(request_id, body);
        client
            .write_all(&ringchat_proto::encode_to_bytes(&frame))
            .expect("send");
    }

    /// The next frame; `None` at the end of the stream. Panics on a frame cut short or a read
    /// past the socket's timeout.
    pub fn recv(client: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if let Some(frame) = ringchat_proto::decode(buf, 1 << 20).expect("a whole frame") {
                return Some(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            match client.read(&mut chunk).expect("read") {
                0 => {
                    assert!(buf.is_empty(), "the stream ended inside a frame");
                    return None;
                }
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Hello, then Login (answered by the test as the backend would, `answer_logins`).
    pub fn log_in(client: &mut TcpStream, buf: &mut BytesMut) {
        use ringchat_proto::v1;
        send(
            client,
            1,
            Body::Hello(v1::Hello {
                protocol_version: ringchat_proto::PROTOCOL_VERSION,
                client_name: "conn-test".into(),
            }),
        );
        assert!(matches!(
            recv(client, buf).and_then(|f| f.body),
            Some(Body::HelloOk(_))
        ));
        send(client, 2, Body::Login(v1::Login::default()));
        assert!(matches!(
            recv(client, buf).and_then(|f| f.body),
            Some(Body::LoginOk(_))
        ));
    }
}

pub(super) const DEADLINE: Duration = Duration::from_secs(10);

pub(super) fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<LegacyDriver>> {
    RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
}

/// A connection served by `shard` on a real socket pair over loopback; the client's end with
/// a receive buffer of `recv_buffer` bytes when given (a slow reader: loopback's grows to
/// megabytes), and a read timeout of `DEADLINE`.
async fn connect(
    shard: &Rc<Shard>,
    recv_buffer: Option<usize>,
) -> (
    std::net::TcpStream,
    Rc<ConnShared>,
    monoio::task::JoinHandle<()>,
) {
    connect_on(shard, recv_buffer, Listen::Tcp).await
}

/// `connect`, served as `listen` serves it (plain ones only: the client speaks no TLS).
pub(super) async fn connect_on(
    shard: &Rc<Shard>,
    recv_buffer: Option<usize>,
    listen: Listen,
) -> (
    std::net::TcpStream,
    Rc<ConnShared>,
    monoio::task::JoinHandle<()>,
) {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    // Completes in the listener's backlog: nothing on this thread has to accept first.
    socket.connect(&addr.into()).expect("connect");
    let client = std::net::TcpStream::from(socket);
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let (stream, _peer) = listener.accept().await.expect("accept");
    if recv_buffer.is_some() {
        rustix::net::sockopt::set_socket_send_buffer_size(crate::shard::stream::fd(&stream), 4096)
            .expect("SO_SNDBUF");
    }
    let shared = shard.register();
    let task = monoio::spawn(serve(
        Rc::clone(shard),
        Rc::clone(&shared),
        stream,
        listen,
        PLAIN,
    ));
    (client, shared, task)
}

/// Answers `n` logins as the backend does (`LoginOk` and a session), whatever their order.
async fn answer_logins(
    requests: &mut tokio::sync::mpsc::Receiver<ringchat_backend::api::Request>,
    n: usize,
) {
    use ringchat_backend::api::{LoginReply, Request, SessionInfo};
    for user_id in 1..=n as u64 {
        let request = monoio::time::timeout(DEADLINE, requests.recv())
            .await
            .expect("a login in time")
            .expect("the shard's sender");
        let Request::Login { reply, .. } = request else {
            panic!("expected a login, got {request:?}");
        };
        let _ = reply.send(LoginReply {
            body: ringchat_proto::Body::LoginOk(ringchat_proto::v1::LoginOk::default()),
            session: Some(SessionInfo {
                user_id,
                device_id: "test-device".into(),
                resume: None,
            }),
        });
    }
}

/// Takes the backend's one place in its request queue: from now on a request waits for room.
fn fill_backend_queue(shard: &Shard) {
    let filler = ringchat_backend::api::Request::Closed {
        conn: ringchat_backend::api::ConnRef { shard: 0, conn: 0 },
        user_id: 0,
    };
    shard.backend.try_send(filler).expect("room for the filler");
}

/// Waits (polling, bounded) until `done` holds; longer than a client's read timeout, so that a
/// client waiting in vain says so itself.
pub(super) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + 2 * DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A request waiting for room in the backend's full queue: what is queued for the client
/// meanwhile is written (far more than `outbound_frames_max`, so it would be kicked as a slow
/// consumer if nothing was), and a kick during the wait takes effect. Before, the connection's
/// task sat in the backend's `send`: nobody wrote its queue and the kick was not seen.
#[test]
fn a_connection_waiting_for_a_full_queue_still_writes_and_hears_a_close() {
    use ringchat_proto::{Body, Frame, v1};
    const CHUNK: usize = 512;
    const CHUNKS: usize = 20;
    runtime().block_on(async {
        let (shard, mut requests) = test_shard();
        let limits = shard.gateway.outbound_limits();
        assert!(CHUNK * CHUNKS > limits.frames_max);
        let (mut client, shared, _task) = connect(&shard, None).await;
        let reader = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            client::log_in(&mut client, &mut buf);
            // Waits for the backend's full queue.
            client::send(&mut client, 3, Body::Conversations(Default::default()));
            let mut frames = 0;
            loop {
                match client::recv(&mut client, &mut buf).and_then(|f| f.body) {
                    Some(Body::Kicked(k)) => return (frames, Some(k.reason)),
                    Some(_) => frames += 1,
                    None => return (frames, None),
                }
            }
        });
        answer_logins(&mut requests, 1).await;
        fill_backend_queue(&shard);
        // Hello, Login and the request are in: the task waits for room.
        until("the request is read", || shard.stats.frames_in.get() == 3).await;
        for chunk in 0..CHUNKS {
            for i in 0..CHUNK {
                let frame = Frame {
                    request_id: (chunk * CHUNK + i) as u64,
                    body: Some(Body::Error(v1::Error::default())),
                };
                shard.enqueue(&shared, ringchat_proto::encode_to_bytes(&frame));
            }
            until("the queue is written while the request waits", || {
                shared.outbound.is_empty() || shared.close.get().is_some()
            })
            .await;
            assert_eq!(shared.close.get(), None, "closed after {chunk} chunks");
        }
        shared.close_with(Close::Kick(KickReason::Replaced));
        until("the client is told", || reader.is_finished()).await;
        let (frames, kicked) = reader.join().unwrap();
        assert_eq!(kicked, Some(KickReason::Replaced as i32));
        assert_eq!(
            frames,
            CHUNK * CHUNKS,
            "every queued frame reached the client"
        );
    });
}

/// A client a few megabytes behind, kicked (here `Replaced`): the backlog goes out whole for
/// a while, then what still waits is dropped and `Kicked` follows the batch under way. Before,
/// `Kicked` waited behind the whole backlog, the one grace ran out inside it, and the client
/// got half a frame and the end of the stream, no reason.
#[test]
fn a_kick_reaches_a_client_far_behind() {
    use ringchat_proto::{Body, Frame, v1};
    use std::io::Read;
    const QUEUED: usize = 256;
    const FRAME_BYTES: usize = 16 * 1024;
    runtime().block_on(async {
        let (shard, _requests) = test_shard();
        let (mut client, shared, _task) = connect(&shard, Some(4096)).await;
        for request_id in 0..QUEUED as u64 {
            let frame = Frame {
                request_id,
                body: Some(Body::Error(v1::Error {
                    message: "x".repeat(FRAME_BYTES),
                    ..Default::default()
                })),
            };
            shard.enqueue(&shared, ringchat_proto::encode_to_bytes(&frame));
        }
        shared.close_with(Close::Kick(KickReason::Replaced));
        // Reads a little at a time: about 800 KB/s, five seconds for the backlog.
        let reader = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let mut frames = 0;
            loop {
                while let Some(frame) =
                    ringchat_proto::decode(&mut buf, 1 << 20).expect("a whole frame")
                {
                    if let Some(Body::Kicked(k)) = frame.body {
                        return (frames, Some(k.reason));
                    }
                    frames += 1;
                }
                let mut chunk = [0u8; 4096];
                match client.read(&mut chunk) {
                    Ok(0) | Err(_) => return (frames, None),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        until("the client has read to the end", || reader.is_finished()).await;
        let (frames, kicked) = reader.join().unwrap();
        assert_eq!(
            kicked,
            Some(KickReason::Replaced as i32),
            "no Kicked after {frames} frames"
        );
        assert!(frames < QUEUED, "the whole backlog came first");
    });
}

/// Logged-in clients that close while the backend's queue is full: each socket is closed at
/// once, though telling the backend waits. Before, the connection left the shard's table
/// first (a new one could take its place) and kept its socket until the backend took the
/// news: descriptors past `conns_per_shard_max`.
#[test]
fn a_closed_connection_frees_its_socket_before_the_backend_hears_of_it() {
    const CLIENTS: usize = 3;
    runtime().block_on(async {
        let (shard, mut requests) = test_shard();
        let (logged_in, go) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go.1));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (mut client, _shared, _task) = connect(&shard, None).await;
            let (tell, wait) = (logged_in.0.clone(), std::sync::Arc::clone(&go_rx));
            clients.push(std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = BytesMut::new();
                client::log_in(&mut client, &mut buf);
                tell.send(()).unwrap();
                wait.lock().unwrap().recv().unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                // The server's end closes: the end of the stream, in time.
                client.read(&mut [0u8; 64]).map(|n| n == 0)
            }));
            answer_logins(&mut requests, 1).await;
            until("the client is logged in", || logged_in.1.try_recv().is_ok()).await;
        }
        fill_backend_queue(&shard);
        for _ in 0..CLIENTS {
            go.0.send(()).unwrap();
        }
        until("every client is answered", || {
            clients.iter().all(|c| c.is_finished())
        })
        .await;
        for client in clients {
            let closed = client.join().unwrap();
            assert!(
                matches!(closed, Ok(true)),
                "the server kept the socket: {closed:?}"
            );
        }
        assert!(shard.conns.borrow().is_empty());
        // The backend's queue is still full: none of them has been told yet.
        assert!(shard.backend.capacity() == 0);
    });
}

/// A login the shard cannot queue for the backend (its request queue full: a busy server) is
/// told `Error{UNAVAILABLE}` with a `retry_after_ms`, then on WebSocket the close 1013 (try
/// again later), as a full shard's `SERVER_FULL` is: 1001 would tell the client the node is
/// going away, and a browser would switch nodes instead of waiting. Before, it was 1001.
#[test]
fn a_busy_servers_refused_websocket_login_closes_with_try_again_later() {
    use ringchat_proto::{Body, Frame, v1};
    use tokio_tungstenite::tungstenite::{self, Message};
    runtime().block_on(async {
        let (shard, _requests) = test_shard();
        fill_backend_queue(&shard);
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::thread::spawn(move || {
            let socket = std::net::TcpStream::connect(addr).expect("connect");
            socket.set_read_timeout(Some(DEADLINE)).unwrap();
            let (mut ws, _) =
                tungstenite::client(format!("ws://{addr}/ws"), socket).expect("upgrade");
            let mut send = |request_id, body| {
                let frame = ringchat_proto::frame(request_id, body);
                // One message, one Frame: no length prefix on WebSocket.
                ws.send(Message::Binary(
                    prost::Message::encode_to_vec(&frame).into(),
                ))
                .expect("send");
            };
            send(
                1,
                Body::Hello(v1::Hello {
                    protocol_version: ringchat_proto::PROTOCOL_VERSION,
                    client_name: "conn-test".into(),
                }),
            );
            send(2, Body::Login(v1::Login::default()));
            let mut bodies = Vec::new();
            loop {
                match ws.read().expect("the server's close frame before the end") {
                    Message::Binary(b) => {
                        let frame: Frame = prost::Message::decode(&b[..]).expect("a Frame");
                        bodies.push(frame.body);
                    }
                    Message::Close(close) => {
                        let close = close.expect("a close code");
                        return (bodies, u16::from(close.code), close.reason.to_string());
                    }
                    _ => {}
                }
            }
        });
        let (stream, _peer) = listener.accept().await.expect("accept");
        let task = monoio::spawn(serve(
            Rc::clone(&shard),
            shard.register(),
            stream,
            Listen::Ws,
            PLAIN,
        ));
        until("the client has the close", || client.is_finished()).await;
        let (bodies, code, reason) = client.join().unwrap();
        assert!(matches!(bodies[0], Some(Body::HelloOk(_))), "{bodies:?}");
        let Some(Body::Error(refused)) = &bodies[1] else {
            panic!("{bodies:?}")
        };
        assert_eq!(refused.code, ErrorCode::Unavailable as i32);
        assert!(refused.retry_after_ms > 0);
        assert_eq!((code, reason.as_str()), (1013, "ERROR_CODE_UNAVAILABLE"));
        assert_eq!(shard.stats.logins_refused_backend_queue.get(), 1);
        monoio::time::timeout(DEADLINE, task)
            .await
            .expect("the connection ends");
    });
}

/// A fan-out that keeps the shard's inbox full (here from another thread, as the backend does
/// for a big group with many members online on the shard) leaves the shard's other work its
/// turns: another client's ping is answered in time, the member the frames are for (reading
/// them all) writes its queue and is not kicked as a slow consumer, and the reaper ticks.
/// Before, the inbox task never waited while events were queued (a tokio channel on monoio's
/// thread has no cooperative budget): nothing else on the shard ran until the flood ended.
#[test]
fn a_flooded_inbox_leaves_pings_writes_and_timers_their_turn() {
    use ringchat_backend::api::ShardEvent;
    use ringchat_proto::Body;
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// The flood ends by itself past this, so that a shard that never lets the test's own
    /// task run fails the test instead of hanging it.
    const FLOOD_MAX: Duration = Duration::from_secs(8);
    const PONG_WITHIN: Duration = Duration::from_secs(3);
    /// Events the inbox holds: far more than the shard applies while the flooding thread
    /// waits for a turn on a busy machine.
    const INBOX_EVENTS: usize = 4096;
    /// The member's connection id, once per event: a fan-out to that many.
    const FANOUT: usize = 256;
    runtime().block_on(async {
        let gateway = crate::config::GatewayConfig {
            // A reaper tick of 100 ms.
            handshake_timeout_ms: 800,
            ..crate::config::GatewayConfig::default()
        };
        let (shard, mut requests) = crate::shard::tests::shard_with(gateway);
        let (mut a, _, _a_task) = connect(&shard, None).await;
        let (mut b, b_shared, _b_task) = connect(&shard, None).await;
        let (flooding_tx, flooding) = std::sync::mpsc::channel::<()>();
        // One login at a time: the test's backend queue holds one request.
        let pinger = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            client::log_in(&mut a, &mut buf);
            flooding.recv().expect("the flood starts");
            let sent = Instant::now();
            client::send(&mut a, 3, Body::Ping(Default::default()));
            let reply = client::recv(&mut a, &mut buf).and_then(|f| f.body);
            (sent.elapsed(), reply)
        });
        answer_logins(&mut requests, 1).await;
        until("the pinger is logged in", || {
            shard.stats.frames_in.get() == 2
        })
        .await;
        let member = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            client::log_in(&mut b, &mut buf);
            // Reads as fast as it can, to the end.
            let mut bytes = 0;
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                match b.read(&mut chunk) {
                    Ok(0) | Err(_) => return bytes,
                    Ok(n) => bytes += n,
                }
            }
        });
        answer_logins(&mut requests, 1).await;
        until("the member is logged in", || {
            shard.stats.frames_in.get() == 4
        })
        .await;

        let (tx, inbox) = tokio::sync::mpsc::channel(INBOX_EVENTS);
        monoio::spawn(crate::shard::drain_inbox(Rc::clone(&shard), inbox));
        monoio::spawn(crate::shard::reap(Rc::clone(&shard)));
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = std::thread::spawn({
            let stop = Arc::clone(&stop);
            let ids = vec![b_shared.id; FANOUT];
            let frame = ringchat_proto::encode_to_bytes(&ringchat_proto::frame(
                0,
                Body::Pong(Default::default()),
            ));
            // The inbox stays open when the flood ends: a closed one stops the shard.
            move || {
                let started = Instant::now();
                let mut events = 0;
                while !stop.load(Ordering::Relaxed) {
                    if started.elapsed() > FLOOD_MAX {
                        return (Err(events), tx);
                    }
                    let event = ShardEvent::Fanout {
                        conns: ids.clone(),
                        frame: frame.clone(),
                    };
                    tx.blocking_send(event).expect("the inbox is open");
                    events += 1;
                    if events == 2 * INBOX_EVENTS {
                        // The inbox was full, and filled again as the shard took events.
                        flooding_tx.send(()).unwrap();
                    }
                }
                (Ok(events), tx)
            }
        });
        // Each wait below is the test's own task waiting for a timer: it runs only when the
        // shard's timers fire during the flood.
        until("the ping is answered", || pinger.is_finished()).await;
        let ticked = shard.tick.get();
        until("the reaper ticks during the flood", || {
            shard.tick.get() >= ticked + 3
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        until("the flood stops", || flooder.is_finished()).await;
        let (flood, _inbox) = flooder.join().unwrap();
        let (pong_after, reply) = pinger.join().unwrap();
        assert!(matches!(reply, Some(Body::Pong(_))), "{reply:?}");
        assert!(
            pong_after < PONG_WITHIN,
            "the ping was answered after {pong_after:?}"
        );
        assert!(
            flood.is_ok(),
            "the flood ran {FLOOD_MAX:?} before the test's task had a turn: {flood:?} events"
        );
        assert_eq!(b_shared.close.get(), None, "the member was closed");
        b_shared.close_with(Close::Kick(KickReason::Replaced));
        until("the member has read to the end", || member.is_finished()).await;
        assert!(member.join().unwrap() > 0);
    });
}

/// A logged-in client whose request waits on the server (here for room in the backend's full
/// queue) is not closed as idle while it pings on time: its pings are not read until the wait
/// is over, which is the server's doing, not the client's silence. Before, past
/// `idle_timeout_ms` the reaper kicked it `IDLE_TIMEOUT`.
#[test]
fn a_client_whose_request_waits_is_not_idle() {
    use crate::shard::live::LiveLimits;
    use ringchat_proto::Body;
    const IDLE_MS: u64 = 300;
    const PINGS: u64 = 12;
    runtime().block_on(async {
        let gateway = crate::config::GatewayConfig {
            idle_timeout_ms: IDLE_MS,
            ..crate::config::GatewayConfig::default()
        };
        let (shard, mut requests) = crate::shard::tests::shard_with(gateway);
        shard.live.set(LiveLimits {
            idle_timeout_ms: IDLE_MS,
            ..shard.live.get()
        });
        let (mut client, shared, _task) = connect(&shard, None).await;
        let (pinged_tx, pinged) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            client::log_in(&mut client, &mut buf);
            // Waits for the backend's full queue.
            client::send(&mut client, 3, Body::Conversations(Default::default()));
            // Pings at a third of the idle timeout, as a client told it does, for four times
            // the timeout.
            for request_id in 0..PINGS {
                std::thread::sleep(Duration::from_millis(IDLE_MS / 3));
                client::send(&mut client, 10 + request_id, Body::Ping(Default::default()));
            }
            pinged_tx.send(()).unwrap();
            let mut pongs = 0;
            while pongs < PINGS {
                match client::recv(&mut client, &mut buf).and_then(|f| f.body) {
                    Some(Body::Pong(_)) => pongs += 1,
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok(pongs)
        });
        monoio::spawn(crate::shard::reap(Rc::clone(&shard)));
        answer_logins(&mut requests, 1).await;
        fill_backend_queue(&shard);
        until("the request waits", || shard.stats.frames_in.get() == 3).await;
        until("the client has pinged, or is closed", || {
            pinged.try_recv().is_ok() || shared.close.get().is_some()
        })
        .await;
        assert_eq!(shared.close.get(), None, "closed while its request waited");
        // Room in the queue: the request goes on, then the pings are read and answered.
        for _ in 0..2 {
            requests.recv().await.expect("the filler, then the request");
        }
        until("the pings are answered", || client.is_finished()).await;
        assert_eq!(client.join().unwrap(), Ok(PINGS));
        assert_eq!(shared.close.get(), None);
    });
}

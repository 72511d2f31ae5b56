//! A server started again at once on its fixed ports, as a supervisor does after a crash or a
//! deploy. Its listeners close with the old process (kill -9 included: no io_uring request holds
//! them), so clients reconnecting meanwhile are refused and retry, or are served, never accepted
//! and then reset. A listener no process holds (as one an io_uring `Accept` keeps after its
//! process died, while the kernel tears the ring down) is waited for (bounded) rather than
//! refused with "port in use".

mod common;

use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::free_port;
use common::{TestServer, WAIT_DEADLINE, wait_until};
use prost::Message as _;
use ringchat_proto::{Body, PROTOCOL_VERSION, encode_to_bytes, frame, v1};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

const ROUNDS: usize = 6;
/// Connections open at each kill: each has a request in the dead process's ring, which makes
/// its teardown longer (the window in which listeners held by the ring would linger).
const IDLE_CONNECTIONS: usize = 1000;

#[tokio::test]
async fn a_server_killed_or_stopped_starts_again_at_once_on_the_same_ports() {
    let (tcp, ws) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut server =
        TestServer::start(&[("GATEWAY__TCP_LISTEN", &tcp), ("GATEWAY__WS_LISTEN", &ws)]);
    for round in 0..ROUNDS {
        // A logged-in client: its socket and the listeners have io_uring requests in flight.
        let (_client, _) = server.user(&format!("before{round}")).await;
        let idle: Vec<std::net::TcpStream> = (0..IDLE_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(&tcp).expect("connect"))
            .collect();
        if round % 3 == 2 {
            server.stop();
        } else {
            server.kill9();
        }
        drop(idle);
        // Panics, with the log, unless the server says it is ready.
        server.restart();
        assert_eq!(server.tcp.to_string(), tcp, "the same port, round {round}");
        let (_client, login) = server.user(&format!("after{round}")).await;
        assert!(login.user_id > 0);
    }
    assert_eq!(
        server.log_lines_with("already in use"),
        0,
        "{}",
        server.log_tail()
    );
    eprintln!(
        "starts that waited for a lingering listener: {}",
        server.log_lines_with("the lingering listener is gone")
    );
}

/// A socket listening on `addr` that no process holds, as a dead process's io_uring holds one
/// while the kernel tears it down: the listener's only reference is an SCM_RIGHTS message in
/// flight on a Unix socket pair, which nobody receives. Dropping the pair closes it.
fn orphan_listener(addr: &str) -> (UnixStream, UnixStream) {
    let listener = std::net::TcpListener::bind(addr).expect("bind the orphan");
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    sendmsg(&tx, &[IoSlice::new(b"l")], &mut control, SendFlags::empty()).unwrap();
    drop(listener);
    (tx, rx)
}

/// Whether any server log of this test process has a line containing `needle`.
fn any_log_has(needle: &str) -> bool {
    let prefix = format!("ringchat-test-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(needle)
        })
}

#[test]
fn a_listener_no_process_holds_is_waited_for_and_then_the_server_starts() {
    let tcp = format!("127.0.0.1:{}", free_port());
    let orphan = orphan_listener(&tcp);
    let starting = {
        let tcp = tcp.clone();
        std::thread::spawn(move || TestServer::start(&[("GATEWAY__TCP_LISTEN", &tcp)]))
    };
    // It waits (a port a live process holds is refused at once: the test below) ...
    wait_until("the server waits for the orphan listener", || {
        any_log_has("waiting for a listener no process holds")
    });
    assert!(!starting.is_finished(), "ready while the port was taken");
    // ... and starts on the port once the listener is gone.
    drop(orphan);
    let server = starting.join().expect("the server started");
    assert_eq!(server.tcp.to_string(), tcp);
    // Logged before the ready line, but the console is written from its own thread.
    wait_until("the server logs that the listener went", || {
        server.log_lines_with("the lingering listener is gone") == 1
    });
}

#[test]
fn a_port_a_live_process_listens_on_is_refused_at_once_naming_it() {
    let tcp = format!("127.0.0.1:{}", free_port());
    let _held = std::net::TcpListener::bind(&tcp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let failed = TestServer::start_expecting_failure(
        &dir.path().join("data"),
        &[("GATEWAY__TCP_LISTEN", &tcp)],
    );
    assert!(!failed.status.success());
    let by = format!("already in use by pid {}", std::process::id());
    assert!(failed.stderr.contains(&by), "{}", failed.stderr);
    assert!(
        !failed.stderr.contains("waiting for a listener"),
        "{}",
        failed.stderr
    );
}

/// Connection attempts one reconnecting client makes at most per restart (most are refused in
/// microseconds while no server listens).
const RECONNECT_ATTEMPTS_MAX: u64 = 1_000_000;
/// Attempts answered by the new server after which the client stops.
const ANSWERED_AFTER_RESTART: u64 = 20;
/// How long one attempt waits for its connect and for the reply to its Hello.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_ROUNDS: usize = 3;
/// Clients reconnecting at once: more attempts land in the first milliseconds.
const RECONNECTING_CLIENTS: usize = 4;

/// What one attempt got.
enum Attempt {
    /// The connect was refused: no listener, the client retries.
    Refused,
    /// A reply to its Hello.
    Answered,
    /// Told `server_shutdown`: the client retries.
    Kicked,
    /// Anything else: accepted and then reset or closed without a reply, or no reply in time.
    Lost(String),
}

/// Connect, Hello, read one reply.
fn attempt(addr: SocketAddr) -> Attempt {
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, ATTEMPT_TIMEOUT) {
        Ok(stream) => stream,
        // A reset while connecting is a refusal too: a SYN still in a listener's SYN queue when
        // the listener closes is answered RST, and connect fails; nothing was accepted, and the
        // client retries as after a refusal.
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Attempt::Refused;
        }
        Err(err) => return Attempt::Lost(format!("connect: {err}")),
    };
    let hello = frame(
        1,
        Body::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "restart-test".into(),
        }),
    );
    let exchanged = stream
        .set_read_timeout(Some(ATTEMPT_TIMEOUT))
        .and_then(|()| stream.write_all(&encode_to_bytes(&hello)))
        .and_then(|()| {
            let mut len = [0; 4];
            stream.read_exact(&mut len)?;
            let mut body = vec![0; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut body)?;
            Ok(body)
        });
    match exchanged.map(|body| v1::Frame::decode(&body[..]).map(|f| f.body)) {
        Ok(Ok(Some(Body::HelloOk(_)))) => Attempt::Answered,
        // Accepted by a server that is stopping, and told so.
        Ok(Ok(Some(Body::Kicked(kick))))
            if kick.reason == v1::KickReason::ServerShutdown as i32 =>
        {
            Attempt::Kicked
        }
        Ok(other) => Attempt::Lost(format!("Hello answered with {other:?}")),
        Err(err) => Attempt::Lost(format!("accepted, then: {err}")),
    }
}

/// Tallies of one client's attempts.
#[derive(Debug, Default)]
struct Reconnects {
    refused: u64,
    answered: u64,
    kicked: u64,
    /// What went wrong, for the first few lost attempts.
    lost: Vec<String>,
    lost_count: u64,
}

/// A client reconnecting in a loop from now on, as every client of a restarted server does,
/// until the new server (`restarted` set) has answered `ANSWERED_AFTER_RESTART` attempts.
fn reconnecting_client(
    addr: SocketAddr,
    restarted: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Reconnects> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + 2 * WAIT_DEADLINE;
        let mut tally = Reconnects::default();
        let mut answered_after = 0;
        for _ in 0..RECONNECT_ATTEMPTS_MAX {
            let after_restart = restarted.load(Ordering::Acquire);
            match attempt(addr) {
                Attempt::Refused => tally.refused += 1,
                Attempt::Kicked => tally.kicked += 1,
                Attempt::Answered => {
                    tally.answered += 1;
                    answered_after += u64::from(after_restart);
                }
                Attempt::Lost(why) => {
                    tally.lost_count += 1;
                    if tally.lost.len() < 5 {
                        tally.lost.push(why);
                    }
                }
            }
            if answered_after >= ANSWERED_AFTER_RESTART || Instant::now() > deadline {
                break;
            }
        }
        tally
    })
}

/// Stops the server with `stop`, then starts it again on the same ports while clients keep
/// reconnecting, from the moment the old process is gone (or, `through_stop`, from before it
/// is told to stop): every attempt is refused at connect (the client retries) or answered.
fn reconnects_after(stop: fn(&mut TestServer), through_stop: bool, driver: &str) {
    let tcp = format!("127.0.0.1:{}", free_port());
    let mut server =
        TestServer::start(&[("GATEWAY__TCP_LISTEN", &tcp), ("GATEWAY__DRIVER", driver)]);
    let addr: SocketAddr = tcp.parse().unwrap();
    for round in 0..RECONNECT_ROUNDS {
        // Open connections: requests in the process's ring, as on a loaded server.
        let idle: Vec<std::net::TcpStream> = (0..IDLE_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        assert!(matches!(attempt(addr), Attempt::Answered));
        let restarted = Arc::new(AtomicBool::new(false));
        let start_clients = || -> Vec<_> {
            (0..RECONNECTING_CLIENTS)
                .map(|_| reconnecting_client(addr, Arc::clone(&restarted)))
                .collect()
        };
        let early = if through_stop {
            start_clients()
        } else {
            vec![]
        };
        stop(&mut server);
        let clients = if through_stop { early } else { start_clients() };
        drop(idle);
        server.restart();
        restarted.store(true, Ordering::Release);
        for client in clients {
            let tally = client.join().expect("the client thread");
            eprintln!("round {round}: {tally:?}");
            assert_eq!(
                tally.lost_count,
                0,
                "round {round}: attempts accepted and then lost: {tally:?}\n{}",
                server.log_tail()
            );
            assert!(tally.answered >= ANSWERED_AFTER_RESTART, "{tally:?}");
        }
    }
}

#[test]
fn clients_reconnecting_after_a_kill_9_are_refused_or_served_never_reset() {
    reconnects_after(TestServer::kill9, false, "auto");
}

#[test]
fn clients_reconnecting_after_a_sigterm_are_refused_or_served_never_reset() {
    reconnects_after(sigterm, false, "auto");
}

#[test]
fn clients_connecting_through_a_graceful_stop_are_refused_or_answered_never_reset() {
    reconnects_after(sigterm, true, "auto");
}

/// The same listeners on monoio's epoll driver (the fallback where io_uring is off).
#[test]
fn on_the_epoll_driver_too() {
    reconnects_after(TestServer::kill9, false, "epoll");
    reconnects_after(sigterm, true, "epoll");
}

fn sigterm(server: &mut TestServer) {
    assert!(server.stop().success());
}

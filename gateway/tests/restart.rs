//! A server started again at once on its fixed ports, as a supervisor does after a crash or a
//! deploy: after a `kill -9` the kernel tears the dead process's io_uring down in the
//! background, and for tens of milliseconds its listening sockets stay in LISTEN with no
//! process. The new server must wait for them (bounded) rather than refuse to start with "port
//! in use", and then serve.

mod common;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use common::cluster::free_port;
use common::{TestServer, wait_until};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

const ROUNDS: usize = 6;
/// Connections open at each kill: each has a request in the dead process's ring, which makes
/// its teardown, and so the window in which its listeners linger, longer.
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

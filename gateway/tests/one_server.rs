//! One server per port and per data dir: a second `ringchat serve` on a running server's client
//! ports, or on its data dir, stops at start-up with a clear error, and the first one keeps
//! serving every client.

mod common;

use std::time::Duration;

use common::transport::{AnyClient, Kind};
use common::{PASSWORD, TestServer};
use ringchat_bench::client::Client;

/// Exit at start-up takes this long at most (the ready timeout covers a slow machine).
const FAIL_WITHIN: Duration = common::READY_TIMEOUT;

#[tokio::test]
async fn a_second_server_on_the_same_ports_stops_and_the_first_keeps_every_client() {
    let first = TestServer::start(&[]);
    let (tcp, ws) = (first.tcp.to_string(), first.ws.to_string());
    let other_dir = tempfile::tempdir().unwrap();
    let second = TestServer::start_expecting_failure(
        &other_dir.path().join("data"),
        &[("GATEWAY__TCP_LISTEN", &tcp), ("GATEWAY__WS_LISTEN", &ws)],
    );
    let err = &second.stderr;
    assert!(!second.status.success(), "{second:?}");
    assert!(second.elapsed < FAIL_WITHIN, "{second:?}");
    let port = first.tcp.port().to_string();
    assert!(
        err.contains("gateway.tcp_listen") && err.contains(&format!("port {port}")),
        "the error names the setting and the port:\n{err}"
    );
    assert!(
        err.contains(&format!("pid {}", first.pid())),
        "the error names the process holding the port (pid {}):\n{err}",
        first.pid()
    );

    // Every fresh connection lands on the first server: none went to a group that left.
    let addr = first.tcp;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        tasks.spawn(async move {
            let name = format!("user{i:02}");
            let (mut c, ok) = Client::signup(addr, &name, PASSWORD, "d").await?;
            c.ping().await?;
            anyhow::Ok((c, ok.user_id))
        });
    }
    let mut clients = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (c, _) = joined.unwrap().expect("a fresh TCP connection logs in");
        clients.push(c);
    }
    assert_eq!(clients.len(), 50);
    for i in 0..10 {
        let (mut c, _) = AnyClient::user(&first, Kind::Ws, &format!("web{i:02}")).await;
        c.ping().await;
    }
}

#[test]
fn a_second_server_on_the_same_ws_port_alone_stops_too() {
    let first = TestServer::start(&[]);
    let ws = first.ws.to_string();
    let other_dir = tempfile::tempdir().unwrap();
    let second = TestServer::start_expecting_failure(
        &other_dir.path().join("data"),
        &[("GATEWAY__WS_LISTEN", &ws)],
    );
    assert!(!second.status.success(), "{second:?}");
    let err = &second.stderr;
    assert!(
        err.contains("gateway.ws_listen") && err.contains(&format!("port {}", first.ws.port())),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_stops_with_a_clear_error() {
    let first = TestServer::start(&[]);
    let second = TestServer::start_expecting_failure(&first.data_dir, &[]);
    assert!(!second.status.success(), "{second:?}");
    let err = &second.stderr;
    let expected = format!(
        "data dir in use by another ringchat: {}",
        first.data_dir.display()
    );
    assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    assert!(!err.contains("Locked"), "no storage engine noise:\n{err}");

    let (mut c, _) = first.user("alice").await;
    c.ping().await.unwrap();
}

/// The client listeners listen only once the shards can serve: a client that connects while
/// the store opens is refused at once (and retries), not accepted and left waiting for its
/// HelloOk.
#[test]
fn a_client_connecting_while_the_store_opens_is_refused_not_left_hanging() {
    use std::io::ErrorKind;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    // A "PostgreSQL server" that takes the connection and never answers: the store's open
    // waits on it for as long as the test holds it, and the test sees when it started.
    let store = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://ringchat@127.0.0.1:{}/ringchat",
        store.local_addr().unwrap().port()
    );
    let client_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .arg("serve")
        .env_clear()
        .env(
            "RINGCHAT_GATEWAY__TCP_LISTEN",
            format!("127.0.0.1:{client_port}"),
        )
        .env("RINGCHAT_GATEWAY__WS_LISTEN", "")
        .env("RINGCHAT_ADMIN__LISTEN", "")
        .env("RINGCHAT_STORAGE__DATA_DIR", dir.path().join("data"))
        .env("RINGCHAT_STORAGE__ENGINE", "postgres")
        .env("RINGCHAT_STORAGE__POSTGRES__URL", &url)
        .env("RINGCHAT_STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "600000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(store.accept().map(|(conn, _)| conn));
    });
    let _opening = rx
        .recv_timeout(common::WAIT_DEADLINE)
        .expect("the server connects to its store")
        .unwrap();
    // The store is opening (it waits on the test): the client port refuses.
    let connected = TcpStream::connect(("127.0.0.1", client_port));
    let _ = server.kill();
    let _ = server.wait();
    match connected {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}"),
        Ok(_) => panic!("accepted while the store opens: the client would hang for its HelloOk"),
    }
}

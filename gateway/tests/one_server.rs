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

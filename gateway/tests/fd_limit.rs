//! The open-file limit bounds the client connections: a server whose RLIMIT_NOFILE cannot hold
//! `gateway.conns_per_shard_max` on every shard lowers it at start (`fd_budget`), so that a
//! storm of clients is told `SERVER_FULL` instead of taking the descriptors the store, the log
//! files and the admin listener need. The real binary, started under a small limit (util-linux
//! `prlimit`), over real sockets.

mod common;

use common::admin::AdminClient;
use common::{TestServer, expect_error_then_closed};
use ringchat_gateway::config::Config;
use ringchat_gateway::fd_budget;
use ringchat_proto::v1::ErrorCode;

/// Client connections the limit leaves room for, past the server's own reserve.
const ROOM: u64 = 30;
/// Connections tried past the room.
const EXTRA: usize = 10;

/// One shard, and small file and admin connection limits: a small reserve.
const ENV: [(&str, &str); 3] = [
    ("GATEWAY__CORES", "[0]"),
    ("GATEWAY__FILES__CONNS_MAX", "16"),
    ("ADMIN__CONNS_MAX", "16"),
];

#[tokio::test]
async fn connections_past_what_the_open_file_limit_holds_are_told_server_full() {
    let mut config = Config::default();
    config.gateway.files.conns_max = 16;
    config.admin.conns_max = 16;
    // The configured 500,000 per shard does not fit: room for ROOM clients only.
    let nofile = fd_budget::reserve(&config, 1) + ROOM;
    let server = TestServer::start_with_nofile(&ENV, nofile);
    assert_eq!(server.metric("ringchat_conns_per_shard_max"), ROOM as f64);
    assert_eq!(
        server.log_lines_with("gateway.conns_per_shard_max lowered"),
        1,
        "{}",
        server.log_tail()
    );

    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_ok) = server.user("bob").await;
    let mut idle = Vec::new();
    for _ in 2..ROOM {
        let mut c = server.client().await;
        c.hello().await.expect("a connection within the room");
        idle.push(c);
    }
    for _ in 0..EXTRA {
        let mut c = server.client().await;
        assert_eq!(
            expect_error_then_closed(&mut c).await,
            ErrorCode::ServerFull
        );
    }

    // The clients already in are served as before.
    let ack = alice
        .send_text(bob_ok.user_id, "m1", "still here")
        .await
        .unwrap()
        .expect("acked");
    let pushed = bob.next_push().await.unwrap();
    assert_eq!(pushed.seq, ack.seq);
    for c in &mut idle {
        c.ping().await.expect("an idle client is still served");
    }
    let admin = AdminClient::new(&server);
    let (status, _, body) = admin.get_text("/readyz");
    assert_eq!(status, 200, "{body}");

    // The configuration view says what runs, and why.
    let viewer = server.api_key("ops", "viewer");
    let (status, view) = viewer.get("/api/config");
    assert_eq!(status, 200, "{view}");
    let lowered = &view["lowered"][0];
    assert_eq!(lowered["key"], "gateway.conns_per_shard_max", "{view}");
    assert_eq!(lowered["configured"], 500_000);
    assert_eq!(lowered["effective"], ROOM);
    assert_eq!(
        server.metric("ringchat_rejected_full_total{shard=\"0\"}"),
        EXTRA as f64
    );

    // A live change cannot take the limit past what the descriptors hold either.
    let admin = server.api_key("root", "admin");
    let (status, body) = admin.patch(
        "/api/config",
        serde_json::json!({"gateway.conns_per_shard_max": 1_000_000}),
    );
    assert_eq!(status, 200, "{body}");
    let mut c = server.client().await;
    assert_eq!(
        expect_error_then_closed(&mut c).await,
        ErrorCode::ServerFull
    );
    assert_eq!(server.metric("ringchat_conns_per_shard_max"), ROOM as f64);
    assert_eq!(
        server.log_lines_with("gateway.conns_per_shard_max lowered"),
        2
    );
}

/// A limit that does not even hold the server's own reserve: it refuses to start, saying which
/// limit to raise, instead of running with no room for clients.
#[test]
fn a_limit_below_the_reserve_stops_the_start_with_what_to_raise() {
    let mut config = Config::default();
    config.gateway.files.conns_max = 16;
    config.admin.conns_max = 16;
    let dir = tempfile::tempdir().unwrap();
    let failed = TestServer::start_expecting_failure_with_nofile(
        &dir.path().join("data"),
        &ENV,
        fd_budget::reserve(&config, 1),
    );
    assert!(!failed.status.success());
    assert!(failed.stderr.contains("LimitNOFILE"), "{}", failed.stderr);
}

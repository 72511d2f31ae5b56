//! The load generator's scenarios, run briefly against the real server: their reports must
//! agree with what the server counted. (No speed is asserted here; see docs/BENCHMARKS.md.)

mod common;

use std::time::Duration;

use common::TestServer;
use ringchat_bench::scenario::Observe;
use ringchat_bench::scenario::connect::{self, ConnectConfig};
use ringchat_bench::scenario::pairs::{self, PairsConfig};
use ringchat_bench::transport::Transport;

fn observe(server: &TestServer) -> Observe {
    Observe {
        server_pid: Some(server.pid()),
        progress: false,
    }
}

#[test]
fn pairs_reports_what_the_server_stored_and_delivered() {
    let server = TestServer::start(&[]);
    let cfg = PairsConfig {
        addr: server.tcp,
        transport: Transport::Tcp,
        pairs: 4,
        size: 100,
        window: 8,
        duration: Duration::from_secs(1),
        rate: None,
        threads: 2,
        user_prefix: "t_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        delivery_ack: true,
    };
    let report = pairs::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert!(report.delivered > 0);
    assert_eq!(report.acked, report.delivered);
    assert_eq!(report.sent, report.acked);
    // Receivers acked delivery, at most once per message and in batches.
    assert!(
        report.delivery_acks > 0 && report.delivery_acks <= report.delivered,
        "{report:?}"
    );
    let stored = server.metric("ringchat_messages_stored_total");
    assert_eq!(
        stored as u64, report.acked,
        "the server stored exactly what was acked"
    );
    assert!(report.server_cpu_us_per_msg.is_some());
    assert!(report.latency_us.p50 <= report.latency_us.p99);
    assert!(report.latency_us.p99 <= report.latency_us.max);
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "scenario",
        "delivered_msgs_per_s",
        "latency_us",
        "server_cpu_us_per_msg",
        "lost",
        "duplicates",
        "out_of_order",
        "errors",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks {key}");
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"].get(p).is_some());
    }
    let html = ringchat_bench::report::pairs_html(&report);
    assert!(html.contains("<svg") && html.contains("Latency distribution"));
}

#[test]
fn pairs_drives_websocket_too() {
    let server = TestServer::start(&[]);
    let cfg = PairsConfig {
        addr: server.ws,
        transport: Transport::Ws,
        pairs: 3,
        size: 64,
        window: 4,
        duration: Duration::from_secs(1),
        rate: None,
        threads: 1,
        user_prefix: "w_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        delivery_ack: true,
    };
    let report = pairs::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert!(report.delivered > 0);
    assert_eq!(
        server.metric("ringchat_messages_stored_total") as u64,
        report.acked
    );
    assert_eq!(report.delivered, report.acked);
}

#[test]
fn paced_pairs_send_at_the_asked_rate() {
    let server = TestServer::start(&[]);
    let cfg = PairsConfig {
        addr: server.tcp,
        transport: Transport::Tcp,
        pairs: 2,
        size: 64,
        window: 64,
        duration: Duration::from_secs(2),
        rate: Some(400.0),
        threads: 1,
        user_prefix: "r_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        delivery_ack: true,
    };
    let report = pairs::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    // Every slot due in the 2 s, and none after: 2 senders × 200 msgs/s × 2 s, each sent (late,
    // during the drain, if the server held its sender back).
    assert_eq!(report.sent, 800, "{report:?}");
    assert_eq!(
        (report.faults.unanswered, report.faults.unsent),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(
        server.metric("ringchat_messages_stored_total") as u64,
        report.acked
    );
}

#[test]
fn connect_reports_every_login_the_server_saw() {
    let server = TestServer::start(&[]);
    let cfg = ConnectConfig {
        addr: server.tcp,
        conns: 60,
        hold: Duration::from_millis(200),
        threads: 2,
        user_prefix: "c_".into(),
        password: "bench-password".into(),
    };
    let report = connect::run(&cfg, &observe(&server)).unwrap();
    assert_eq!(report.connected, 60);
    assert_eq!(report.errors, 0);
    assert_eq!(server.metric("ringchat_logins_total") as u64, 60);
    assert!(report.server_rss_kib_per_conn.is_some());
}

#[test]
fn storm_logs_everyone_in_while_the_pairs_lose_nothing() {
    use ringchat_bench::scenario::storm::{self, StormConfig, StormLogin};
    let server = TestServer::start(&[]);
    let cfg = StormConfig {
        addr: server.tcp,
        pairs: 10,
        size: 64,
        window: 8,
        rate: 400.0,
        warmup: Duration::from_millis(500),
        after: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(10),
        storm: 200,
        storm_login: StormLogin::Token,
        storm_concurrency: 64,
        storm_timeout: Duration::from_secs(15),
        threads: 2,
        user_prefix: "s_".into(),
        password: "bench-password".into(),
    };
    let report = storm::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.logged_in, 200, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(report.dropped_after_login, 0, "{report:?}");
    assert_eq!(
        (report.faults.lost, report.faults.out_of_order),
        (0, 0),
        "{report:?}"
    );
    assert!(report.all_logged_in_s.is_some(), "{report:?}");
    // The pairs ran through all three phases, and every message is in one of them.
    assert!(report.latency_before_us.messages > 0, "{report:?}");
    assert!(report.latency_after_us.messages > 0, "{report:?}");
    assert_eq!(
        report.latency_before_us.messages
            + report.latency_during_us.messages
            + report.latency_after_us.messages,
        report.delivered
    );
    assert_eq!(report.delivered, report.acked);
    // Phase 0 logged each storm user in by password, the storm once more by token; the pairs'
    // users once each. Retried logins never reached LoginOk, so they are not counted.
    assert_eq!(
        server.metric("ringchat_logins_total") as u64,
        2 * 200 + 2 * 10,
        "{report:?}"
    );
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "scenario",
        "logged_in",
        "all_logged_in_s",
        "logins_per_s",
        "refusals",
        "retries",
        "failures",
        "reset_before_reply",
        "login_latency_ms",
        "latency_before_us",
        "latency_during_us",
        "latency_after_us",
        "lost",
        "out_of_order",
        "server_cpu_s",
        "server_cpu_us_per_login",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks {key}");
    }
    for p in ["p50", "p99", "p999", "max"] {
        assert!(json["latency_during_us"].get(p).is_some());
        assert!(json["login_latency_ms"].get(p).is_some());
    }
    assert!(storm::table(&report).contains("logged in"));
}

#[test]
fn storm_by_password_logs_everyone_in_too() {
    use ringchat_bench::scenario::storm::{self, StormConfig, StormLogin};
    let server = TestServer::start(&[]);
    let cfg = StormConfig {
        addr: server.tcp,
        pairs: 2,
        size: 64,
        window: 8,
        rate: 100.0,
        warmup: Duration::from_millis(300),
        after: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(10),
        storm: 40,
        storm_login: StormLogin::Password,
        storm_concurrency: 16,
        storm_timeout: Duration::from_secs(15),
        threads: 1,
        user_prefix: "p_".into(),
        password: "bench-password".into(),
    };
    let report = storm::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.logged_in, 40, "{report:?}");
    assert_eq!(
        server.metric("ringchat_logins_total") as u64,
        2 * 40 + 2 * 2,
        "{report:?}"
    );
}

#[test]
fn group_reports_every_delivery_the_server_made() {
    use ringchat_bench::scenario::group::{self, GroupConfig};
    let server = TestServer::start(&[]);
    let cfg = GroupConfig {
        addr: server.tcp,
        members: 12,
        online: 6,
        senders: 2,
        size: 64,
        window: 8,
        rate: None,
        duration: Duration::from_secs(1),
        threads: 2,
        user_prefix: "t_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        invite_batch: 5,
        ack_every: Duration::from_millis(100),
    };
    let report = group::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert!(report.acked > 0, "{report:?}");
    // Every acked message reached every other online member once.
    assert_eq!(report.deliveries, report.acked * 5, "{report:?}");
    assert_eq!(report.expected_deliveries, report.deliveries);
    // The server stored exactly the acked messages (group events are not counted as sends).
    let stored = server.metric("ringchat_messages_stored_total");
    assert_eq!(stored as u64, report.acked, "{report:?}");
    assert!(report.server_cpu_us_per_delivery.is_some());
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "deliveries_per_s",
        "server_cpu_us_per_delivery",
        "lost",
        "duplicates",
        "out_of_order",
        "latency_us",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks {key}");
    }
}

/// A group load against a server whose per-connection budget is tight (5 requests a second).
fn tight_group(
    rate: Option<f64>,
    ack_every: Duration,
) -> ringchat_bench::scenario::group::GroupReport {
    use ringchat_bench::scenario::group::{self, GroupConfig};
    let server = TestServer::start(&[("LIMITS__MESSAGES_PER_S_MAX", "5")]);
    let cfg = GroupConfig {
        addr: server.tcp,
        members: 3,
        online: 3,
        senders: 3,
        size: 64,
        window: 8,
        rate,
        duration: Duration::from_secs(2),
        threads: 1,
        user_prefix: "tight_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        invite_batch: 5,
        ack_every,
    };
    group::run(&cfg, &observe(&server)).unwrap()
}

#[test]
fn group_refused_delivery_acks_are_no_send_answers() {
    // Closed loop over the budget: sends and the members' acks (request id 0) are refused now
    // and then. A refused ack answers no send and frees no window place.
    let report = tight_group(None, Duration::from_millis(1));
    assert!(report.rate_limited > 0, "{report:?}");
    assert!(report.delivery_acks_refused > 0, "{report:?}");
    assert!(report.clean(), "{report:?}");
    assert!(report.error_kinds.is_empty(), "{report:?}");
    assert_eq!(report.deliveries, report.acked * 2, "{report:?}");
}

#[test]
fn a_paced_group_run_with_refused_sends_is_not_clean() {
    // 30 messages a second over three senders against 5 requests a second each.
    let report = tight_group(Some(30.0), Duration::ZERO);
    assert!(report.rate_limited > 0, "{report:?}");
    assert!(report.faults.none(), "{report:?}");
    assert!(
        !report.clean(),
        "latencies of the sends the server took only: {report:?}"
    );
    let table = ringchat_bench::report::group_table(&report);
    assert!(table.contains("not clean"), "{table}");
}

#[test]
fn files_uploads_and_downloads_every_file_checked() {
    use ringchat_bench::scenario::files::{self, FilesConfig};
    // 64 KiB chunks: the larger files go up in several.
    let server = TestServer::start(&[("FILES__CHUNK_BYTES", "65536")]);
    let cfg = FilesConfig {
        addr: server.tcp,
        http: server.ws,
        users: 2,
        files: 6,
        sizes: vec![1000, 70_000, 300_000],
        downloads_per_file: 2,
        concurrency: 4,
        duration: Duration::from_secs(60),
        threads: 2,
        user_prefix: "t_".into(),
        password: "bench-password".into(),
    };
    let report = files::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.files_uploaded, 6);
    assert_eq!(report.bytes_uploaded, 2 * (1000 + 70_000 + 300_000));
    assert_eq!(report.downloads, 12);
    assert_eq!(report.bytes_downloaded, 2 * report.bytes_uploaded);
    assert_eq!(report.complete_latency.count, 6);
    assert_eq!(report.download_latency.count, 12);
    assert_eq!(report.chunk_latency.count, 2 * (1 + 2 + 5));
    assert!(report.download_latency.p50_us <= report.download_latency.p99_us);
    assert!(report.server_cpu_ms_per_mb_up.is_some());
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "upload_mb_per_s",
        "download_mb_per_s",
        "server_cpu_ms_per_mb_up",
        "mismatches",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks {key}");
    }
    assert!(files::table(&report).contains("MB/s"));
}

#[test]
fn room_reports_every_delivery_and_answer() {
    use ringchat_bench::scenario::room::{self, RoomConfig};
    let server = TestServer::start(&[
        ("ROOMS__MESSAGES_PER_S_MAX", "1000"),
        ("ROOMS__USER_MESSAGES_PER_S_MAX", "1000"),
    ]);
    let cfg = RoomConfig {
        addr: server.tcp,
        members: 6,
        senders: 2,
        size: 64,
        rate: 100.0,
        duration: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(20),
        user_prefix: "m_".into(),
        password: "bench-password".into(),
    };
    let report = room::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    // Every slot due in the second, each answered, each delivered to the 5 other members.
    assert_eq!(report.sent, 100, "{report:?}");
    assert_eq!(report.acked, report.sent, "{report:?}");
    assert_eq!(report.deliveries, 5 * report.acked, "{report:?}");
    assert_eq!(report.deliveries_expected, report.deliveries);
}

/// A server that closes a connection after 1.5 s without input, asking for a ping every 0.3 s.
const SHORT_IDLE: [(&str, &str); 2] = [
    ("GATEWAY__IDLE_TIMEOUT_MS", "1500"),
    ("GATEWAY__HEARTBEAT_INTERVAL_MS", "300"),
];

#[test]
fn room_listeners_and_slow_senders_ping_through_a_run_past_the_idle_timeout() {
    use ringchat_bench::scenario::room::{self, RoomConfig};
    let server = TestServer::start(&SHORT_IDLE);
    // One message every 2 s: the sender is as quiet as the listeners between them.
    let cfg = RoomConfig {
        addr: server.tcp,
        members: 4,
        senders: 1,
        size: 64,
        rate: 0.5,
        duration: Duration::from_secs(4),
        drain_timeout: Duration::from_secs(10),
        user_prefix: "idle_".into(),
        password: "bench-password".into(),
    };
    let report = room::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.sent, 2, "{report:?}");
    assert_eq!((report.acked, report.refused), (2, 0), "{report:?}");
    assert_eq!(report.deliveries, 3 * 2, "{report:?}");
}

#[test]
fn room_counts_refused_sends_apart_from_the_acked() {
    use ringchat_bench::scenario::room::{self, RoomConfig};
    // Two messages a second per user: the rest of the 20 are refused (ROOM_RATE_LIMITED).
    let server = TestServer::start(&[
        ("ROOMS__MESSAGES_PER_S_MAX", "1000"),
        ("ROOMS__USER_MESSAGES_PER_S_MAX", "2"),
    ]);
    let cfg = RoomConfig {
        addr: server.tcp,
        members: 3,
        senders: 1,
        size: 64,
        rate: 20.0,
        duration: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        user_prefix: "refused_".into(),
        password: "bench-password".into(),
    };
    let report = room::run(&cfg, &observe(&server)).unwrap();
    assert!(!report.clean(), "{report:?}");
    assert!(report.refused > 0, "{report:?}");
    assert_eq!(report.acked + report.refused, report.sent, "{report:?}");
    assert_eq!(report.faults.errors, report.refused, "{report:?}");
    assert_eq!(report.deliveries, 2 * report.acked, "{report:?}");
    assert!(
        ringchat_bench::report::room_table(&report).contains(&format!(
            "sent / acked / refused  {} / {} / {}",
            report.sent, report.acked, report.refused
        )),
        "{}",
        ringchat_bench::report::room_table(&report)
    );
}

/// Kicks of any reason the server made, over all shards.
fn kicks(server: &TestServer) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_kicks_total"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn connect_holds_connections_past_the_idle_timeout() {
    let server = TestServer::start(&SHORT_IDLE);
    // Held 2 s before each sample and more in all: well past the 1.5 s idle timeout.
    let cfg = ConnectConfig {
        addr: server.tcp,
        conns: 20,
        hold: Duration::from_secs(2),
        threads: 2,
        user_prefix: "hold_".into(),
        password: "bench-password".into(),
    };
    let report = connect::run(&cfg, &observe(&server)).unwrap();
    assert_eq!(report.connected, 20, "{report:?}");
    assert_eq!((report.dropped, report.errors), (0, 0), "{report:?}");
    assert_eq!(kicks(&server), 0.0, "{}", server.log_tail());
}

#[test]
fn connect_counts_a_held_connection_the_server_closed() {
    let server = TestServer::start(&[]);
    let cfg = ConnectConfig {
        addr: server.tcp,
        conns: 6,
        hold: Duration::from_secs(2),
        threads: 1,
        user_prefix: "gone_".into(),
        password: "bench-password".into(),
    };
    let observe = observe(&server);
    let run = std::thread::spawn(move || connect::run(&cfg, &observe));
    // Once all are held, the same user and device log in again: the held one is replaced.
    common::wait_until("every connection logged in", || {
        server.metric("ringchat_logins_total") as u64 >= 6
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _again = rt.block_on(async {
        ringchat_bench::client::Client::signup(server.tcp, "gone_c0", "bench-password", "bench")
            .await
            .unwrap()
    });
    let report = run.join().unwrap().unwrap();
    assert_eq!(kicks(&server), 1.0);
    assert_eq!(report.connected, 6, "{report:?}");
    assert_eq!((report.dropped, report.errors), (1, 1), "{report:?}");
}

#[test]
fn presence_fanout_tells_every_friend_every_change_once() {
    use ringchat_bench::scenario::presence::{self, FanoutConfig};
    let server = TestServer::start(&[("PRESENCE__QUIET_PERIOD_MS", "0")]);
    let cfg = FanoutConfig {
        addr: server.tcp,
        friends: 4,
        changes: 6,
        user_prefix: "fan_".into(),
        password: "bench-password".into(),
    };
    let report = presence::run_fanout(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.delivered, 24, "{report:?}");
}

#[test]
fn group_listeners_ping_through_a_run_past_the_idle_timeout() {
    use ringchat_bench::scenario::group::{self, GroupConfig};
    let server = TestServer::start(&SHORT_IDLE);
    // Two messages a second and no delivery acks: the listeners send nothing but pings.
    let cfg = GroupConfig {
        addr: server.tcp,
        members: 6,
        online: 4,
        senders: 1,
        size: 64,
        window: 8,
        rate: Some(2.0),
        duration: Duration::from_secs(4),
        threads: 2,
        user_prefix: "gidle_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(10),
        invite_batch: 5,
        ack_every: Duration::ZERO,
    };
    let report = group::run(&cfg, &observe(&server)).unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.deliveries, report.acked * 3, "{report:?}");
    assert_eq!(kicks(&server), 0.0, "{}", server.log_tail());
}

/// A server on its sign-up limit per address (1000 an hour by default; the tuning guide's
/// `pairs --pairs 1000` needs 2000): the bench stops at setup and names the key to set.
#[test]
fn a_sign_up_limit_stops_the_bench_naming_the_key() {
    let server = TestServer::start(&[("ACCOUNTS__REGISTRATIONS_PER_IP_PER_HOUR", "1")]);
    let cfg = PairsConfig {
        addr: server.tcp,
        transport: Transport::Tcp,
        pairs: 2,
        size: 64,
        window: 4,
        duration: Duration::from_secs(1),
        rate: None,
        threads: 1,
        user_prefix: "rl_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        delivery_ack: true,
    };
    let err = format!("{:#}", pairs::run(&cfg, &observe(&server)).unwrap_err());
    assert!(
        err.contains("RATE_LIMITED") && err.contains("accounts.registrations_per_ip_per_hour"),
        "{err}"
    );
}

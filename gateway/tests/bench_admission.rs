//! The load generator's setup against a server with tight login admission (one login at a
//! time, `SERVER_FULL` with a short `retry_after_ms` to the others): the sign-ups wait out the
//! refusals as a client does, the run completes without a loss, and the report counts exactly
//! the refusals the server counted.

mod common;

use std::time::Duration;

use common::{TestServer, wait_until};
use ringchat_bench::scenario::Observe;
use ringchat_bench::scenario::connect::{self, ConnectConfig};
use ringchat_bench::scenario::pairs::{self, PairsConfig, PairsReport};
use ringchat_bench::transport::Transport;

/// Pairs per run: 2 × 12 sign-ups, all in flight at once (below the setup's concurrency per
/// load thread), against one login slot.
const PAIRS: usize = 12;

/// One shard with a single login slot, refusals told to come back in [20, 40) ms.
fn admitting_one_login_at_a_time() -> TestServer {
    TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__LOGINS_IN_FLIGHT_PER_SHARD_MAX", "1"),
        ("GATEWAY__LOGIN_RETRY_AFTER_MS", "20"),
    ])
}

fn observe(server: &TestServer) -> Observe {
    Observe {
        server_pid: Some(server.pid()),
        progress: false,
    }
}

fn run_pairs(server: &TestServer, transport: Transport) -> PairsReport {
    let cfg = PairsConfig {
        addr: match transport {
            Transport::Tcp => server.tcp,
            Transport::Ws => server.ws,
        },
        transport,
        pairs: PAIRS,
        size: 64,
        window: 4,
        duration: Duration::from_secs(1),
        rate: None,
        threads: 1,
        user_prefix: "adm_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_secs(20),
        delivery_ack: true,
    };
    pairs::run(&cfg, &observe(server)).expect("the run completes despite the refusals")
}

/// Refusals the server counted (`SERVER_FULL` and `UNAVAILABLE`, every shard and reason).
fn refused_by_server(server: &TestServer) -> u64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_logins_refused_total{"))
        .map(|(_, v)| *v)
        .sum::<f64>() as u64
}

fn check(server: &TestServer, report: &PairsReport) {
    assert!(report.clean(), "{report:?}");
    assert!(report.delivered > 0, "{report:?}");
    assert_eq!(report.sent, report.acked);
    assert_eq!(report.acked, report.delivered, "nothing acked was lost");
    assert_eq!(
        server.metric("ringchat_messages_stored_total") as u64,
        report.acked
    );
    // 24 sign-ups at once against one slot: some were turned away, and every refusal the
    // server made is one the setup saw and came back after.
    assert!(report.setup_refusals > 0, "{report:?}");
    wait_until("the server's refusal count to match the report's", || {
        refused_by_server(server) == report.setup_refusals
    });
    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["setup_refusals"], report.setup_refusals);
    let text = ringchat_bench::report::pairs_table(report);
    assert!(
        text.contains(&format!("setup refusals     {}", report.setup_refusals)),
        "{text}"
    );
}

#[test]
fn pairs_setup_comes_back_after_server_full_and_loses_nothing() {
    let server = admitting_one_login_at_a_time();
    let report = run_pairs(&server, Transport::Tcp);
    check(&server, &report);
}

#[test]
fn pairs_setup_over_websocket_comes_back_after_server_full_too() {
    let server = admitting_one_login_at_a_time();
    let report = run_pairs(&server, Transport::Ws);
    check(&server, &report);
}

#[test]
fn connect_logs_every_connection_in_past_the_refusals() {
    let server = admitting_one_login_at_a_time();
    let cfg = ConnectConfig {
        addr: server.tcp,
        conns: 40,
        hold: Duration::from_millis(200),
        threads: 2,
        user_prefix: "admc_".into(),
        password: "bench-password".into(),
    };
    let report = connect::run(&cfg, &observe(&server)).unwrap();
    assert_eq!(report.connected, 40, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(server.metric("ringchat_logins_total") as u64, 40);
    assert!(report.setup_refusals > 0, "{report:?}");
    wait_until("the server's refusal count to match the report's", || {
        refused_by_server(&server) == report.setup_refusals
    });
    assert!(
        ringchat_bench::report::connect_table(&report)
            .contains(&format!("setup refusals     {}", report.setup_refusals))
    );
}

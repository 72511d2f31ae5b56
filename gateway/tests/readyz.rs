//! `/readyz` is open to anyone who reaches the admin listener: a flood of probes costs the
//! store at most one check per `READY_CHECK_CACHE` (it used to run `SELECT 1` on a blocking
//! thread, shared with logins and reads, per probe), and the page still turns not ready soon
//! after the store goes away. `ringchat_ready` (what the RingchatNotReady alert reads) is the
//! same answer, seen by a scrape alone. Neither waits on a store that stalls: both read the
//! answer one background check keeps. A database that answers but takes no writes is not
//! ready either. Against the real binary on a PostgreSQL cluster of the test's
//! own, which it stops; every wait is on an event with a deadline.

mod common;

use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::{TestServer, http_get, wait_until};

/// The server's `READY_CHECK_CACHE` (backend/src/admin/health.rs).
const READY_CHECK_CACHE: Duration = Duration::from_secs(1);
/// The server's `storage.postgres.connect_timeout_ms` below: what one check may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack for a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);
/// The server's `READY_CHECK_TIMEOUT`: what a check may take before it counts as no answer.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How soon a probe or scrape must answer while the store stalls: well under a check's time.
const PROMPT: Duration = Duration::from_millis(1_000);
/// How long the stalled store is probed.
const STALL: Duration = Duration::from_secs(8);
/// How soon a probe that gives up goes away (a supervisor's short timeout).
const GIVE_UP: Duration = Duration::from_millis(50);
const PROBERS: usize = 32;
const PROBES_EACH: usize = 25;

/// A server on `cluster`, connecting within `CONNECT_TIMEOUT` and again every 100 ms.
fn on_postgres(cluster: &PgCluster) -> TestServer {
    let url = cluster.url();
    let connect_ms = CONNECT_TIMEOUT.as_millis().to_string();
    TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", connect_ms.as_str()),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
    ])
}

#[test]
fn readyz_probes_share_one_store_check_and_still_see_the_store_go() {
    let cluster = PgCluster::start_new();
    let server = on_postgres(&cluster);
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");
    let checks = || server.metric("ringchat_ready_checks_total");
    assert!(checks() >= 1.0, "the probes above checked the store");

    let before = checks();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..PROBERS {
            s.spawn(|| {
                for _ in 0..PROBES_EACH {
                    assert_eq!(http_get(server.admin, "/readyz"), "ready\n");
                }
            });
        }
    });
    let took = started.elapsed();
    let made = checks() - before;
    // Each check starts at least READY_CHECK_CACHE after the one before it ended.
    let bound = (took.as_secs_f64() / READY_CHECK_CACHE.as_secs_f64()).floor() + 1.0;
    assert!(
        made <= bound,
        "{made} store checks for {} probes in {took:?} (at most {bound})",
        PROBERS * PROBES_EACH
    );

    // The store goes away: the page says so within the cache's time and one check's.
    cluster.stop_immediate();
    let stopped = Instant::now();
    wait_until("not ready", || {
        http_get(server.admin, "/readyz").starts_with("not ready: the store does not answer")
    });
    let noticed = stopped.elapsed();
    assert!(
        noticed <= READY_CHECK_CACHE + CONNECT_TIMEOUT + MARGIN,
        "/readyz said ready for {noticed:?} after the store went away"
    );
    cluster.start();
    wait_until("ready again", || {
        http_get(server.admin, "/readyz") == "ready\n"
    });
}

/// A database that answers but takes no writes (its sessions made read-only; a failover onto
/// a standby looks the same) is not ready, saying why: the check used to be `SELECT 1`, so the
/// node said ready while every send was refused. Ready again once it takes writes, with no
/// restart.
#[test]
fn a_store_that_takes_no_writes_is_not_ready_and_says_why() {
    let cluster = PgCluster::start_new();
    let server = on_postgres(&cluster);
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");
    // Every session's default, the pool's open ones too (they take it at the reload).
    let read_only = |value: &str| {
        common::store::sql_at(
            cluster.url(),
            vec![
                "SET default_transaction_read_only = off".into(),
                format!("ALTER SYSTEM SET default_transaction_read_only = {value}"),
                "SELECT pg_reload_conf()".into(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    read_only("on");
    wait_until("not ready: read-only", || {
        http_get(server.admin, "/readyz")
            .starts_with("not ready: the store refuses writes: PostgreSQL sessions are read-only")
    });
    assert_eq!(
        server.metrics().get("ringchat_ready").copied(),
        Some(0.0),
        "the gauge is the page's answer"
    );
    read_only("off");
    wait_until("ready again", || {
        http_get(server.admin, "/readyz") == "ready\n"
    });
}

/// The gauge is `/readyz`'s answer, not part of it: with nothing probing `/readyz`, scrapes
/// alone see the store go (it used to stay 1 through a PostgreSQL outage, so the alert never
/// fired) and come back.
#[test]
fn the_ready_gauge_sees_the_store_go_and_come_back_with_only_scrapes() {
    let cluster = PgCluster::start_new();
    let server = on_postgres(&cluster);
    let ready = || server.metrics().get("ringchat_ready").copied();
    wait_until("ringchat_ready 1", || ready() == Some(1.0));

    cluster.stop_immediate();
    let stopped = Instant::now();
    wait_until("ringchat_ready 0", || ready() == Some(0.0));
    let noticed = stopped.elapsed();
    assert!(
        noticed <= READY_CHECK_CACHE + CONNECT_TIMEOUT + MARGIN,
        "ringchat_ready said 1 for {noticed:?} after the store went away"
    );
    cluster.start();
    wait_until("ringchat_ready 1 again", || ready() == Some(1.0));
}

/// A request for `path` that gives up after `GIVE_UP`, as a probe with a short timeout does.
fn abandoned_get(admin: std::net::SocketAddr, path: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("admin connect");
    s.set_read_timeout(Some(GIVE_UP)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}

/// `http_get`, failed unless it answers within `PROMPT`.
fn prompt_get(admin: std::net::SocketAddr, path: &str) -> String {
    let started = Instant::now();
    let body = http_get(admin, path);
    let took = started.elapsed();
    assert!(
        took <= PROMPT,
        "{path} took {took:?} while the store stalls"
    );
    body
}

/// A store that stalls (its processes stopped: calls hang rather than fail) holds neither a
/// probe nor a scrape: both answer at once from the last check, and turn not ready within a
/// check's timeout. Probes that give up early start no checks of their own: they used to, each
/// one a blocking thread (those logins use) held for the store's whole call timeout, and a
/// scrape used to wait out that timeout and fail whole, `ringchat_ready` with it.
#[test]
fn a_stalled_store_holds_no_probe_or_scrape_and_checks_do_not_pile_up() {
    let cluster = PgCluster::start_new();
    let server = on_postgres(&cluster);
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");
    let checks = || server.metric("ringchat_ready_checks_total");

    let paused = cluster.pause();
    let before = checks();
    let stalled = Instant::now();
    let mut not_ready_after = None;
    let mut gauge_zero_after = None;
    while stalled.elapsed() < STALL {
        for path in ["/readyz", "/metrics"] {
            for _ in 0..4 {
                abandoned_get(server.admin, path);
            }
        }
        if prompt_get(server.admin, "/readyz").starts_with("not ready: the store does not answer") {
            not_ready_after.get_or_insert(stalled.elapsed());
        }
        if prompt_get(server.admin, "/metrics").contains("\nringchat_ready 0\n") {
            gauge_zero_after.get_or_insert(stalled.elapsed());
        }
    }
    let made = checks() - before;
    let took = stalled.elapsed();
    drop(paused);

    // The pause takes a check's timeout to notice, plus one pause between checks.
    let notice = READY_CHECK_CACHE + READY_CHECK_TIMEOUT + MARGIN;
    let not_ready_after = not_ready_after.expect("/readyz never said not ready");
    assert!(
        not_ready_after <= notice,
        "/readyz said ready for {not_ready_after:?}"
    );
    let gauge_zero_after = gauge_zero_after.expect("ringchat_ready never turned 0");
    assert!(
        gauge_zero_after <= notice,
        "ringchat_ready was 1 for {gauge_zero_after:?}"
    );
    // One check at a time, each at least READY_CHECK_CACHE after the one before it ended.
    let bound = (took.as_secs_f64() / READY_CHECK_CACHE.as_secs_f64()).floor() + 1.0;
    assert!(
        made <= bound,
        "{made} store checks in {took:?} of a stalled store (at most {bound})"
    );

    wait_until("ready again", || {
        http_get(server.admin, "/readyz") == "ready\n"
    });
}

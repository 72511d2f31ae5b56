//! `/readyz` is open to anyone who reaches the admin listener: a flood of probes costs the
//! store at most one check per `READY_CHECK_CACHE` (it used to run `SELECT 1` on a blocking
//! thread, shared with logins and reads, per probe), and the page still turns not ready soon
//! after the store goes away. `ringchat_ready` (what the RingchatNotReady alert reads) is the
//! same answer, seen by a scrape alone. Against the real binary on a PostgreSQL cluster of the test's
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
const PROBERS: usize = 32;
const PROBES_EACH: usize = 25;

#[test]
fn readyz_probes_share_one_store_check_and_still_see_the_store_go() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let connect_ms = CONNECT_TIMEOUT.as_millis().to_string();
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", connect_ms.as_str()),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
    ]);
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

/// The gauge is `/readyz`'s answer, not part of it: with nothing probing `/readyz`, scrapes
/// alone see the store go (it used to stay 1 through a PostgreSQL outage, so the alert never
/// fired) and come back.
#[test]
fn the_ready_gauge_sees_the_store_go_and_come_back_with_only_scrapes() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let connect_ms = CONNECT_TIMEOUT.as_millis().to_string();
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", connect_ms.as_str()),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
    ]);
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

//! The admin overview, activity and metrics against the real server: what they report agrees
//! with what the test did (sends, logins, connections per transport), activity survives a
//! restart, bad input is a 4xx JSON error, and every metric family has its `# HELP`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestServer;
use common::admin::AdminClient;
use common::transport::{AnyClient, Kind};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
}

fn ok(client: &AdminClient, path: &str) -> Value {
    let (status, body) = client.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Polls `path` until `pred` holds (bounded by `DEADLINE`), returning the body that did.
fn wait_for(client: &AdminClient, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let body = ok(client, path);
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < end,
            "{what}: never true; last {path}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test]
async fn the_overview_counts_what_happened() {
    let server = TestServer::start(&[]);
    let viewer = server.api_key("grafana", "viewer");
    let before = ok(&viewer, "/api/overview");
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert!(before["commit"].as_str().is_some_and(|c| !c.is_empty()));
    let shards = u(&before["shards"]);
    assert!(shards >= 1);

    // Two users on TCP, one more connection on WebSocket; 20 messages from the first.
    let (mut a, _) = AnyClient::user(&server, Kind::Tcp, "alice").await;
    let (_b, bob) = AnyClient::user(&server, Kind::Tcp, "bob").await;
    let _ws = AnyClient::login(&server, Kind::Ws, "bob").await;
    const N: u64 = 20;
    for i in 0..N {
        let body = ringchat_bench::client::text_message(bob.user_id, &format!("m{i}"), "hi");
        match a.request(body).await {
            ringchat_proto::Body::SendAck(_) => {}
            other => panic!("send {i}: {other:?}"),
        }
    }
    let after = ok(&viewer, "/api/overview");
    let moved = |key: &str| u(&after["totals"][key]) - u(&before["totals"][key]);
    // Exactly the sends; each pushed to bob's two connections.
    assert_eq!(moved("messages_stored"), N);
    assert_eq!(moved("deliveries"), 2 * N);
    assert_eq!(moved("logins"), 3);

    // The sampler's next seconds show the connections, the rate and the latencies.
    let seen = wait_for(&viewer, "/api/overview", "a sample with the sends", |o| {
        o["now"]["transports"]["tcp"] == 2
            && o["now"]["transports"]["ws"] == 1
            && o["now"]["latency"]["sends"].as_u64().unwrap_or(0) >= N
    });
    let now = &seen["now"];
    assert_eq!(now["connections"], 3);
    assert_eq!(now["authenticated"], 3);
    assert_eq!(now["logins_in_flight"], 0, "every login answered");
    assert_eq!(now["logins_refused_total"], 0, "no storm");
    assert_eq!(
        now["connections_per_shard"].as_array().unwrap().len() as u64,
        shards
    );
    let p = |k: &str| now["latency"][k].as_f64().unwrap();
    assert!(p("p50_ms") > 0.0 && p("p50_ms") <= p("p99_ms") && p("p99_ms") <= p("p999_ms"));
    assert!(u(&now["rss_bytes"]) > 1 << 20);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(now["cpu_cores_percent"].as_array().unwrap().len() >= cores);
    let groups: HashMap<&str, u64> = now["cpu_threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap(), u(&g["threads"])))
        .collect();
    assert_eq!(groups["shards"], shards);
    assert_eq!(groups["sequencer"], 1);
    assert!(groups["backend"] >= 1);
    // The rate: the 20 sends fall in one or two samples of the series.
    let series = wait_for(
        &viewer,
        "/api/overview/series?seconds=60",
        "the rate",
        |s| {
            let sum: f64 = s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["messages_per_s"].as_f64().unwrap())
                .sum();
            sum >= N as f64 * 0.9
        },
    );
    assert_eq!(series["interval_ms"], 1000);
    let store = wait_for(&viewer, "/api/overview", "the store measured", |o| {
        u(&o["store"]["measured_at_ms"]) > 0
    });
    // The size is of the data dir: the store itself on the embedded engine; on PostgreSQL the
    // data dir may still be empty here (the database's own size is not reported yet).
    if !common::store::on_postgres() {
        assert!(u(&store["store"]["size_bytes"]) > 0);
    }
    assert!(u(&store["store"]["disk_total_bytes"]) >= u(&store["store"]["disk_free_bytes"]));
    assert!(u(&store["uptime_s"]) < 600);

    // Refused: no credentials, bad input.
    let r = AdminClient::new(&server).get("/api/overview");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    let r = AdminClient::new(&server).get("/api/overview/series");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    for (path, status, want) in [
        ("/api/overview/series?seconds=0", 422, "invalid"),
        ("/api/overview/series?seconds=301", 422, "invalid"),
        ("/api/overview/series?seconds=many", 400, "bad_request"),
        ("/api/overview/series?second=5", 400, "bad_request"),
        (
            "/api/overview/series?seconds=99999999999",
            400,
            "bad_request",
        ),
    ] {
        let r = viewer.get(path);
        assert_eq!((r.0, code(&r)), (status, want), "{path}: {}", r.1);
    }
    let r = viewer.post("/api/overview", serde_json::json!({}));
    assert_eq!(r.0, 405, "{}", r.1);
    let doc = ok(&viewer, "/api/openapi.json");
    for path in ["/api/overview", "/api/overview/series", "/api/activity"] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn activity_counts_users_messages_and_the_heaviest_sender_and_survives_a_restart() {
    let mut server = TestServer::start(&[]);
    let viewer = server.api_key("analyst", "viewer");
    let (mut a, _) = AnyClient::user(&server, Kind::Tcp, "ann").await;
    let (mut b, bert) = AnyClient::user(&server, Kind::Tcp, "bert").await;
    let (_c, cleo) = AnyClient::user(&server, Kind::Ws, "cleo").await;
    send(&mut a, bert.user_id, 7, "a").await;
    send(&mut b, cleo.user_id, 3, "b").await;

    let act = ok(&viewer, "/api/activity?days=7&top=5");
    let days = act["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    let today = days.last().unwrap();
    // The three signed up and logged in today; 10 messages; nothing on the days before.
    assert_eq!(act["daily_active_users"], 3);
    assert_eq!(act["monthly_active_users"], 3);
    assert_eq!(
        (
            &today["messages"],
            &today["registrations"],
            &today["logins"]
        ),
        (&Value::from(10), &Value::from(3), &Value::from(3))
    );
    assert!(days[..6].iter().all(|d| d["messages"] == 0));
    let top = act["heaviest_senders"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["username"], "ann");
    assert_eq!(
        (&top[0]["messages"], &top[0]["error"]),
        (&Value::from(7), &Value::from(0))
    );
    assert_eq!(top[1]["username"], "bert");
    assert_eq!(top[1]["messages"], 3);
    let r = ok(&viewer, "/api/activity?top=1");
    assert_eq!(r["heaviest_senders"].as_array().unwrap().len(), 1);
    assert_eq!(r["days"].as_array().unwrap().len(), 30);

    // Refused: bad input, no credentials.
    for (path, status, want) in [
        ("/api/activity?days=0", 422, "invalid"),
        ("/api/activity?days=91", 422, "invalid"),
        ("/api/activity?top=0", 422, "invalid"),
        ("/api/activity?top=101", 422, "invalid"),
        ("/api/activity?top=-1", 400, "bad_request"),
        ("/api/activity?week=1", 400, "bad_request"),
    ] {
        let r = viewer.get(path);
        assert_eq!((r.0, code(&r)), (status, want), "{path}: {}", r.1);
    }
    let r = AdminClient::new(&server).get("/api/activity");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));

    // The day's counts are written at shutdown and read back at start.
    drop((a, b));
    server.stop();
    server.restart();
    let viewer = AdminClient::new(&server).with_key(&viewer_key(&server));
    let again = ok(&viewer, "/api/activity?days=7");
    let today = again["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(again["daily_active_users"], 3);
    assert_eq!(
        (&today["messages"], &today["registrations"]),
        (&Value::from(10), &Value::from(3))
    );
    // One more login after the restart: the same user is not counted twice.
    let _a = AnyClient::login(&server, Kind::Tcp, "ann").await;
    let after = ok(&viewer, "/api/activity?days=1");
    assert_eq!(after["daily_active_users"], 3);
    assert_eq!(after["days"][0]["logins"], 4);
}

async fn send(from: &mut AnyClient, to: u64, n: usize, tag: &str) {
    for i in 0..n {
        let body = ringchat_bench::client::text_message(to, &format!("{tag}{i}"), "x");
        match from.request(body).await {
            ringchat_proto::Body::SendAck(_) => {}
            other => panic!("send {tag}{i}: {other:?}"),
        }
    }
}

/// A fresh viewer key (keys survive restarts too, but a new one keeps this test standalone).
fn viewer_key(server: &TestServer) -> String {
    let out = server.admin_cli(&["add-key", "after-restart", "--role", "viewer"], "");
    assert!(out.status.success(), "add-key: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn metrics_have_help_and_units_a_latency_histogram_and_readiness() {
    let server = TestServer::start(&[]);
    let (mut a, _) = AnyClient::user(&server, Kind::Tcp, "mia").await;
    let (_b, noa) = AnyClient::user(&server, Kind::Tcp, "noa").await;
    for i in 0..5 {
        let body = ringchat_bench::client::text_message(noa.user_id, &format!("m{i}"), "x");
        assert!(matches!(
            a.request(body).await,
            ringchat_proto::Body::SendAck(_)
        ));
    }
    // The histogram is merged by the sampler once a second.
    let end = Instant::now() + DEADLINE;
    while server.metric("ringchat_send_ack_seconds_count") < 5.0 {
        assert!(Instant::now() < end, "no latencies in /metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    let types = common::metrics::check_families(&common::http_get(server.admin, "/metrics"));
    for family in [
        "ringchat_build_info",
        "ringchat_send_ack_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "ringchat_store_size_bytes",
        "ringchat_store_disk_free_bytes",
        "ringchat_deliveries_total",
        "ringchat_transport_connections",
        "ringchat_kicks_total",
        "ringchat_ready",
    ] {
        assert!(types.contains_key(family), "{family} missing from /metrics");
    }
    assert_eq!(types["ringchat_send_ack_seconds"], "histogram");
    let m = server.metrics();
    let count = m["ringchat_send_ack_seconds_count"];
    assert_eq!(m["ringchat_send_ack_seconds_bucket{le=\"+Inf\"}"], count);
    assert!(m["ringchat_send_ack_seconds_bucket{le=\"5\"}"] <= count);
    assert!(m["ringchat_send_ack_seconds_sum"] > 0.0);
    assert!(m["process_cpu_seconds_total"] > 0.0);
    assert!(m["process_resident_memory_bytes"] > 1e6);
    assert_eq!(m["ringchat_ready"], 1.0);
    assert_eq!(m["ringchat_store_writable"], 1.0);
    assert_eq!(m["ringchat_daily_active_users"], 2.0);
    let tcp: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ringchat_transport_connections") && k.contains("\"tcp\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(tcp, 2.0);
    // A kick reason that never happened is there at 0, for alerts on increase().
    assert!(
        m.keys()
            .any(|k| k.starts_with("ringchat_kicks_total")
                && k.contains("KICK_REASON_SLOW_CONSUMER"))
    );

    assert_eq!(common::http_get(server.admin, "/readyz").trim(), "ready");
    assert_eq!(common::http_get(server.admin, "/healthz").trim(), "ok");
}

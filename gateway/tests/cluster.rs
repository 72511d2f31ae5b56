//! Cluster mode, part 1: real `ringchat` nodes on one PostgreSQL database and Redis. Each node
//! sees the others (admin API, /metrics), `GET /assign` and gRPC `Assign` spread clients by
//! load, a node killed with -9 leaves the view after `node_ttl_ms`, `/readyz` says whether a
//! node joined; with Redis stopped the nodes keep serving and mark their view stale, and with
//! Redis back the view is rebuilt. Needs the servers `scripts/test.sh` starts
//! (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL); fails without them.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{
    NODE_TTL_MS, StatusNode, free_port, redis_url, route_fields, start_nodes, unique,
};
use common::{TestServer, http_get, wait_until};
use ringchat_backend::testkit::OwnRedis;
use serde_json::Value;

fn live_nodes(server: &TestServer) -> f64 {
    server.metric("ringchat_cluster_nodes")
}

/// `GET /assign` on a node's WebSocket listener: the chosen node's id and whether it is fresh.
fn assign(server: &TestServer) -> (String, bool, Vec<String>) {
    let body = http_get(server.ws, "/assign");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let addrs = v["client_addrs"]
        .as_array()
        .expect("client_addrs")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    (
        v["node_id"].as_str().expect("node_id").to_owned(),
        v["fresh"].as_bool().expect("fresh"),
        addrs,
    )
}

/// `GET /api/cluster/nodes` page after page, `limit` a page: the node ids of each page.
fn cluster_node_pages(server: &TestServer, limit: usize) -> Vec<Vec<String>> {
    let admin = server.api_key(&format!("pages{limit}"), "viewer");
    let (mut pages, mut cursor) = (Vec::new(), String::new());
    loop {
        let (status, page) =
            admin.get(&format!("/api/cluster/nodes?limit={limit}&cursor={cursor}"));
        assert_eq!(status, 200, "{page}");
        let ids: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|n| n["node_id"].as_str().expect("node_id").to_owned())
            .collect();
        pages.push(ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return pages,
        }
        assert!(pages.len() <= 3, "pages never end: {pages:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_spread_clients_and_drop_a_killed_node() {
    let db = common::store::fresh_database();
    let prefix = format!("it_{}", unique());
    let mut nodes = start_nodes(&db, &redis_url(), &prefix, &["n1", "n2", "n3"]);

    // Each sees the other two: /metrics, /readyz, and the admin overview.
    for (_, s) in &nodes {
        wait_until("every node sees three live nodes", || live_nodes(s) == 3.0);
        assert_eq!(http_get(s.admin, "/readyz"), "ready\n");
        assert_eq!(s.metric("ringchat_cluster_joined"), 1.0);
    }
    let (_, n1) = &nodes[0];
    let (status, overview) = n1.api_key("ops", "viewer").get("/api/overview");
    assert_eq!(status, 200, "{overview}");
    let cluster = &overview["cluster"];
    assert_eq!(cluster["node_id"], "n1");
    assert_eq!(cluster["fresh"], true);
    // The overview counts the nodes; their records come in pages, each node once.
    assert_eq!(cluster["live_nodes"], 3);
    assert!(cluster.get("nodes").is_none(), "{cluster}");
    assert_eq!(cluster_node_pages(n1, 2), [vec!["n1", "n2"], vec!["n3"]]);
    assert_eq!(cluster_node_pages(n1, 3), [vec!["n1", "n2", "n3"]]);
    let (status, _) = common::admin::AdminClient::new(n1).get("/api/cluster/nodes");
    assert_eq!(status, 401, "a viewer's key or session needed");

    // Idle nodes: a burst of assignments goes round all three (between two heartbeats each
    // node counts the clients it sent to each; a heartbeat starts the count over), each with
    // the addresses that node advertises.
    let picks: HashSet<String> = (0..30).map(|_| assign(n1).0).collect();
    assert_eq!(picks.len(), 3, "{picks:?}");
    let (id, fresh, addrs) = assign(&nodes[1].1);
    assert!(fresh);
    let node = &nodes
        .iter()
        .find(|(e, _)| e.vars.iter().any(|(_, v)| *v == id))
        .unwrap()
        .1;
    assert_eq!(addrs, [format!("ws://{}/ws", node.ws)]);

    // Load: eight clients on n1. Once n2 reads n1's new load, n2 sends nobody to n1 until the
    // others caught up.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(n1.client().await);
    }
    let n2 = &nodes[1].1;
    wait_until("n2 sees n1's eight connections", || {
        n2.metric("ringchat_cluster_node_connections{node=\"n1\"}") >= 8.0
    });
    let picks: Vec<String> = (0..6).map(|_| assign(n2).0).collect();
    assert!(!picks.contains(&"n1".to_owned()), "{picks:?}");

    // gRPC on any node: the same service (n3 too has read n1's load before it is asked).
    let n3 = &nodes[2].1;
    wait_until("n3 sees n1's eight connections", || {
        n3.metric("ringchat_cluster_node_connections{node=\"n1\"}") >= 8.0
    });
    let mut grpc = ringchat_proto::v1::status_client::StatusClient::connect(format!(
        "http://{}",
        nodes[2].0.grpc()
    ))
    .await
    .expect("gRPC connect");
    let ping = grpc
        .ping(ringchat_proto::v1::PingRequest {})
        .await
        .expect("Ping")
        .into_inner();
    assert_eq!(
        (ping.node_id.as_str(), ping.live_nodes, ping.fresh),
        ("n3", 3, true)
    );
    let reply = grpc
        .assign(ringchat_proto::v1::AssignRequest {})
        .await
        .expect("Assign")
        .into_inner();
    assert_ne!(reply.node_id, "n1");
    drop(held);

    // kill -9 n3: the others drop it once its record expires, not before its TTL.
    let killed_at = std::time::Instant::now();
    nodes[2].1.kill9();
    for (_, s) in &nodes[..2] {
        wait_until("n3 leaves the view", || live_nodes(s) == 2.0);
    }
    assert!(
        killed_at.elapsed().as_millis() as u64 >= NODE_TTL_MS / 2,
        "n3 left after {:?}, well before its TTL",
        killed_at.elapsed()
    );
    let picks: HashSet<String> = (0..4).map(|_| assign(&nodes[0].1).0).collect();
    assert!(!picks.contains("n3"), "{picks:?}");

    // A graceful stop deregisters at once.
    nodes[1].1.stop();
    wait_until("a stopped n2 leaves the view", || {
        live_nodes(&nodes[0].1) == 1.0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_leaves_nodes_serving_on_a_stale_view_and_redis_back_rebuilds_it() {
    let db = common::store::fresh_database();
    let mut redis = OwnRedis::start(free_port());
    let nodes = start_nodes(&db, &redis.url(), "outage", &["a", "b"]);
    for (_, s) in &nodes {
        wait_until("both nodes see each other", || live_nodes(s) == 2.0);
    }

    redis.stop();
    for (_, s) in &nodes {
        wait_until("the view is marked stale", || {
            s.metric("ringchat_cluster_view_fresh") == 0.0
        });
        // The last view is kept; clients are still served and still sent somewhere.
        assert_eq!(live_nodes(s), 2.0);
        let (_, fresh, _) = assign(s);
        assert!(!fresh);
        assert_eq!(
            http_get(s.admin, "/readyz"),
            "ready\n",
            "joined once, still serving"
        );
    }
    let (mut alice, _) = nodes[0].1.user("alice").await;
    alice
        .ping()
        .await
        .expect("a node serves its clients with Redis down");
    let (status, overview) = nodes[1].1.api_key("ops", "viewer").get("/api/overview");
    assert_eq!(status, 200);
    assert_eq!(overview["cluster"]["fresh"], false);
    assert!(
        overview["cluster"]["error"].as_str().is_some(),
        "{overview}"
    );

    // Redis back, empty: the heartbeats write the records again and the views are fresh.
    let _redis = OwnRedis::start(redis.port);
    for (_, s) in &nodes {
        wait_until("the view is fresh again", || {
            s.metric("ringchat_cluster_view_fresh") == 1.0 && live_nodes(s) == 2.0
        });
    }
}

/// `serve --role status`: only the status service, over HTTP and gRPC, no chat node itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_only_node_assigns_clients_to_the_chat_nodes() {
    let db = common::store::fresh_database();
    let prefix = format!("st_{}", unique());
    let nodes = start_nodes(&db, &redis_url(), &prefix, &["c1", "c2"]);
    for (_, s) in &nodes {
        wait_until("both chat nodes see each other", || live_nodes(s) == 2.0);
    }
    let mut status = StatusNode::start(&db, &redis_url(), &prefix);
    let ws = status.ws;

    wait_until("the status node sees both chat nodes", || {
        let body = http_get(ws, "/assign");
        body.contains("\"c1\"") || body.contains("\"c2\"")
    });
    let picks: HashSet<String> = (0..2)
        .map(|_| {
            let v: Value = serde_json::from_str(&http_get(ws, "/assign")).unwrap();
            v["node_id"].as_str().unwrap().to_owned()
        })
        .collect();
    // The status node registers nothing: only the two chat nodes are handed out.
    assert!(picks.iter().all(|p| p == "c1" || p == "c2"), "{picks:?}");
    assert_eq!(http_get(ws, "/readyz"), "ready\n");
    let mut grpc =
        ringchat_proto::v1::status_client::StatusClient::connect(format!("http://{}", status.grpc))
            .await
            .expect("gRPC connect");
    let reply = grpc
        .assign(ringchat_proto::v1::AssignRequest {})
        .await
        .expect("Assign")
        .into_inner();
    assert!(["c1", "c2"].contains(&reply.node_id.as_str()));
    // The chat nodes still count only themselves, and their heartbeats go on with the status
    // node there (a fresh view: the last one reached Redis). Not "no heartbeat ever failed":
    // one Redis call over the tests' 150 ms deadline on a loaded machine is one failure.
    wait_until("n1's view is fresh", || {
        nodes[0].1.metric("ringchat_cluster_view_fresh") == 1.0
    });
    assert_eq!(
        live_nodes(&nodes[0].1),
        2.0,
        "the status node is no chat node"
    );
    // The chat page too, whose WebSocket goes to the node `/assign` names
    // (gateway/tests/cluster_browser.rs drives it in a browser).
    let page = http_get(ws, "/");
    assert!(page.contains("<script src=\"/net.js\""), "{page}");
    assert!(http_get(ws, "/net.js").contains("/assign"));
    assert!(http_get(ws, "/nope").starts_with("not found"));
    // `systemctl reload` or certbot's hook: a SIGHUP is noted, never the end of the node (its
    // default action would end it, and systemd would count that as a clean exit).
    status.signal("HUP");
    assert_eq!(http_get(ws, "/readyz"), "ready\n");
    let exit = status.stop();
    assert!(
        exit.success(),
        "{exit:?}: not the clean stop of its SIGTERM"
    );
}

/// A status node's HTTP listener holds no socket for nothing: a request head not whole within
/// `gateway.status_http.header_read_timeout_ms` closes its connection, and one client holds at
/// most `conns_per_ip_max` connections (the next is closed unanswered) while its held ones and
/// other clients' new ones are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_nodes_http_listener_bounds_slow_heads_and_connections_per_client() {
    use common::http1::Http1;
    use tokio::io::AsyncWriteExt as _;
    const HEADER_READ_TIMEOUT_MS: u64 = 3_000;
    const PER_IP: usize = 3;
    let db = common::store::fresh_database();
    let prefix = format!("sh_{}", unique());
    let nodes = start_nodes(&db, &redis_url(), &prefix, &["c1"]);
    wait_until("c1 sees itself", || live_nodes(&nodes[0].1) == 1.0);
    let status = StatusNode::start_with(
        &db,
        &redis_url(),
        &prefix,
        &[
            (
                "GATEWAY__STATUS_HTTP__HEADER_READ_TIMEOUT_MS",
                &HEADER_READ_TIMEOUT_MS.to_string(),
            ),
            (
                "GATEWAY__STATUS_HTTP__CONNS_PER_IP_MAX",
                &PER_IP.to_string(),
            ),
        ],
    );
    let ws = status.ws;
    wait_until("the status node sees c1", || {
        http_get(ws, "/assign").contains("\"c1\"")
    });
    let assigned = |c: &common::http1::Response| c.status == 200 && c.json()["node_id"] == "c1";

    // Half a head, then nothing: closed after the timeout (axum::serve kept it for ever).
    let mut slow = tokio::net::TcpStream::connect(ws).await.unwrap();
    slow.write_all(b"GET /assign HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut slow = Http1::over(Box::new(slow));
    assert!(slow.closed_by_server().await, "a partial head is closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(HEADER_READ_TIMEOUT_MS / 2),
        "closed after the timeout, not at once: {took:?}"
    );

    // `PER_IP` kept-alive connections, each answered (so each holds its place)...
    let mut held = Vec::new();
    for _ in 0..PER_IP {
        let mut c = Http1::connect(ws).await;
        let r = c.request("GET", "/assign", None, &[], b"").await.unwrap();
        assert!(assigned(&r), "{r:?}");
        held.push(c);
    }
    // ...and the next one from the same address is closed unanswered.
    let mut over = Http1::connect(ws).await;
    let refused = over.request("GET", "/assign", None, &[], b"").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() != std::io::ErrorKind::TimedOut),
        "past conns_per_ip_max: closed, not answered nor left waiting: {refused:?}"
    );
    // The held ones are still answered, and so is another client.
    let r = held[0]
        .request("GET", "/assign", None, &[], b"")
        .await
        .unwrap();
    assert!(assigned(&r), "a held connection: {r:?}");
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = Http1::over(Box::new(other.connect(ws).await.unwrap()));
    let r = other
        .request("GET", "/assign", None, &[], b"")
        .await
        .unwrap();
    assert!(assigned(&r), "another client's new connection: {r:?}");
    // A place given back is taken again.
    drop(held.pop());
    let mut again = None;
    let deadline = std::time::Instant::now() + common::WAIT_DEADLINE;
    while again.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        let mut c = Http1::connect(ws).await;
        match c.request("GET", "/assign", None, &[], b"").await {
            Ok(r) => again = Some(r),
            // Still counted: the server has not seen the close yet.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(assigned(&again.unwrap()));
}

/// The default `gateway.status_http.conns_per_ip_max` admits a whole NAT: the chat page is some
/// 18 files over up to 6 kept-alive connections per browser, and an office's browsers behind one
/// address (or a balancer without PROXY protocol) are one client. Past 64 kept-alive connections
/// from one address (the old default) a new one is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_nodes_http_listener_admits_a_whole_nats_browsers_by_default() {
    use common::http1::Http1;
    // Eleven browsers' worth of kept-alive connections from one address.
    const HELD: usize = 66;
    let db = common::store::fresh_database();
    let prefix = format!("sn_{}", unique());
    let nodes = start_nodes(&db, &redis_url(), &prefix, &["c1"]);
    wait_until("c1 sees itself", || live_nodes(&nodes[0].1) == 1.0);
    // Only the idle limit is set (the longest allowed): the held connections stay open however
    // slowly a loaded machine opens the rest; the per-client count is the default.
    let status = StatusNode::start_with(
        &db,
        &redis_url(),
        &prefix,
        &[("GATEWAY__STATUS_HTTP__HEADER_READ_TIMEOUT_MS", "600000")],
    );
    let ws = status.ws;
    wait_until("the status node sees c1", || {
        http_get(ws, "/assign").contains("\"c1\"")
    });
    let mut held = Vec::new();
    for i in 0..HELD {
        let mut c = Http1::connect(ws).await;
        let r = c
            .request("GET", "/assign", None, &[], b"")
            .await
            .unwrap_or_else(|e| panic!("kept-alive connection number {i} refused: {e}"));
        assert_eq!(r.status, 200, "connection number {i}: {r:?}");
        held.push(c);
    }
    let mut next = Http1::connect(ws).await;
    let r = next
        .request("GET", "/assign", None, &[], b"")
        .await
        .expect("a new connection past 64 kept-alive ones from the same address");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["node_id"], "c1", "{r:?}");
    // The held ones are all still open and answered.
    for c in &mut held {
        let r = c.request("GET", "/readyz", None, &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logged_in_on_node_2_is_routed_there_until_it_logs_out() {
    let db = common::store::fresh_database();
    let prefix = format!("rt_{}", unique());
    let nodes = start_nodes(&db, &redis_url(), &prefix, &["n1", "n2", "n3"]);
    for (_, s) in &nodes {
        wait_until("every node sees three live nodes", || live_nodes(s) == 3.0);
    }
    let (mut alice, ok) = nodes[1].1.user("alice").await;
    let (phone, _) = nodes[1].1.device("alice", "alice-phone").await;
    wait_until("both of alice's devices are routed to n2", || {
        let fields = route_fields(&redis_url(), &prefix, ok.user_id);
        fields.len() == 2 && fields.iter().all(|f| f.starts_with("n2/"))
    });
    assert!(nodes[1].1.metric("ringchat_cluster_route_writes_total") >= 1.0);

    match alice
        .request(ringchat_proto::Body::Logout(ringchat_proto::v1::Logout {}))
        .await
        .expect("a reply")
    {
        ringchat_proto::Body::LogoutOk(_) => {}
        other => panic!("expected LogoutOk, got {other:?}"),
    }
    wait_until("the logged-out device's route is gone", || {
        route_fields(&redis_url(), &prefix, ok.user_id).len() == 1
    });
    drop(phone);
    wait_until("the last device's close removes the route", || {
        route_fields(&redis_url(), &prefix, ok.user_id).is_empty()
    });
}

/// A forwarded write names its user: a `Node/Link` stream without this cluster's
/// `peer_secret`, or with another one, is refused before any item is read, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_without_the_clusters_peer_secret_is_refused() {
    use ringchat_proto::v1::NodeBatch;
    use ringchat_proto::v1::node_client::NodeClient;

    let db = common::store::fresh_database();
    let prefix = format!("sec_{}", unique());
    let nodes = start_nodes(&db, &redis_url(), &prefix, &["s1"]);
    let (env, server) = &nodes[0];
    let mut client = NodeClient::connect(format!("http://{}", env.grpc()))
        .await
        .expect("gRPC connect");
    for secret in [None, Some("wrong-secret-0123456789abcdef0123456789")] {
        let mut request = tonic::Request::new(futures_util::stream::iter(Vec::<NodeBatch>::new()));
        if let Some(s) = secret {
            request
                .metadata_mut()
                .insert("x-ringchat-peer-secret", s.parse().unwrap());
        }
        let refused = client.link(request).await.expect_err("a stranger's link");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }
    assert_eq!(server.metric("ringchat_cluster_peer_refused_total"), 2.0);

    // The secret every node shares opens it.
    let mut request = tonic::Request::new(futures_util::stream::iter(Vec::<NodeBatch>::new()));
    request.metadata_mut().insert(
        "x-ringchat-peer-secret",
        common::cluster::PEER_SECRET.parse().unwrap(),
    );
    client.link(request).await.expect("a peer's link");
}

/// A cluster node takes live changes: its secrets (the peer secret, the Redis URL), hidden when
/// the configuration is shown, survive the merge with the new values. Every PATCH /api/config
/// and PUT /api/security/ip-rules on a cluster node used to be refused ("cluster.peer_secret:
/// required").
#[test]
fn a_cluster_node_takes_live_configuration_changes() {
    let nodes = common::cluster::fresh_nodes("live_config", &["a"], &[]);
    let admin = nodes[0].api_key("ops", "admin");
    let (status, body) = admin.patch(
        "/api/config",
        serde_json::json!({"limits.messages_per_s_max": 50}),
    );
    assert_eq!(status, 200, "{body}");
    let rules = serde_json::json!({"allow": [], "deny": ["192.0.2.1"]});
    let (status, body) = admin.call("PUT", "/api/security/ip-rules", Some(rules.to_string()));
    assert_eq!(status, 200, "{body}");
    let (_, config) = admin.get("/api/config");
    assert_eq!(config["config"]["limits"]["messages_per_s_max"], 50);
    assert_eq!(config["config"]["security"]["deny"][0], "192.0.2.1");
}

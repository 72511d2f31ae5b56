//! Cluster mode at the links' limits (real `ringchat` nodes on one PostgreSQL database and
//! Redis): a message as big as `[limits]` allows crosses nodes without breaking the link; an
//! owner whose sequencer cannot keep up refuses forwarded writes instead of stalling the link.
//! Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_URL).

mod common;

use common::TestServer;
use common::cluster::{direct, every_ack_once, fresh_nodes, metric_sum, owner, synced};
use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// A user on `nodes[on]` (named `{tag}{i}`) whose direct conversation with `with` is owned by
/// `nodes[owned_by]`: (client, user id, username).
async fn peer_owned_by(
    nodes: &[TestServer],
    ids: &[&str],
    on: usize,
    with: u64,
    owned_by: usize,
    tag: &str,
) -> (Client, u64, String) {
    for i in 0..64 {
        let name = format!("{tag}{i}");
        let (client, login) = nodes[on].user(&name).await;
        if owner(conversation_id(with, login.user_id), ids) == owned_by {
            return (client, login.user_id, name);
        }
    }
    panic!("none of 64 conversations is owned by {}", ids[owned_by]);
}

fn links_down(nodes: &[TestServer]) -> f64 {
    nodes
        .iter()
        .map(|n| metric_sum(n, "ringchat_cluster_peer_links_down_total"))
        .sum()
}

/// limits.frame_bytes_max 8 MiB, message_bytes_max 6 MiB: a 5 MiB message from n1 to a
/// conversation n2 owns is forwarded (n1 -> n2), acked at once, stored once, and pushed to
/// the recipient's devices on both nodes (n2 -> n1 as well); no link goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_as_big_as_the_limits_allow_crosses_nodes_and_the_links_stay_up() {
    let ids = ["n1", "n2"];
    let nodes = fresh_nodes(
        "bigmsg",
        &ids,
        &[
            ("LIMITS__FRAME_BYTES_MAX", "8388608"),
            ("LIMITS__MESSAGE_BYTES_MAX", "6291456"),
        ],
    );
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b, bob_name) = peer_owned_by(&nodes, &ids, 1, a.user_id, 1, "bob").await;
    let (mut bob_on_n1, _) = nodes[0].device(&bob_name, "bob-n1").await;
    let before = links_down(&nodes);
    let content = vec![b'x'; 5 << 20];
    let reply = alice
        .request(Body::Send(v1::Send {
            client_msg_id: "big".into(),
            to_user_id: b,
            content_type: v1::ContentType::Text as i32,
            content: content.clone().into(),
            ..Default::default()
        }))
        .await
        .expect("a reply");
    let Body::SendAck(ack) = reply else {
        panic!("acked at the first try, got {reply:?}");
    };
    for device in [&mut bob, &mut bob_on_n1] {
        let m = device.next_push().await.expect("pushed");
        assert_eq!((m.seq, m.content.len()), (ack.seq, content.len()));
    }
    let stored = synced(&mut alice, ack.conversation_id).await;
    assert_eq!(stored.len(), 1, "stored once");
    assert_eq!(links_down(&nodes), before, "no link went down");
}

/// The owner's sequencer queue holds one write (`backend.queue_requests_max` and
/// `storage.commit_group_max` 1): a burst of pipelined 8 KiB sends forwarded n1 -> n2 (24 MiB,
/// seconds of the sequencer's work one commit at a time) is answered write by write, acked or
/// UNAVAILABLE (the owner refuses at once, not waits: an owner that waited for room would
/// refuse none), every ack stored once and nothing refused stored; no link goes down. The
/// stall limit (`peer_connect_timeout_ms`) is 2 s: a loaded test machine can starve a node's
/// link reader for a few hundred ms, which is no stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_owner_refuses_forwarded_writes_and_the_link_stays_up() {
    const SENDS: usize = 3_000;
    let ids = ["n1", "n2"];
    let nodes = fresh_nodes(
        "busyowner",
        &ids,
        &[
            ("BACKEND__QUEUE_REQUESTS_MAX", "1"),
            ("STORAGE__COMMIT_GROUP_MAX", "1"),
            ("CLUSTER__PEER_CONNECT_TIMEOUT_MS", "2000"),
        ],
    );
    let (mut alice, a) = nodes[0].user("alice").await;
    let (_bob, b, _) = peer_owned_by(&nodes, &ids, 1, a.user_id, 1, "bob").await;
    let before = links_down(&nodes);
    // 8 KiB each: far more than HTTP/2 flow control lets the dialer send ahead of a receiver
    // that does not read.
    let pad = "x".repeat(8 << 10);
    let mut sent = Vec::with_capacity(SENDS);
    for i in 0..SENDS {
        let id = format!("s{i}");
        let text = format!("{id}-{pad}");
        let mut body = direct(b, &id);
        if let Body::Send(send) = &mut body {
            send.content = text.clone().into_bytes().into();
        }
        sent.push((alice.send(body).await.expect("send"), text));
    }
    let (mut acks, mut refused) = (Vec::new(), 0);
    let mut conv = 0;
    for (request, id) in sent {
        match alice.reply_to(request).await.expect("every send answered") {
            Body::SendAck(ack) => {
                conv = ack.conversation_id;
                acks.push((ack.seq, id));
            }
            Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                assert!(e.retry_after_ms > 0, "{e:?}");
                refused += 1;
            }
            other => panic!("expected an ack or UNAVAILABLE, got {other:?}"),
        }
    }
    eprintln!("{} acked, {refused} refused", acks.len());
    assert_eq!(links_down(&nodes), before, "no link went down");
    assert!(
        nodes[1].metric("ringchat_cluster_forward_refused_total{reason=\"owner_busy\"}") > 0.0,
        "the owner refused some"
    );
    if !acks.is_empty() {
        let stored = synced(&mut alice, conv).await;
        every_ack_once(&stored, &acks);
        assert_eq!(stored.len(), acks.len(), "nothing refused is stored");
    }
}

/// `grpc_conns_max` idle HTTP/2 connections on n2's gRPC listener (a stranger's: handshake
/// made, pings answered, no request) lock no peer out: each is closed once it served nothing
/// for `grpc_idle_timeout_ms`, and n1, restarted, links to n2 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_filling_the_grpc_listener_do_not_keep_a_peer_out() {
    const CONNS_MAX: usize = 16;
    let ids = ["n1", "n2"];
    let conns_max = CONNS_MAX.to_string();
    let mut nodes = fresh_nodes(
        "idleconns",
        &ids,
        &[
            ("CLUSTER__NODES_MAX", "4"),
            ("CLUSTER__GRPC_CONNS_MAX", &conns_max),
            ("CLUSTER__GRPC_IDLE_TIMEOUT_MS", "500"),
        ],
    );
    let links_up_to_n2 =
        |n1: &TestServer| n1.metric("ringchat_cluster_peer_links_up_total{peer=\"n2\"}");
    common::wait_until("n1 links to n2", || links_up_to_n2(&nodes[0]) >= 1.0);
    nodes[0].stop();
    common::wait_until("n1's connection to n2 is gone", || {
        nodes[1].metric("ringchat_cluster_grpc_conns") == 0.0
    });

    let grpc = nodes[1]
        .env_var("RINGCHAT_CLUSTER__GRPC_LISTEN")
        .expect("n2's gRPC listener")
        .to_owned();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).expect("url");
    let mut idle = Vec::new();
    for _ in 0..CONNS_MAX {
        // A real HTTP/2 client: it answers the server's keepalive pings, and asks nothing.
        // (Not checked for a place here: on a busy machine the first may already have been
        // closed as idle by the time the last connects. Without the idle close, they all stay
        // and n1 below never links.)
        idle.push(endpoint.connect().await.expect("a place"));
    }

    nodes[0].restart();
    common::wait_until_async("n1 links to n2 again", || links_up_to_n2(&nodes[0]) >= 1.0).await;
    assert!(nodes[1].metric("ringchat_cluster_grpc_idle_closed_total") >= CONNS_MAX as f64);
    drop(idle);
}

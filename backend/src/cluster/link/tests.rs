//! The link's origin and owner sides with real `Link`s, peers and queues: what a peer sends is
//! read from the real queue of its `Peer`, what comes back goes through `receive` as a batch
//! from the real stream would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, NodeBatch, NodeItem, node_item::Item};
use tokio::sync::mpsc;

use super::peer::Peer;
use super::{Link, Outbound};
use crate::api::{ConnRef, Outgoing, ShardEvent, WriteRequest, encoded};
use crate::cluster::test_wait::{SilentNodes, node_config, redis_url, until};
use crate::cluster::{Cluster, ClusterConfig};
use crate::groups::online::GroupOnline;
use crate::messaging::{Submitted, Writes};
use crate::sessions::{Sessions, SharedSessions};
use crate::store::ConvId;
use crate::testkit::metric_sum;

/// A link of node `me` with one shard, and what that shard is sent.
fn link(config: &ClusterConfig) -> (Arc<Link>, mpsc::Receiver<ShardEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let link = Link::new(
        config,
        vec![tx],
        SharedSessions::new(Sessions::new(4, vec![])),
        Arc::new(GroupOnline::new(1)),
        100,
        64 << 10,
    )
    .expect("one shard");
    (link, rx)
}

/// The frames shard 0 was sent so far: (connection, request id, body).
fn sent(rx: &mut mpsc::Receiver<ShardEvent>) -> Vec<(u64, u64, Body)> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let ShardEvent::Frames(frames) = event else {
            panic!("only frames are sent");
        };
        for f in frames {
            let Outgoing::One(conn, bytes) = f else {
                panic!("answers go to one connection");
            };
            let frame = ringchat_proto::decode(&mut bytes[..].into(), 1 << 20)
                .expect("a frame")
                .expect("whole");
            out.push((conn, frame.request_id, frame.body.expect("a body")));
        }
    }
    out
}

fn send(client_msg_id: &str) -> WriteRequest {
    WriteRequest::Send(v1::Send {
        client_msg_id: client_msg_id.into(),
        to_user_id: 2,
        content: bytes::Bytes::from_static(b"hi"),
        ..Default::default()
    })
}

/// The one write queued for the owner.
fn forwarded(owner: &Peer) -> v1::Forward {
    match &owner.take_queued()[..] {
        [
            NodeItem {
                item: Some(Item::Forward(f)),
            },
        ] => f.clone(),
        other => panic!("one forwarded write, got {other:?}"),
    }
}

/// The owner's answer to `f`, as its delivery builds it (`fanout.rs`).
fn answer(f: &v1::Forward, body: Body) -> NodeItem {
    NodeItem {
        item: Some(Item::Answer(v1::Answer {
            origin: f.origin,
            request_id: f.request_id,
            frame: encoded(f.request_id, body),
            traceparent: String::new(),
        })),
    }
}

/// A client's request id is reused once answered (PROTOCOL.md): a write answered UNAVAILABLE
/// on the origin's deadline whose owner still acks it later must not have that ack taken as
/// the answer to the next request with the same id, nor lose that request's own answer.
#[tokio::test]
async fn a_late_answer_never_reaches_a_later_request_with_the_same_id() {
    let config = ClusterConfig {
        node_id: "n1".into(),
        ..ClusterConfig::default()
    };
    let (origin, mut shard) = link(&config);
    let owner = Peer::new(
        "n2".into(),
        0,
        "127.0.0.1:9".into(),
        64,
        64,
        Arc::new(super::queue::Heartbeats::new(1_000)),
    );
    let conn = ConnRef { shard: 0, conn: 5 };
    let queued = |s| matches!(s, Submitted::Queued);
    assert!(queued(origin.forward(
        &owner,
        conn,
        1,
        "d".into(),
        7,
        send("A")
    )));
    let a = forwarded(&owner);
    // The owner does not answer within forward_timeout_ms: the client is told UNAVAILABLE.
    let expired = origin
        .pending
        .take_where(Instant::now() + Duration::from_secs(3_600), None);
    origin.answer_unavailable(expired, "late").await;
    let got = sent(&mut shard);
    assert!(
        matches!(&got[..], [(5, 7, Body::Error(e))] if e.code == v1::ErrorCode::Unavailable as i32),
        "{got:?}"
    );
    // The client sends B under request id 7; the owner refuses it.
    assert!(queued(origin.forward(
        &owner,
        conn,
        1,
        "d".into(),
        7,
        send("B")
    )));
    let b = forwarded(&owner);
    let late_ack = answer(
        &a,
        Body::SendAck(v1::SendAck {
            msg_id: 42,
            seq: 1,
            ..Default::default()
        }),
    );
    let refusal = answer(
        &b,
        Body::Error(v1::Error {
            code: v1::ErrorCode::Forbidden as i32,
            message: "not a friend".into(),
            ..Default::default()
        }),
    );
    let (ops, _) = mpsc::channel(1);
    let writes = Writes::new(ops, 1 << 20, 1 << 20, Arc::default());
    let (acks, _acks) = mpsc::channel(1);
    for items in [vec![late_ack], vec![refusal]] {
        let batch = NodeBatch {
            from_node: "n2".into(),
            items,
            missed: false,
            sent_at_ms: 0,
        };
        origin.receive(batch, &writes, &acks).await;
    }
    let got = sent(&mut shard);
    assert!(
        matches!(&got[..], [(5, 7, Body::Error(e))] if e.code == v1::ErrorCode::Forbidden as i32),
        "request 7 is answered with B's refusal, once, and never with A's ack: {got:?}"
    );
    assert_eq!(origin.forwards_waiting(), 0);
}

/// n1's full queue to n2 refuses room items: rooms store nothing and members accept a gap in
/// `room_seq` (a lost part is sent again), so n2 neither counts the batch as `missed`, nor
/// re-reads its online users' groups, nor tells every session to Sync. A refused push (the
/// control) still does all three.
#[tokio::test]
async fn a_refused_room_item_makes_the_peer_neither_repair_nor_hint() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rendered = recorder.handle();
    // A current-thread runtime: every task of this test records here.
    let _recording = metrics::set_default_local_recorder(&recorder);
    let n2_config = ClusterConfig {
        node_id: "n2".into(),
        ..ClusterConfig::default()
    };
    let (n2, _shard) = link(&n2_config);
    let to_n2 = Peer::new(
        "n2".into(),
        0,
        "127.0.0.1:9".into(),
        16,
        16,
        Arc::new(super::queue::Heartbeats::new(1_000)),
    );
    let push = || NodeItem {
        item: Some(Item::ToUsers(v1::ToUsers {
            user_ids: vec![1],
            frame: encoded(0, Body::Pong(v1::Pong::default())),
            ..Default::default()
        })),
    };
    to_n2
        .push_all((0..16).map(|_| push()).collect())
        .expect("room for 16");
    let room = "lobby".to_owned();
    let room_items = [
        Item::RoomPart(v1::NodeRoomPart {
            room: room.clone(),
            ..Default::default()
        }),
        Item::RoomSend(v1::NodeRoomSend {
            room: room.clone(),
            ..Default::default()
        }),
        Item::RoomAnswer(v1::NodeRoomAnswer::default()),
        Item::RoomMessage(v1::NodeRoomMessage {
            room,
            room_seq: 7,
            ..Default::default()
        }),
    ];
    for item in room_items {
        let item = NodeItem { item: Some(item) };
        assert!(!Link::push_room_item(&to_n2, item), "the queue is full");
    }
    let (ops, _) = mpsc::channel(1);
    let writes = Writes::new(ops, 1 << 20, 1 << 20, Arc::default());
    let (acks, _acks) = mpsc::channel(1);
    for batch in to_n2.take_batches("n1") {
        assert!(!batch.missed, "a refused room item is no lost push");
        n2.receive(batch, &writes, &acks).await;
    }
    let text = rendered.render();
    for name in [
        "ringchat_cluster_peer_missed_total",
        "ringchat_group_online_repairs_wanted_total",
        "ringchat_cluster_sync_hints_requested_total",
    ] {
        assert_eq!(metric_sum(&text, name), 0.0, "{name} rose on n2:\n{text}");
    }

    // The control: a refused push is announced, and n2 repairs and hints.
    to_n2
        .push_all((0..16).map(|_| push()).collect())
        .expect("room for 16");
    assert!(to_n2.push_all(vec![push()]).is_err(), "the queue is full");
    for batch in to_n2.take_batches("n1") {
        n2.receive(batch, &writes, &acks).await;
    }
    let text = rendered.render();
    for name in [
        "ringchat_cluster_peer_missed_total",
        "ringchat_group_online_repairs_wanted_total",
        "ringchat_cluster_sync_hints_requested_total",
    ] {
        assert!(
            metric_sum(&text, name) > 0.0,
            "{name} did not rise on n2:\n{text}"
        );
    }
}

/// What a peer's queue holds, as (kind, users) pairs: ("users", ids) or ("group", []).
fn kinds(items: Vec<NodeItem>) -> Vec<(&'static str, Vec<u64>)> {
    items
        .into_iter()
        .map(|i| match i.item {
            Some(Item::ToUsers(t)) => ("users", t.user_ids),
            Some(Item::ToGroup(_)) => ("group", Vec::new()),
            other => panic!("only pushes are queued here, got {other:?}"),
        })
        .collect()
}

/// With trusted routes placing user 1 on n2 and user 2 on n3, the owner n1 queues each push
/// to users for its own users' node only, whatever else its commit group holds; a group's
/// frame still goes to every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_users_go_only_to_the_nodes_holding_them() {
    // n2 and n3 are dialed at a listener that never answers: their queues stay as filled.
    let nodes = SilentNodes::start("fanout", &["n1", "n2", "n3"]).await;
    let clusters = &nodes.clusters;
    let conn = |c| ConnRef { shard: 0, conn: c };
    clusters[1]
        .routes()
        .expect("routes")
        .opened(1, conn(1), "d", "PLATFORM_WEB");
    clusters[2]
        .routes()
        .expect("routes")
        .opened(2, conn(1), "d", "PLATFORM_WEB");
    let n1 = &clusters[0];
    until("n1 sees all three nodes", || n1.view().nodes.len() == 3).await;
    let routes = n1.routes().expect("routes");
    until("n1's routes place user 1 on n2 and user 2 on n3", || {
        let d = routes.nodes_of(&[1, 2]);
        let mut got: Vec<(String, Vec<u64>)> = d
            .nodes
            .into_iter()
            .map(|d| (d.node_id.to_string(), d.users))
            .collect();
        got.sort();
        !d.everywhere && got == [("n2".into(), vec![1]), ("n3".into(), vec![2])]
    })
    .await;
    let (link, _shard) = link(&nodes.config("n1"));
    link.attach(Arc::clone(n1), tokio::runtime::Handle::current(), None);

    let frame = encoded(0, Body::Pong(v1::Pong::default()));
    let mut out = Outbound::default();
    out.users(&[1], conn(9), &frame);
    out.users(&[2], conn(9), &frame);
    link.send_group(out);
    let queued = |id| kinds(link.peer_by_id(id).expect("a peer").take_queued());
    assert_eq!(queued("n2"), [("users", vec![1])], "n2 holds user 1 only");
    assert_eq!(queued("n3"), [("users", vec![2])], "n3 holds user 2 only");

    let mut out = Outbound::default();
    out.users(&[1, 2], conn(9), &frame);
    out.group(ConvId::group(5).expect("a group id"), 7, conn(9), &frame);
    out.users(&[2], conn(9), &frame);
    link.send_group(out);
    assert_eq!(
        queued("n2"),
        [("users", vec![1]), ("group", vec![])],
        "a group's frame goes to every node; pushes to users still to theirs"
    );
    assert_eq!(
        queued("n3"),
        [("users", vec![2]), ("group", vec![]), ("users", vec![2])]
    );

    link.shutdown();
    nodes.stop();
}

/// A login's `REPLACED` kick carries the replacing session's open time, not the time it is
/// queued: a login slow after its session opened must not end a session of the device opened
/// since on another node (`kicks.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_kick_carries_the_replacing_sessions_open_time() {
    let nodes = SilentNodes::start("replaced", &["n1", "n2"]).await;
    let n1 = &nodes.clusters[0];
    until("n1 sees both nodes", || n1.view().nodes.len() == 2).await;
    let (link, _shard) = link(&nodes.config("n1"));
    link.attach(Arc::clone(n1), tokio::runtime::Handle::current(), None);

    let opened_at_ms = crate::time::now_ms() - 30_000;
    link.send_kick_once(7, "phone", opened_at_ms);
    let queued = link.peer_by_id("n2").expect("a peer").take_queued();
    let kicks: Vec<(u64, String, i32, bool, u64)> = queued
        .into_iter()
        .filter_map(|i| match i.item {
            Some(Item::Kick(k)) => Some((
                k.user_id,
                k.device_id,
                k.reason,
                k.all_devices,
                k.issued_at_ms,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        kicks,
        [(
            7,
            "phone".to_owned(),
            v1::KickReason::Replaced as i32,
            false,
            opened_at_ms
        )]
    );
    link.shutdown();
    nodes.stop();
}

/// A node at an address anyone who can write to Redis names: records the headers of the
/// `Link` streams it is sent, and refuses them.
struct FakeNode(mpsc::Sender<tonic::metadata::MetadataMap>);

#[tonic::async_trait]
impl ringchat_proto::v1::node_server::Node for FakeNode {
    type LinkStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<NodeBatch, tonic::Status>> + Send>,
    >;

    async fn link(
        &self,
        request: tonic::Request<tonic::Streaming<NodeBatch>>,
    ) -> Result<tonic::Response<Self::LinkStream>, tonic::Status> {
        let _ = self.0.try_send(request.metadata().clone());
        Err(tonic::Status::unavailable("a fake node"))
    }
}

impl FakeNode {
    /// A fake node listening on loopback: its address, the headers of the streams it is sent,
    /// and its server task (aborted by the caller).
    async fn listen() -> (
        String,
        mpsc::Receiver<tonic::metadata::MetadataMap>,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        let (headers_tx, headers) = mpsc::channel(16);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ringchat_proto::v1::node_server::NodeServer::new(FakeNode(
                    headers_tx,
                )))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, headers, server)
    }
}

/// Node n1 with `secret`, joined, and its link attached: the cluster, what stops it, and the
/// link (with its shard's inbox, kept by the caller).
async fn joined_n1(
    prefix: &str,
    secret: &str,
) -> (
    Arc<Cluster>,
    tokio::sync::oneshot::Sender<()>,
    (Arc<Link>, mpsc::Receiver<ShardEvent>),
) {
    let config = ClusterConfig {
        peer_secret: secret.into(),
        ..node_config(prefix, "n1", "127.0.0.1:1")
    };
    let cluster = Cluster::new(&config, Some(Box::new(|| 0))).expect("cluster");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&cluster).run(async {
        let _ = stopped.await;
    }));
    until("n1 joined", || cluster.view().joined).await;
    let linked = link(&config);
    linked.0.attach(
        Arc::clone(&cluster),
        tokio::runtime::Handle::current(),
        None,
    );
    (cluster, stop, linked)
}

/// Without `[cluster.tls]`, a node record anyone wrote into Redis makes this node dial its
/// address: what it sends there proves it holds `peer_secret` for that node alone, and never
/// carries the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_in_redis_by_anyone_is_never_sent_the_peer_secret() {
    const SECRET: &str = "this-cluster-secret-0123456789abcdef";
    let prefix = format!("secret_{}_{}", std::process::id(), crate::time::now_ms());
    let (fake_addr, mut headers, server) = FakeNode::listen().await;
    let (cluster, stop, (link, _shard)) = joined_n1(&prefix, SECRET).await;

    // Anyone who can write to this Redis names a node "zz" at the fake's address.
    let now = crate::time::now_ms();
    let record = crate::cluster::NodeRecord {
        node_id: "zz".into(),
        advertise_addr: fake_addr,
        client_addrs: Vec::new(),
        started_at_ms: now,
        heartbeat_at_ms: now,
        connections: 0,
        cpu_percent: 0.0,
    };
    let mut redis = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis");
    redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}:node:zz"))
        .arg(serde_json::to_string(&record).expect("json"))
        .arg("PX")
        .arg(60_000)
        .cmd("SADD")
        .arg(format!("{prefix}:nodes"))
        .arg("zz")
        .query_async::<()>(&mut redis)
        .await
        .expect("written");
    until("zz in n1's view", || cluster.view().has("zz")).await;
    // A write whose conversation zz owns would make this peer.
    assert!(link.peer_by_id("zz").is_some());

    let sent = tokio::time::timeout(Duration::from_secs(10), headers.recv())
        .await
        .expect("the fake node is dialed")
        .expect("its headers");
    for kv in sent.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(name, value) = kv {
            assert!(
                !value
                    .as_bytes()
                    .windows(SECRET.len())
                    .any(|w| w == SECRET.as_bytes()),
                "header {name} carries the secret"
            );
        }
    }
    assert!(sent.get("x-ringchat-peer-secret").is_none());
    assert!(
        sent.get("x-ringchat-peer-proof").is_some(),
        "a proof instead"
    );
    link.shutdown();
    let _ = stop.send(());
    server.abort();
}

/// Whoever can write to Redis points node zz's record at their own listener: n1 dials it
/// there and presents its proof, which the catcher relays at once to zz's real `grpc_listen`.
/// zz refuses it (the proof names the address n1 dialled, not zz's own), so no batch naming
/// n1 is taken from the catcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_caught_at_an_address_named_in_redis_opens_not_the_real_node() {
    const SECRET: &str = "this-cluster-secret-0123456789abcdef";
    let prefix = format!("relay_{}_{}", std::process::id(), crate::time::now_ms());
    // The real zz: its listener and link, its record never written (the catcher's stands).
    let real = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let real_addr = real.local_addr().expect("addr").to_string();
    let zz_config = ClusterConfig {
        peer_secret: SECRET.into(),
        ..node_config(&prefix, "zz", &real_addr)
    };
    let zz = Cluster::new(&zz_config, Some(Box::new(|| 0))).expect("cluster");
    let (zz_link, _zz_shard) = link(&zz_config);
    zz_link.attach(Arc::clone(&zz), tokio::runtime::Handle::current(), None);
    let (zz_stop, zz_stopped) = tokio::sync::oneshot::channel::<()>();
    let service = super::NodeService::new(Arc::clone(&zz_link), Writes::unconnected());
    tokio::spawn(crate::cluster::serve_grpc(
        Arc::clone(&zz),
        Some(service),
        real,
        None,
        async {
            let _ = zz_stopped.await;
        },
    ));

    let (catcher_addr, mut headers, server) = FakeNode::listen().await;
    let (cluster, stop, (n1_link, _shard)) = joined_n1(&prefix, SECRET).await;
    let now = crate::time::now_ms();
    let record = crate::cluster::NodeRecord {
        node_id: "zz".into(),
        advertise_addr: catcher_addr,
        client_addrs: Vec::new(),
        // zz's real start: what the catcher can read of it does not help.
        started_at_ms: zz.started_at_ms(),
        heartbeat_at_ms: now,
        connections: 0,
        cpu_percent: 0.0,
    };
    let mut redis = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis");
    redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}:node:zz"))
        .arg(serde_json::to_string(&record).expect("json"))
        .arg("PX")
        .arg(60_000)
        .cmd("SADD")
        .arg(format!("{prefix}:nodes"))
        .arg("zz")
        .query_async::<()>(&mut redis)
        .await
        .expect("written");
    until("zz in n1's view", || cluster.view().has("zz")).await;
    assert!(n1_link.peer_by_id("zz").is_some());
    let caught = tokio::time::timeout(Duration::from_secs(10), headers.recv())
        .await
        .expect("the catcher is dialed")
        .expect("its headers");
    let proof = caught
        .get("x-ringchat-peer-proof")
        .expect("n1's proof")
        .clone();

    let mut relay =
        ringchat_proto::v1::node_client::NodeClient::connect(format!("http://{real_addr}"))
            .await
            .expect("zz's real listener");
    let batch = NodeBatch {
        from_node: "n1".into(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(futures_util::stream::iter(vec![batch]));
    request
        .metadata_mut()
        .insert("x-ringchat-peer-proof", proof);
    let refused = relay.link(request).await.expect_err("a relayed proof");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    n1_link.shutdown();
    zz_link.shutdown();
    let _ = stop.send(());
    let _ = zz_stop.send(());
    server.abort();
}

/// A kick issued before this node could see any other (a node that has not joined: Redis away
/// at its start, its shards already taking logins) is not lost for the nodes it could not
/// see: each node of its first view is handed it once it joins, remembered until confirmed
/// (`kicks.rs` `KickLog`, `newcomers.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_issued_before_joining_is_handed_to_the_nodes_of_the_first_view() {
    let nodes = SilentNodes::start("kicklog", &["n1", "n2", "n3"]).await;
    let n1 = &nodes.clusters[0];
    until("n1 sees every node", || n1.view().nodes.len() == 3).await;
    let (link, _shard) = link(&nodes.config("n1"));
    // No view yet: nothing to send it to.
    link.send_kick(7, None, v1::KickReason::PasswordChanged);
    link.attach(Arc::clone(n1), tokio::runtime::Handle::current(), None);
    let waiting = |peer: &str| {
        link.peer_by_id(peer)
            .map(|p| p.kicks_waiting())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| match i.item {
                Some(Item::Kick(k)) => Some((k.user_id, k.reason, k.all_devices)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let want = vec![(7, v1::KickReason::PasswordChanged as i32, true)];
    until("n2 and n3 are handed the kick", || {
        waiting("n2") == want && waiting("n3") == want
    })
    .await;
    link.shutdown();
    nodes.stop();
}

/// A session of `user` on shard 0, connection `conn`.
fn open_session(sessions: &SharedSessions, user: u64, conn: u64) {
    let session = crate::sessions::Session {
        conn: ConnRef { shard: 0, conn },
        device_id: format!("d{conn}").into(),
        platform: v1::Platform::Web,
        token_hash: [0; 32],
        peer: std::net::Ipv4Addr::LOCALHOST.into(),
        opened_at_ms: 0,
        token_expires_at_ms: u64::MAX,
    };
    sessions.write().open(user, session).expect("opened");
}

/// A batch from `from` pushing `frame` to `user`.
fn push_to(from: &str, user: u64, frame: &'static [u8]) -> NodeBatch {
    NodeBatch {
        from_node: from.into(),
        items: vec![NodeItem {
            item: Some(Item::ToUsers(v1::ToUsers {
                user_ids: vec![user],
                frame: bytes::Bytes::from_static(frame),
                ..v1::ToUsers::default()
            })),
        }],
        missed: false,
        sent_at_ms: 0,
    }
}

/// An incoming stream fed by the test, batch by batch.
fn stream_of(
    rx: mpsc::Receiver<NodeBatch>,
) -> impl futures_util::Stream<Item = Result<NodeBatch, tonic::Status>> + Unpin {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// A peer that re-dials (its stream here took no batch within `peer_connect_timeout_ms`: a
/// full shard inbox) leaves the old stream's task delivering: blocked on that inbox with one
/// batch, another read behind it. Its pushes carry lower seqs than the new stream's, so none
/// may reach a session after the new stream's: the old stream's later push is dropped,
/// announced as lost (the session is told to Sync), and the old stream ends.
#[tokio::test]
async fn an_older_stream_of_a_peer_delivers_nothing_after_its_newer_one() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rendered = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let config = ClusterConfig {
        node_id: "n2".into(),
        ..ClusterConfig::default()
    };
    let (tx, mut shard) = mpsc::channel(1);
    let sessions = SharedSessions::new(Sessions::new(4, vec![]));
    open_session(&sessions, 7, 70);
    let n2 = Link::new(
        &config,
        vec![tx.clone()],
        sessions,
        Arc::new(GroupOnline::new(1)),
        100,
        64 << 10,
    )
    .expect("one shard");
    // The shard's inbox is full.
    tx.send(ShardEvent::Frames(Vec::new()))
        .await
        .expect("room for one");
    let (ops, _ops) = mpsc::channel(1);
    let writes = Writes::new(ops, 1 << 20, 1 << 20, Arc::default());
    let serve = |rx| {
        let (acks, _) = mpsc::channel(1);
        tokio::spawn(Arc::clone(&n2).serve_stream(
            stream_of(rx),
            Some("n1".into()),
            writes.clone(),
            acks,
            n2.stop.subscribe(),
        ))
    };
    let stream_number = || n2.stream_number("n1");

    // The old stream's first batch: its task blocks on the full inbox.
    let (old_tx, old_rx) = mpsc::channel(4);
    old_tx.send(push_to("n1", 7, b"seq10")).await.unwrap();
    let mut old = serve(old_rx);
    until("the old stream began", || stream_number() == Some(1)).await;
    // n1 gave up on it and re-dialed: the new stream carries seq 12.
    let (new_tx, new_rx) = mpsc::channel(4);
    new_tx.send(push_to("n1", 7, b"seq12")).await.unwrap();
    let _new = serve(new_rx);
    until("the new stream began", || stream_number() == Some(2)).await;
    // Seq 11, sent on the old stream before n1 gave up on it, read there once it unblocks.
    old_tx.send(push_to("n1", 7, b"seq11")).await.unwrap();
    drop(old_tx);

    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut old_ended = false;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while !(old_ended && got.contains(&b"seq12".to_vec())) {
        tokio::select! {
            Some(event) = shard.recv() => {
                let ShardEvent::Frames(frames) = event else {
                    panic!("only frames are sent");
                };
                for f in frames {
                    if let Outgoing::One(70, frame) = f {
                        got.push(frame.to_vec());
                    }
                }
            }
            _ = &mut old, if !old_ended => old_ended = true,
            () = &mut deadline => panic!("the old stream never ended or seq 12 never came: {got:?}"),
        }
    }
    while let Ok(ShardEvent::Frames(frames)) = shard.try_recv() {
        for f in frames {
            if let Outgoing::One(70, frame) = f {
                got.push(frame.to_vec());
            }
        }
    }
    let got: Vec<String> = got
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(
        got,
        ["seq10", "seq12"],
        "seq 11 of the old stream is not delivered after seq 12 of the new one"
    );
    let text = rendered.render();
    assert_eq!(
        metric_sum(&text, "ringchat_cluster_peer_items_superseded_total"),
        1.0,
        "{text}"
    );
    assert!(
        metric_sum(&text, "ringchat_cluster_peer_missed_total") > 0.0,
        "the dropped push is announced: the sessions here Sync\n{text}"
    );
}

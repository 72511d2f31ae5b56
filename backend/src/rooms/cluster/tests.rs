//! Rooms across nodes with real `Link`s of real nodes on the test Redis (registered,
//! heartbeating, one view): what a node queues for a room's owner is read from the real queue
//! of the owner's `Peer`, and handed to the other node's `Rooms` as its link would.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};
use tokio::sync::mpsc;

use super::{Asked, ClusterRooms};
use crate::api::{ConnRef, Outgoing, ShardEvent};
use crate::cluster::ClusterConfig;
use crate::cluster::link::{Link, Owner};
use crate::cluster::test_wait::{SilentNodes, until};
use crate::groups::online::GroupOnline;
use crate::rooms::{Rooms, RoomsConfig};
use crate::sessions::{Sessions, SharedSessions};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// Three nodes n1, n2, n3 on the test Redis, every one's peers dialed at a listener that
/// takes connections and never answers: what is queued for a peer stays queued for the test.
struct Nodes(SilentNodes);

impl Nodes {
    async fn start(kind: &str) -> Self {
        let nodes = SilentNodes::start(&format!("rooms_{kind}"), &["n1", "n2", "n3"]).await;
        for c in &nodes.clusters {
            until("every node sees all three", || c.view().nodes.len() == 3).await;
        }
        Self(nodes)
    }

    /// Node `i`'s rooms (one shard), on a link with `tune` applied to its settings, and what
    /// its shard is sent.
    fn rooms(
        &self,
        i: usize,
        tune: impl FnOnce(&mut ClusterConfig),
    ) -> (Arc<Rooms>, Arc<Link>, mpsc::Receiver<ShardEvent>) {
        let id = ["n1", "n2", "n3"][i];
        let mut config = self.0.config(id);
        tune(&mut config);
        let (tx, rx) = mpsc::channel(64);
        let link = Link::new(
            &config,
            vec![tx.clone()],
            SharedSessions::new(Sessions::new(4, vec![])),
            Arc::new(GroupOnline::new(1)),
            100,
            64 << 10,
        )
        .expect("one shard");
        link.attach(
            Arc::clone(&self.0.clusters[i]),
            tokio::runtime::Handle::current(),
            None,
        );
        let rooms_config = RoomsConfig::default();
        let rooms = Arc::new(Rooms::new(
            rooms_config.clone(),
            Some(
                ClusterRooms::new(
                    Arc::clone(&link),
                    vec![tx],
                    &rooms_config,
                    config.nodes_max,
                    1_000,
                )
                .expect("random ask ids"),
            ),
        ));
        link.set_rooms(Arc::downgrade(&rooms));
        (rooms, link, rx)
    }

    fn stop(self, links: &[&Arc<Link>]) {
        for l in links {
            l.shutdown();
        }
        self.0.stop();
    }
}

/// A room name `link`'s view gives to node `owner`.
fn room_owned_by(link: &Arc<Link>, owner: &str) -> String {
    (0..10_000)
        .map(|i| format!("room{i}"))
        .find(|name| match link.room_owner(name) {
            Owner::Here => link.node_id() == owner,
            Owner::Elsewhere(p) => p.node_id == owner,
            Owner::Unknown(_) => false,
        })
        .expect("some room is owned by each node")
}

/// What `link` has queued for node `node` (found as the owner of some room), taken out.
fn queued(link: &Arc<Link>, node: &str) -> Vec<NodeItem> {
    let room = room_owned_by(link, node);
    match link.room_owner(&room) {
        Owner::Elsewhere(p) => p.take_queued(),
        _ => unreachable!("a room of another node"),
    }
}

fn conn(conn: u64) -> ConnRef {
    ConnRef { shard: 0, conn }
}

/// A message numbered `room_seq` as its owner sends it to a node.
fn message(room: &str, room_seq: u64) -> v1::NodeRoomMessage {
    v1::NodeRoomMessage {
        room: room.into(),
        room_seq,
        except: None,
        frame: crate::api::encoded(
            0,
            Body::RoomMessage(v1::RoomMessage {
                room: room.into(),
                room_seq,
                ..Default::default()
            }),
        ),
    }
}

/// The room_seqs of the room messages the shard was sent so far.
fn delivered(rx: &mut mpsc::Receiver<ShardEvent>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let ShardEvent::Frames(frames) = event else {
            panic!("only frames are sent");
        };
        for f in frames {
            let Outgoing::Shared { frame, .. } = f else {
                panic!("room messages go to the room's list");
            };
            let frame = ringchat_proto::decode(&mut frame[..].into(), 1 << 20)
                .expect("a frame")
                .expect("whole");
            let Some(Body::RoomMessage(m)) = frame.body else {
                panic!("a room message");
            };
            out.push(m.room_seq);
        }
    }
    out
}

fn parts(items: Vec<NodeItem>) -> Vec<v1::NodeRoomPart> {
    items
        .into_iter()
        .filter_map(|i| match i.item {
            Some(Item::RoomPart(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn messages(items: Vec<NodeItem>) -> Vec<v1::NodeRoomMessage> {
    items
        .into_iter()
        .filter_map(|i| match i.item {
            Some(Item::RoomMessage(m)) => Some(m),
            _ => None,
        })
        .collect()
}

/// E (n2) has just taken a room over, numbering on from the 10 that C (n1) reported; A (n3),
/// whose view lags, still numbers and has delivered 11 to 13 on C. E's messages must still
/// reach C's members: C, dropping E's 11 as not newer, tells E what it delivered, and E numbers
/// above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_numbers_above_what_a_lagging_owner_delivered() {
    let nodes = Nodes::start("lag").await;
    let (c_rooms, c_link, mut c_shard) = nodes.rooms(0, |_| {});
    let (e_rooms, e_link, _e_shard) = nodes.rooms(1, |_| {});
    let room = room_owned_by(&c_link, "n2");
    assert!(matches!(e_link.room_owner(&room), Owner::Here));
    let (c_member, e_member) = (conn(1), conn(2));
    c_rooms
        .lock()
        .join(c_member, 1, PEER, &room, 0)
        .expect("joins");
    e_rooms
        .lock()
        .join(e_member, 2, PEER, &room, 0)
        .expect("joins");
    e_rooms.report(&room);
    // C has delivered 10 when it reports its part to E.
    c_rooms.message_from_owner("n2", message(&room, 10)).await;
    c_rooms.report(&room);
    for p in parts(queued(&c_link, "n2")) {
        assert!(e_rooms.part_from("n1", p).is_none(), "no answer wanted");
    }
    // A's stragglers reach C first.
    for seq in 11..=13 {
        c_rooms.message_from_owner("n3", message(&room, seq)).await;
    }
    assert_eq!(delivered(&mut c_shard), [10, 11, 12, 13]);

    let send = v1::RoomSend {
        room: room.clone(),
        content_type: 0,
        content: Bytes::from_static(b"from e"),
    };
    let mut numbered = Vec::new();
    for _ in 0..2 {
        let Asked::Now(Ok(a)) = e_rooms.send_clustered(e_member, 2, &send).await else {
            panic!("E owns the room: numbered at once");
        };
        numbered.push(a.room_seq);
        // What E sent C reaches C, and what C sends back reaches E.
        for m in messages(queued(&e_link, "n1")) {
            c_rooms.message_from_owner("n2", m).await;
        }
        for p in parts(queued(&c_link, "n2")) {
            e_rooms.part_from("n1", p);
        }
    }
    assert_eq!(numbered[0], 11, "E numbered on from what it heard");
    assert_eq!(
        numbered[1], 14,
        "then above what C says it delivered, not 12: {numbered:?}"
    );
    assert_eq!(
        delivered(&mut c_shard),
        [14],
        "E's next message reaches C's members"
    );

    // A send from C carries what C delivered: E numbers above it at once.
    c_rooms.message_from_owner("n3", message(&room, 20)).await;
    assert_eq!(delivered(&mut c_shard), [20]);
    let Asked::Later(..) = c_rooms.send_clustered(c_member, 1, &send).await else {
        panic!("asked of E");
    };
    let sends: Vec<v1::NodeRoomSend> = queued(&c_link, "n2")
        .into_iter()
        .filter_map(|i| match i.item {
            Some(Item::RoomSend(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].delivered_seq, 20);
    let answer = e_rooms.send_from("n1", sends[0].clone()).await;
    assert!(
        matches!(&answer.item, Some(Item::RoomAnswer(a)) if a.room_seq == 21),
        "{answer:?}"
    );
    for m in messages(queued(&e_link, "n1")) {
        c_rooms.message_from_owner("n2", m).await;
    }
    assert_eq!(delivered(&mut c_shard), [21], "C's members get it");
    nodes.stop(&[&c_link, &e_link]);
}

/// A part of a room another node owns (by this node's view) is not kept here, and is answered
/// UNAVAILABLE naming the room, even when no answer was asked for; a node told so sends its
/// part again. A send of such a room is not numbered here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_no_part_of_a_room_it_does_not_own() {
    let nodes = Nodes::start("notmine").await;
    let (rooms, link, _shard) = nodes.rooms(0, |_| {});
    let room = room_owned_by(&link, "n2");
    let part = v1::NodeRoomPart {
        room: room.clone(),
        users: 1,
        sessions: 1,
        ..Default::default()
    };
    let answer = rooms.part_from("n3", part.clone());
    let Some(NodeItem {
        item: Some(Item::RoomAnswer(a)),
    }) = answer
    else {
        panic!("answered, though no answer was asked for: {answer:?}");
    };
    assert_eq!(a.error_code, v1::ErrorCode::Unavailable as i32);
    assert_eq!(a.room, room);
    let c = rooms.cluster().expect("cluster mode");
    assert_eq!(c.book().len(), 0, "nothing kept");
    let ask = rooms.part_from(
        "n3",
        v1::NodeRoomPart {
            request_id: 9,
            ..part
        },
    );
    assert!(
        matches!(ask, Some(NodeItem { item: Some(Item::RoomAnswer(a)) }) if a.request_id == 9 && a.error_code == v1::ErrorCode::Unavailable as i32)
    );
    let sent = rooms
        .send_from(
            "n3",
            v1::NodeRoomSend {
                request_id: 10,
                room: room.clone(),
                origin: Some(link.origin_here(conn(1))),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(sent, NodeItem { item: Some(Item::RoomAnswer(a)) } if a.error_code == v1::ErrorCode::Unavailable as i32)
    );
    assert_eq!(c.book().len(), 0);

    // The other side: told its part was refused, a node sends it again.
    rooms.answered(a);
    assert_eq!(c.resend().len(), 1);
    nodes.stop(&[&link]);
}

/// A part that could not be queued (the owner's queue full here; a link down alike) is sent
/// again, an emptied room's too: else the owner counts the members that left for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_rooms_part_that_was_not_queued_is_sent_again() {
    let nodes = Nodes::start("resend").await;
    let (rooms, link, _shard) = nodes.rooms(0, |c| c.peer_queue_items_max = 1);
    let room = room_owned_by(&link, "n2");
    let member = conn(1);
    rooms.lock().join(member, 1, PEER, &room, 0).expect("joins");
    rooms.report(&room);
    // The owner's queue is full: the leave's part is refused.
    rooms.lock().leave(member, 1, &room, 0);
    rooms.report(&room);
    let first: Vec<(u32, u32)> = parts(queued(&link, "n2"))
        .iter()
        .map(|p| (p.users, p.sessions))
        .collect();
    assert_eq!(first, [(1, 1)], "the join's part only");
    tokio::spawn(Arc::clone(&rooms).watch_view());
    let mut got = Vec::new();
    until("the emptied room's part is sent again", || {
        got.extend(parts(queued(&link, "n2")));
        got.iter().any(|p| p.sessions == 0)
    })
    .await;
    assert!(got.iter().all(|p| p.room == room));
    nodes.stop(&[&link]);
}

/// A part can be lost where no one sees it (in flight on a link that broke, at an owner
/// restarted under the same node id, in a refusal lost on its way back): every part is sent
/// again each refresh, with nothing changed and nothing failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_is_sent_again_on_each_refresh() {
    let nodes = Nodes::start("refresh").await;
    let (rooms, link, _shard) = nodes.rooms(0, |_| {});
    let room = room_owned_by(&link, "n2");
    rooms
        .lock()
        .join(conn(1), 1, PEER, &room, 0)
        .expect("joins");
    tokio::spawn(Arc::clone(&rooms).watch_view());
    let is_ours = |p: &v1::NodeRoomPart| p.room == room && p.sessions == 1;
    until("the view's first check sends the part", || {
        parts(queued(&link, "n2")).iter().any(is_ours)
    })
    .await;
    // Taken out of the queue, as a link that broke with it in flight would have.
    // Past `until`'s deadline: a refresh comes every 10 s.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !parts(queued(&link, "n2")).iter().any(is_ours) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the refresh sends the part again");
    nodes.stop(&[&link]);
}

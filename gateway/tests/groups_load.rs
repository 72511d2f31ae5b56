//! A member removed while the group is under load: it gets its REMOVED event and no push after
//! it, its Sync stops at the removal seq, and the members who stay get everything.

mod common;

use std::collections::HashMap;

use common::TestServer;
use common::contacts::ask;
use common::groups::{create_id, event_kind, event_of, ok, remove, send_body};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, GroupEventKind};

const SENDS: usize = 2_000;
const WINDOW: usize = 8;
/// Pushes the member gets before it is removed.
const PUSHES_BEFORE_REMOVAL: usize = 50;

/// Pipelined sends; returns the highest acked seq.
async fn load(mut c: Client, g: u64) -> u64 {
    let mut in_flight = HashMap::new();
    let (mut sent, mut last) = (0, 0);
    while sent < SENDS || !in_flight.is_empty() {
        while in_flight.len() < WINDOW && sent < SENDS {
            let cmid = format!("m{sent}");
            let rid = c
                .send(send_body(g, &cmid, "load", &[], false))
                .await
                .unwrap();
            in_flight.insert(rid, cmid);
            sent += 1;
        }
        let frame = c.recv_timeout().await.unwrap().expect("the server is up");
        if in_flight.remove(&frame.request_id).is_none() {
            continue;
        }
        match frame.body {
            Some(Body::SendAck(a)) => last = last.max(a.seq),
            other => panic!("a send answered with {other:?}"),
        }
    }
    last
}

#[tokio::test]
async fn a_member_removed_mid_load_gets_nothing_after_its_removal() {
    // One shard: a Pong queued after the pushes on the same connection proves they all left.
    let server = TestServer::start(&[("GATEWAY__CORES", "[0]")]);
    let (mut owner, _) = server.user("owner").await;
    let (sender, s) = server.user("sender").await;
    let (mut victim, v) = server.user("victim").await;
    let (mut witness, w) = server.user("witness").await;
    let members = [s.user_id, v.user_id, w.user_id];
    let g = create_id(&mut owner, &members, v1::JoinPolicy::InviteOnly).await;
    let loading = tokio::spawn(load(sender, g));
    let mut seen = Vec::new();
    while seen.len() < PUSHES_BEFORE_REMOVAL {
        let m = victim.next_push().await.unwrap();
        if m.conversation_id == g {
            seen.push(m);
        }
    }
    let removal = ok(ask(&mut owner, remove(g, &[v.user_id])).await).event_seq;
    // The victim's pushes run on, in order, up to its REMOVED event.
    loop {
        let m = victim.next_push().await.unwrap();
        if m.conversation_id != g {
            continue;
        }
        let done = event_kind(&m) == Some(GroupEventKind::Removed);
        seen.push(m);
        if done {
            break;
        }
    }
    let last = seen.last().unwrap();
    assert_eq!(last.seq, removal);
    assert_eq!(event_of(last).user_ids, [v.user_id]);
    for pair in seen.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "pushes in order, none missed");
    }
    let last_acked = loading.await.unwrap();
    assert!(last_acked > removal, "the load went on past the removal");
    // The witness gets everything up to the last message...
    let mut next = 0;
    while next < last_acked {
        let m = witness.next_push().await.unwrap();
        if m.conversation_id == g {
            assert!(m.seq > next, "in order");
            next = m.seq;
        }
    }
    // ...by which time anything meant for the victim was queued on its connection ahead of
    // this Pong: none of it is about the group past the removal.
    victim.ping().await.unwrap();
    while victim.pending_events() > 0 {
        let frame = victim.next_event().await.unwrap().unwrap();
        if let Some(Body::Push(p)) = frame.body {
            let m = p.message.unwrap();
            assert!(
                m.conversation_id != g || m.seq <= removal,
                "pushed seq {} after the removal at {removal}",
                m.seq
            );
        }
    }
    // Sync stops at the removal.
    let synced = victim.sync_all(g, 0).await.unwrap();
    assert_eq!(synced.last().unwrap().seq, removal);
    let error = ask(&mut victim, send_body(g, "after", "x", &[], false)).await;
    assert_eq!(
        common::contacts::code(error),
        v1::ErrorCode::NotFound,
        "no longer a member"
    );
}

//! The durability contract under kill -9, for any store: pipelined sends, SIGKILL the moment
//! `kill_after_acks` acks have arrived (more still in flight), restart; every acked message is
//! there once, with its seq and content; resends of everything are recognised or stored once.

use std::collections::{HashMap, HashSet};

use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1;

use super::TestServer;

/// Sends in flight at once.
const WINDOW: usize = 32;

pub fn assert_gap_free(messages: &[v1::Message]) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1, "seq gap or disorder at index {i}");
    }
}

/// Runs the scenario on a server started with `env` (every send stays in the sender's dedup
/// window, so every resend is recognised).
pub async fn acked_messages_survive_kill_9(
    env: &[(&str, &str)],
    total: usize,
    kill_after_acks: usize,
) {
    let mut all_env = vec![("STORAGE__DEDUP_WINDOW_MESSAGES", "1024")];
    all_env.extend_from_slice(env);
    let mut server = TestServer::start(&all_env);
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let conv = conversation_id(sender.user_id, recipient.user_id);
    let body = |i: usize| format!("durable message {i}");

    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut next = 0;
    while acked.len() < kill_after_acks {
        while in_flight.len() < WINDOW && next < total {
            let message = text_message(recipient.user_id, &format!("c{next}"), &body(next));
            let rid = s.send(message).await.unwrap();
            in_flight.insert(rid, next);
            next += 1;
        }
        let frame = s.recv_timeout().await.unwrap().expect("server alive");
        if let Some(i) = in_flight.remove(&frame.request_id) {
            match frame.body {
                Some(Body::SendAck(ack)) => {
                    acked.insert(i, ack.seq);
                }
                other => panic!("send c{i} answered with {other:?}"),
            }
        }
    }
    server.kill9();
    drop(s);
    server.restart();

    let (mut r, _) = server.device("recipient", "phone").await;
    let stored = r.sync_all(conv, 0).await.unwrap();
    assert_gap_free(&stored);
    let by_id: HashMap<&str, &v1::Message> = stored
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "no client_msg_id stored twice");
    for (i, seq) in &acked {
        let m = by_id
            .get(format!("c{i}").as_str())
            .unwrap_or_else(|| panic!("acked message c{i} lost"));
        assert_eq!(m.seq, *seq);
        assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(*i));
    }

    // The sender resends everything it is unsure of; each message ends up stored exactly once.
    let (mut s, _) = server.device("sender", "sender-dev1").await;
    for i in 0..total {
        let ack = s
            .send_text(recipient.user_id, &format!("c{i}"), &body(i))
            .await
            .unwrap()
            .unwrap();
        if let Some(seq) = acked.get(&i) {
            assert!(ack.duplicate, "resend of acked c{i}");
            assert_eq!(ack.seq, *seq);
        }
    }
    let all = r.sync_all(conv, 0).await.unwrap();
    assert_eq!(all.len(), total);
    assert_gap_free(&all);
    let ids: HashSet<&str> = all.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids.len(), total);
}

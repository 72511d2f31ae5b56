//! Crash safety of group sends: several members send into one group with many sends in flight
//! each, and the server is killed -9 at a random moment. After every restart, every message any
//! sender holds an ack for is in the group's log exactly once, at its acked seq, with its
//! content; the log's seqs are gap-free; and resends by client_msg_id (of acked sends and of
//! those in flight at the kill) are answered as duplicates with the stored seq.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::TestServer;
use common::groups::{create_id, send_body};
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1;

const ROUNDS: u64 = 3;
const SENDERS: usize = 3;
/// Sends in flight per sender.
const WINDOW: usize = 8;
/// Bounds one round's load should the kill come late.
const SENDS_PER_ROUND_MAX: usize = 20_000;
/// Kill delay after the load starts, in ms.
const KILL_DELAY_MS: std::ops::Range<u64> = 30..200;
/// Acked sends each sender resends after a restart (well inside the dedup window).
const VERIFY_RESENDS: usize = 4;
/// Deadline for any one phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);

fn content(cmid: &str) -> String {
    format!("body of {cmid}")
}

/// What one sender knows, carried over rounds.
#[derive(Default)]
struct Log {
    /// client_msg_id -> seq, for every ack the sender holds.
    acked: HashMap<String, u64>,
    acked_order: Vec<String>,
    /// In flight when the connection died.
    unacked: Vec<String>,
    sent: HashSet<String>,
}

/// Pipelined sends into `g` until the connection dies or the round's bound; records the acks.
async fn load(mut c: Client, g: u64, sender: usize, round: u64, mut log: Log) -> Log {
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut sends = 0;
    'load: loop {
        while in_flight.len() < WINDOW && sends < SENDS_PER_ROUND_MAX {
            sends += 1;
            let cmid = format!("s{sender}-r{round}-{sends}");
            log.sent.insert(cmid.clone());
            match c
                .send(send_body(g, &cmid, &content(&cmid), &[], false))
                .await
            {
                Ok(rid) => {
                    in_flight.insert(rid, cmid);
                }
                Err(_) => {
                    log.unacked.push(cmid);
                    break 'load;
                }
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let frame = match tokio::time::timeout(PHASE_TIMEOUT, c.recv()).await {
            Ok(Ok(Some(frame))) => frame,
            _ => break,
        };
        // Pushes of the other senders' messages carry request id 0.
        let Some(cmid) = in_flight.remove(&frame.request_id) else {
            continue;
        };
        match frame.body {
            Some(Body::SendAck(ack)) => {
                assert_eq!(ack.conversation_id, g);
                assert!(!ack.duplicate, "{cmid} is new: {ack:?}");
                log.acked.insert(cmid.clone(), ack.seq);
                log.acked_order.push(cmid);
            }
            other => panic!("sender {sender} round {round}: {cmid} answered with {other:?}"),
        }
    }
    log.unacked.extend(in_flight.into_values());
    log
}

/// The group's log against what the senders were told; returns cmid -> stored seq.
fn check_log(stored: &[v1::Message], logs: &[Log], round: u64) -> HashMap<String, u64> {
    let mut by_cmid = HashMap::new();
    for (k, m) in stored.iter().enumerate() {
        assert_eq!(
            m.seq,
            k as u64 + 1,
            "round {round}: seq gap or disorder at {k}"
        );
        if m.content_type != v1::ContentType::Text as i32 {
            continue;
        }
        assert!(
            by_cmid.insert(m.client_msg_id.clone(), m.seq).is_none(),
            "round {round}: {} stored twice",
            m.client_msg_id
        );
        assert_eq!(m.content.as_ref(), content(&m.client_msg_id).as_bytes());
        assert!(
            logs.iter().any(|l| l.sent.contains(&m.client_msg_id)),
            "round {round}: {} stored but never sent",
            m.client_msg_id
        );
    }
    for log in logs {
        for (cmid, seq) in &log.acked {
            assert_eq!(
                by_cmid.get(cmid),
                Some(seq),
                "round {round}: acked {cmid} (seq {seq}) is not stored at its seq"
            );
        }
    }
    by_cmid
}

/// Resends what was in flight at the kill and some acked sends: each is answered with the
/// stored seq as a duplicate, or (never stored) stored now.
async fn resend(c: &mut Client, g: u64, log: &mut Log, stored: &HashMap<String, u64>) {
    let acked: Vec<String> = log
        .acked_order
        .iter()
        .rev()
        .take(VERIFY_RESENDS)
        .cloned()
        .collect();
    for cmid in acked
        .iter()
        .rev()
        .chain(std::mem::take(&mut log.unacked).iter())
    {
        let ack = match c
            .request(send_body(g, cmid, &content(cmid), &[], false))
            .await
        {
            Ok(Body::SendAck(ack)) => ack,
            other => panic!("resend of {cmid}: {other:?}"),
        };
        match stored.get(cmid) {
            Some(seq) => assert!(
                ack.duplicate && ack.seq == *seq,
                "resend of stored {cmid} (seq {seq}) acked as {ack:?}"
            ),
            None => {
                assert!(!ack.duplicate, "{cmid} was never stored: {ack:?}");
                log.acked_order.push(cmid.clone());
            }
        }
        log.acked.insert(cmid.clone(), ack.seq);
    }
}

#[tokio::test]
async fn kill_9_during_group_sends_loses_no_acked_message_and_duplicates_none() {
    let mut server = TestServer::start(&[]);
    let names: Vec<String> = (0..SENDERS).map(|i| format!("gcrash-s{i}")).collect();
    let mut ids = Vec::new();
    for name in &names {
        ids.push(server.user(name).await.1.user_id);
    }
    let (mut owner, _) = server.user("gcrash-owner").await;
    let g = create_id(&mut owner, &ids, v1::JoinPolicy::InviteOnly).await;
    drop(owner);
    let mut logs: Vec<Log> = (0..SENDERS).map(|_| Log::default()).collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut resent, mut in_flight_at_kills) = (0, 0);
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, log) in logs.iter_mut().enumerate() {
            let (c, _) = server.device(&names[i], "load").await;
            let log = std::mem::take(log);
            tasks.spawn(async move { (i, load(c, g, i, round, log).await) });
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = KILL_DELAY_MS.start + seed % (KILL_DELAY_MS.end - KILL_DELAY_MS.start);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        let drained = tokio::time::timeout(PHASE_TIMEOUT, async {
            while let Some(joined) = tasks.join_next().await {
                let (i, log) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                logs[i] = log;
            }
        })
        .await;
        assert!(drained.is_ok(), "round {round}: the load did not end");
        server.restart();
        let (mut reader, _) = server.device(&names[0], "reader").await;
        let stored = check_log(&reader.sync_all(g, 0).await.unwrap(), &logs, round);
        for (i, log) in logs.iter_mut().enumerate() {
            in_flight_at_kills += log.unacked.len();
            resent += log.unacked.len() + VERIFY_RESENDS.min(log.acked_order.len());
            let (mut c, _) = server.device(&names[i], "load").await;
            resend(&mut c, g, log, &stored).await;
        }
        // The resends changed nothing that was stored, and stored what was not.
        check_log(&reader.sync_all(g, 0).await.unwrap(), &logs, round);
        let acked: Vec<usize> = logs.iter().map(|l| l.acked.len()).collect();
        eprintln!("round {round}: killed after {delay} ms; acked per sender {acked:?}");
    }
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    eprintln!("{acked} acked, {resent} resent, {in_flight_at_kills} in flight at the kills");
    assert!(
        acked > 0 && resent > 0 && in_flight_at_kills > 0,
        "the load exercised too little"
    );
}

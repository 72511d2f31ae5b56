//! Crash safety under load: ten rounds of pipelined sends (with resends of acked and unacked
//! client_msg_ids) and cursor moves over TCP and WebSocket, each ended by a kill -9 at a random
//! moment; after every restart, everything any client holds an ack for is there exactly once,
//! with the same seq and content, seqs are gap-free, resends are deduplicated, and cursors never
//! moved back.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::TestServer;
use common::transport::{AnyClient, Kind, deadline, describe};
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1;

const ROUNDS: u64 = 10;
/// Sends in flight per sender.
const WINDOW: usize = 16;
/// Every RESEND_EVERY-th send reuses an earlier client_msg_id (alternately acked and unacked).
const RESEND_EVERY: usize = 4;
/// Bounds one round's load should the kill come late.
const SENDS_PER_ROUND_MAX: usize = 4000;
/// Kill delay after the load starts, in ms.
const KILL_DELAY_MS: std::ops::Range<u64> = 50..400;
/// `storage.dedup_window_messages` of the server under test: acked ids are resent only while
/// they are among the sender's newest this many (older resends are new messages by contract).
const DEDUP_WINDOW: usize = 64;
/// Acked ids each sender resends one by one after a restart.
const VERIFY_RESENDS: usize = 8;
/// Deadline for any one phase (a round's load draining, a verification).
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);

/// A small xorshift64, seeded per round: the test needs no `rand`.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn content(cmid: &str) -> String {
    format!("body of {cmid}")
}

/// What a sender knows, carried over rounds.
#[derive(Default)]
struct SenderLog {
    /// client_msg_id -> seq, for every ack a client holds.
    acked: HashMap<String, u64>,
    acked_order: Vec<String>,
    /// Seen stored (by a Sync after a restart) although never acked.
    stored: HashMap<String, u64>,
    /// Sent but never acked, to resend.
    unacked: Vec<String>,
    /// Every client_msg_id ever sent.
    sent: HashSet<String>,
    next: usize,
    resent_acked: usize,
    resent_unacked: usize,
}

impl SenderLog {
    fn known_seq(&self, cmid: &str) -> Option<u64> {
        self.acked
            .get(cmid)
            .or_else(|| self.stored.get(cmid))
            .copied()
    }

    /// Whether the server must still recognise a resend of `cmid` when it arrives: unknown to
    /// the client, or stored among the sender's newest `DEDUP_WINDOW` even after the `WINDOW`
    /// sends in flight ahead of it (this sender is the only one writing to its conversation, so
    /// its sends are the conversation's seqs).
    fn in_dedup_window(&self, cmid: &str) -> bool {
        let Some(seq) = self.known_seq(cmid) else {
            return true;
        };
        let newest = self.acked.values().chain(self.stored.values()).max();
        seq + DEDUP_WINDOW as u64 > newest.copied().unwrap_or(0) + WINDOW as u64
    }
}

/// The highest cursors any CursorOk reported to the receiver.
#[derive(Default, Clone, Copy, Debug)]
struct Cursors {
    read: u64,
    delivered: u64,
}

/// One direct conversation.
struct Pair {
    sender: String,
    receiver: String,
    sender_kind: Kind,
    receiver_kind: Kind,
    to: u64,
    conv: u64,
    log: SenderLog,
    cursors: Cursors,
}

/// Pipelined sends until the connection dies (or the per-round bound); returns the updated log.
async fn load_sender(
    mut c: AnyClient,
    pair: usize,
    round: u64,
    to: u64,
    conv: u64,
    mut log: SenderLog,
    mut rng: XorShift,
) -> SenderLog {
    struct InFlight {
        cmid: String,
        /// The seq the message already has (acked or seen stored) when this send left.
        known: Option<u64>,
    }
    let kind = c.kind;
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut sends = 0;
    'load: loop {
        while in_flight.len() < WINDOW && sends < SENDS_PER_ROUND_MAX {
            sends += 1;
            let mut cmid = None;
            if sends.is_multiple_of(RESEND_EVERY) {
                if (sends / RESEND_EVERY).is_multiple_of(2) {
                    if !log.acked_order.is_empty() {
                        let n = log.acked_order.len();
                        let window = n.min(DEDUP_WINDOW);
                        let i = n - window + rng.below(window);
                        let pick = &log.acked_order[i];
                        if log.in_dedup_window(pick) {
                            cmid = Some(pick.clone());
                            log.resent_acked += 1;
                        }
                    }
                } else if !log.unacked.is_empty() {
                    let i = rng.below(log.unacked.len());
                    let pick = log.unacked.swap_remove(i);
                    if log.in_dedup_window(&pick) {
                        cmid = Some(pick);
                        log.resent_unacked += 1;
                    }
                } else if let Some(f) = in_flight
                    .values()
                    .find(|f| !log.acked.contains_key(&f.cmid))
                {
                    cmid = Some(f.cmid.clone());
                    log.resent_unacked += 1;
                }
            }
            let cmid = cmid.unwrap_or_else(|| {
                log.next += 1;
                format!("p{pair}-r{round}-{}", log.next)
            });
            log.sent.insert(cmid.clone());
            let known = log.known_seq(&cmid);
            let body = text_message(to, &cmid, &content(&cmid));
            match c.try_send_body(body).await {
                Some(rid) => {
                    in_flight.insert(rid, InFlight { cmid, known });
                }
                None => {
                    in_flight.insert(0, InFlight { cmid, known });
                    break 'load;
                }
            }
        }
        let Some(frame) = c.recv(deadline(PHASE_TIMEOUT)).await else {
            break;
        };
        let Some(f) = in_flight.remove(&frame.request_id) else {
            continue;
        };
        let ack = match frame.body {
            Some(Body::SendAck(ack)) => ack,
            other => panic!(
                "{kind}: pair {pair} round {round}: Send {} answered with {}",
                f.cmid,
                describe(other.as_ref())
            ),
        };
        assert_eq!(ack.conversation_id, conv, "{kind}: ack for {}", f.cmid);
        if let Some(seq) = f.known {
            assert!(
                ack.duplicate && ack.seq == seq,
                "{kind}: pair {pair} round {round}: resend of {} (seq {seq}) acked as {ack:?}",
                f.cmid
            );
        }
        match log.known_seq(&f.cmid) {
            Some(seq) => assert_eq!(
                ack.seq, seq,
                "{kind}: pair {pair} round {round}: two acks for {} disagree ({ack:?})",
                f.cmid
            ),
            None => {
                log.acked_order.push(f.cmid.clone());
            }
        }
        log.acked.insert(f.cmid.clone(), ack.seq);
        log.unacked.retain(|u| *u != f.cmid);
    }
    for f in in_flight.into_values() {
        if !log.acked.contains_key(&f.cmid) && !log.unacked.contains(&f.cmid) {
            log.unacked.push(f.cmid);
        }
    }
    log
}

/// Acks pushes (DeliveryAck each, Read every third) until the connection dies; returns the
/// highest cursors reported, checking none is below what was reported before.
async fn load_receiver(mut c: AnyClient, pair: usize, conv: u64, before: Cursors) -> Cursors {
    let kind = c.kind;
    let mut now = before;
    let mut pushes = 0u64;
    while let Some(frame) = c.recv(deadline(PHASE_TIMEOUT)).await {
        match frame.body {
            Some(Body::Push(p)) => {
                let m = p.message.expect("a pushed message");
                if m.conversation_id != conv {
                    continue;
                }
                pushes += 1;
                let ack = Body::DeliveryAck(v1::DeliveryAck {
                    conversation_id: conv,
                    seq: m.seq,
                });
                if c.try_send_body(ack).await.is_none() {
                    break;
                }
                if pushes.is_multiple_of(3) {
                    let read = Body::Read(v1::Read {
                        conversation_id: conv,
                        seq: m.seq,
                    });
                    if c.try_send_body(read).await.is_none() {
                        break;
                    }
                }
            }
            Some(Body::CursorOk(ok)) => {
                assert!(
                    ok.read_seq >= before.read && ok.delivered_seq >= before.delivered,
                    "{kind}: pair {pair}: cursor moved back: {ok:?} after {before:?}"
                );
                now.read = now.read.max(ok.read_seq);
                now.delivered = now.delivered.max(ok.delivered_seq);
            }
            Some(Body::Error(e)) => panic!("{kind}: pair {pair}: receiver got {e:?}"),
            _ => {}
        }
    }
    now
}

/// After a restart: the stored conversation against what the clients were told.
async fn verify(
    p: &mut Pair,
    i: usize,
    round: u64,
    s: &mut AnyClient,
    r: &mut AnyClient,
    rng: &mut XorShift,
) {
    let stored = r.sync_all(p.conv).await;
    for (k, m) in stored.iter().enumerate() {
        assert_eq!(
            m.seq,
            k as u64 + 1,
            "pair {i} round {round}: seq gap or disorder at index {k}"
        );
    }
    let mut by_id: HashMap<&str, &v1::Message> = HashMap::new();
    for m in &stored {
        assert!(
            by_id.insert(m.client_msg_id.as_str(), m).is_none(),
            "pair {i} round {round}: client_msg_id {} stored twice",
            m.client_msg_id
        );
        assert!(
            p.log.sent.contains(&m.client_msg_id),
            "pair {i} round {round}: stored {} was never sent",
            m.client_msg_id
        );
        assert_eq!(
            m.content,
            content(&m.client_msg_id).as_bytes(),
            "pair {i} round {round}: content of {}",
            m.client_msg_id
        );
    }
    for (what, map) in [("acked", &p.log.acked), ("seen stored", &p.log.stored)] {
        for (cmid, seq) in map {
            let m = by_id.get(cmid.as_str()).unwrap_or_else(|| {
                panic!(
                    "pair {i} round {round}: {what} {cmid} (seq {seq}) lost; {} stored",
                    stored.len()
                )
            });
            assert_eq!(m.seq, *seq, "pair {i} round {round}: {what} {cmid} moved");
        }
    }
    for m in &stored {
        if !p.log.acked.contains_key(&m.client_msg_id) {
            p.log.stored.insert(m.client_msg_id.clone(), m.seq);
        }
    }
    p.log.unacked.retain(|u| !by_id.contains_key(u.as_str()));
    // The stored ones resend as duplicates below or in the next round: keep them resendable.
    let carried: Vec<String> = p.log.stored.keys().cloned().collect();
    for cmid in carried {
        if !p.log.unacked.contains(&cmid) && rng.below(4) == 0 {
            p.log.unacked.push(cmid);
        }
    }

    // Cursors never move back: the conversation list, then a no-op Read's CursorOk.
    let list = match r
        .request(Body::Conversations(v1::Conversations::default()))
        .await
    {
        Body::ConversationList(l) => l.conversations,
        other => panic!("Conversations answered with {}", describe(Some(&other))),
    };
    let c = list
        .iter()
        .find(|c| c.conversation_id == p.conv)
        .unwrap_or_else(|| panic!("pair {i} round {round}: conversation missing from the list"));
    assert!(
        c.read_seq >= p.cursors.read && c.delivered_seq >= p.cursors.delivered,
        "pair {i} round {round}: cursors moved back over the crash: list {c:?}, acked before {:?}",
        p.cursors
    );
    let read = Body::Read(v1::Read {
        conversation_id: p.conv,
        seq: 0,
    });
    match r.request(read).await {
        Body::CursorOk(ok) => assert!(
            ok.read_seq >= p.cursors.read && ok.delivered_seq >= p.cursors.delivered,
            "pair {i} round {round}: cursors moved back over the crash: {ok:?}, acked before {:?}",
            p.cursors
        ),
        other => panic!("Read answered with {}", describe(Some(&other))),
    }

    // Resends of acked ids: the newest ones (likeliest lost) and a few at random.
    let n = p.log.acked_order.len();
    let mut picks: Vec<usize> = (n.saturating_sub(VERIFY_RESENDS / 2)..n).collect();
    let window = n.min(DEDUP_WINDOW);
    while n > 0 && picks.len() < VERIFY_RESENDS.min(n) {
        picks.push(n - window + rng.below(window));
    }
    for k in picks {
        let cmid = p.log.acked_order[k].clone();
        if !p.log.in_dedup_window(&cmid) {
            continue;
        }
        let seq = p.log.acked[&cmid];
        match s.request(text_message(p.to, &cmid, &content(&cmid))).await {
            Body::SendAck(ack) => assert!(
                ack.duplicate && ack.seq == seq && ack.conversation_id == p.conv,
                "{}: pair {i} round {round}: resend of acked {cmid} (seq {seq}) after the restart: {ack:?}",
                s.kind
            ),
            other => panic!("resend of {cmid}: {}", describe(Some(&other))),
        }
    }
}

#[tokio::test]
async fn kill_9_under_pipelined_load_keeps_acks_seqs_dedup_and_cursors() {
    kill_9_rounds(&[]).await;
}

/// The same with every commit group waiting for company (`storage.commit_delay_us`): fuller
/// groups, still acked only once durable.
#[tokio::test]
async fn kill_9_with_a_commit_delay_keeps_acks_seqs_dedup_and_cursors() {
    kill_9_rounds(&[
        ("STORAGE__COMMIT_DELAY_US", "2000"),
        ("STORAGE__COMMIT_DELAY_MIN_OPS", "1"),
    ])
    .await;
}

async fn kill_9_rounds(env: &[(&str, &str)]) {
    let started = std::time::Instant::now();
    let window = DEDUP_WINDOW.to_string();
    let mut vars = vec![("STORAGE__DEDUP_WINDOW_MESSAGES", window.as_str())];
    vars.extend_from_slice(env);
    let mut server = TestServer::start(&vars);
    let mixes = [
        (Kind::Tcp, Kind::Ws),
        (Kind::Ws, Kind::Tcp),
        (Kind::Tcp, Kind::Tcp),
    ];
    let mut pairs = Vec::new();
    let mut clients = Vec::new();
    for (i, (sk, rk)) in mixes.into_iter().enumerate() {
        let (sender, receiver) = (format!("crash-s{i}"), format!("crash-r{i}"));
        let (s, s_ok) = AnyClient::user(&server, sk, &sender).await;
        let (r, r_ok) = AnyClient::user(&server, rk, &receiver).await;
        pairs.push(Pair {
            sender,
            receiver,
            sender_kind: sk,
            receiver_kind: rk,
            to: r_ok.user_id,
            conv: conversation_id(s_ok.user_id, r_ok.user_id),
            log: SenderLog::default(),
            cursors: Cursors::default(),
        });
        clients.push((s, r));
    }

    for round in 0..ROUNDS {
        let mut rng = XorShift::new(round);
        let mut senders = tokio::task::JoinSet::new();
        let mut receivers = tokio::task::JoinSet::new();
        for (i, (p, (s, r))) in pairs.iter_mut().zip(clients.drain(..)).enumerate() {
            let log = std::mem::take(&mut p.log);
            let seed = XorShift::new(rng.next() ^ i as u64);
            let (to, conv, cursors) = (p.to, p.conv, p.cursors);
            senders.spawn(async move { (i, load_sender(s, i, round, to, conv, log, seed).await) });
            receivers.spawn(async move { (i, load_receiver(r, i, conv, cursors).await) });
        }
        let span = KILL_DELAY_MS.end - KILL_DELAY_MS.start;
        let delay = KILL_DELAY_MS.start + rng.next() % span;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();

        let drained = tokio::time::timeout(PHASE_TIMEOUT, async {
            while let Some(joined) = senders.join_next().await {
                let (i, log) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                pairs[i].log = log;
            }
            while let Some(joined) = receivers.join_next().await {
                let (i, cursors) =
                    joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                pairs[i].cursors = cursors;
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "round {round}: the load did not end after the kill"
        );

        server.restart();
        for (i, p) in pairs.iter_mut().enumerate() {
            let checked = tokio::time::timeout(PHASE_TIMEOUT, async {
                let mut s = AnyClient::login(&server, p.sender_kind, &p.sender).await;
                let mut r = AnyClient::login(&server, p.receiver_kind, &p.receiver).await;
                verify(p, i, round, &mut s, &mut r, &mut rng).await;
                (s, r)
            })
            .await;
            match checked {
                Ok(c) => clients.push(c),
                Err(_) => {
                    panic!("pair {i} round {round}: verification took over {PHASE_TIMEOUT:?}")
                }
            }
        }
        let acked: Vec<usize> = pairs.iter().map(|p| p.log.acked.len()).collect();
        let cursors: Vec<Cursors> = pairs.iter().map(|p| p.cursors).collect();
        eprintln!(
            "round {round}: killed after {delay} ms; acked per conversation {acked:?}; \
             cursors acked {cursors:?}; {:?} elapsed",
            started.elapsed()
        );
    }

    let resent_acked: usize = pairs.iter().map(|p| p.log.resent_acked).sum();
    let resent_unacked: usize = pairs.iter().map(|p| p.log.resent_unacked).sum();
    let acked: usize = pairs.iter().map(|p| p.log.acked.len()).sum();
    eprintln!(
        "{acked} acked messages, {resent_acked} resends of acked ids, {resent_unacked} of unacked, in {:?}",
        started.elapsed()
    );
    assert!(
        acked > 0 && resent_acked > 0 && resent_unacked > 0,
        "the load exercised too little"
    );
}

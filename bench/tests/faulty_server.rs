//! Scenarios against a server that misbehaves on purpose (a small fake speaking the protocol
//! over TCP, for faults the real server cannot be made to show): what it does wrong must show
//! in the report and fail the run, never pass as clean.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringchat_bench::client::Client;
use ringchat_bench::scenario::Observe;
use ringchat_bench::scenario::pairs::{self, PairsConfig, PairsReport};
use ringchat_bench::scenario::presence::{self, FanoutConfig, FanoutReport};
use ringchat_bench::scenario::room::{self, RoomConfig, RoomReport};
use ringchat_bench::transport::Transport;
use ringchat_proto::{Body, Frame, v1};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const WINDOW: usize = 4;

/// How the fake server goes wrong once a connection has had `after` sends answered.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answers nothing more (no ack, no error, no push): the sends vanish.
    Silent,
    /// Writes a frame that does not decode to the sender, then goes on as usual.
    Garbage,
    /// Direct messages go to their sender too (its copy before the answer).
    PairEcho,
    /// Room messages go to every member, their sender included (its copy before the answer).
    RoomEcho,
    /// Each room send after the first is answered, and so is the one before it again.
    RoomAnswerTwice,
    /// Each presence change is pushed to each friend twice.
    PresenceTwice,
    /// Presence changes are pushed with the wrong state.
    PresenceWrongState,
}

#[derive(Default)]
struct Users {
    ids: HashMap<String, u64>,
    /// Each logged-in user's connection, for pushes.
    online: HashMap<u64, mpsc::UnboundedSender<Frame>>,
    seq: u64,
    /// Everyone who joined the one room.
    room: Vec<u64>,
}

fn push(body: Body) -> Frame {
    Frame {
        request_id: 0,
        body: Some(body),
    }
}

/// Starts the fake server on its own thread; returns its address.
fn start(fault: Fault, after: u64) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let users = Arc::new(Mutex::new(Users::default()));
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(
                    Client::from_stream(stream),
                    Arc::clone(&users),
                    fault,
                    after,
                ));
            }
        });
    });
    rx.recv().unwrap()
}

async fn serve(mut c: Client, users: Arc<Mutex<Users>>, fault: Fault, after: u64) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel();
    let mut me = 0;
    let mut answered = 0u64;
    loop {
        let frame = tokio::select! {
            frame = c.recv() => match frame {
                Ok(Some(frame)) => frame,
                _ => return,
            },
            Some(push) = pushes.recv() => {
                if c.send_frame(&push).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let reply = |body| Frame {
            request_id: frame.request_id,
            body: Some(body),
        };
        let answer = match frame.body {
            Some(Body::Hello(_)) => Some(Body::HelloOk(v1::HelloOk::default())),
            Some(Body::Register(r)) => {
                let mut u = users.lock().unwrap();
                let next = u.ids.len() as u64 + 1;
                let id = *u.ids.entry(r.username).or_insert(next);
                Some(Body::RegisterOk(v1::RegisterOk { user_id: id }))
            }
            Some(Body::Login(l)) => {
                let Some(v1::login::Account::Username(name)) = l.account else {
                    return;
                };
                let mut u = users.lock().unwrap();
                me = u.ids[&name];
                u.online.insert(me, push_tx.clone());
                Some(Body::LoginOk(v1::LoginOk {
                    user_id: me,
                    token: "t".into(),
                    ..Default::default()
                }))
            }
            Some(Body::Send(s)) if answered < after => {
                answered += 1;
                let (seq, peer) = {
                    let mut u = users.lock().unwrap();
                    u.seq += 1;
                    (u.seq, u.online.get(&s.to_user_id).cloned())
                };
                let message = v1::Message {
                    conversation_id: 1,
                    seq,
                    from_user_id: me,
                    content_type: s.content_type,
                    content: s.content,
                    ..Default::default()
                };
                let pushed = push(Body::Push(v1::Push {
                    message: Some(message),
                }));
                if let Some(peer) = peer {
                    let _ = peer.send(pushed.clone());
                }
                if matches!(fault, Fault::PairEcho) && c.send_frame(&pushed).await.is_err() {
                    return;
                }
                if answered == after && matches!(fault, Fault::Garbage) {
                    // A 3-byte frame that is no protobuf: the reader cannot decode it.
                    let _ = c.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
                }
                Some(Body::SendAck(v1::SendAck {
                    conversation_id: 1,
                    seq,
                    ..Default::default()
                }))
            }
            Some(Body::Ping(p)) => Some(Body::Pong(v1::Pong {
                client_time_ms: p.client_time_ms,
                server_time_ms: 0,
            })),
            Some(Body::RoomJoin(j)) => {
                let mut u = users.lock().unwrap();
                u.room.push(me);
                Some(Body::RoomJoined(v1::RoomJoined {
                    room: j.room,
                    member_count: u.room.len() as u32,
                }))
            }
            Some(Body::RoomInfo(i)) => Some(Body::RoomJoined(v1::RoomJoined {
                room: i.room,
                member_count: users.lock().unwrap().room.len() as u32,
            })),
            Some(Body::RoomSend(m)) => {
                if matches!(fault, Fault::RoomAnswerTwice) && frame.request_id > 1 {
                    let again = Frame {
                        request_id: frame.request_id - 1,
                        body: Some(Body::RoomSent(v1::RoomSent {
                            room: m.room.clone(),
                            room_seq: 0,
                        })),
                    };
                    if c.send_frame(&again).await.is_err() {
                        return;
                    }
                }
                let (message, seq) = {
                    let mut u = users.lock().unwrap();
                    u.seq += 1;
                    let message = v1::RoomMessage {
                        room: m.room.clone(),
                        room_seq: u.seq,
                        from_user_id: me,
                        content_type: m.content_type,
                        content: m.content,
                        ..Default::default()
                    };
                    for member in &u.room {
                        if *member != me {
                            let _ = u.online[member].send(push(Body::RoomMessage(message.clone())));
                        }
                    }
                    (message, u.seq)
                };
                if matches!(fault, Fault::RoomEcho)
                    && c.send_frame(&push(Body::RoomMessage(message)))
                        .await
                        .is_err()
                {
                    return;
                }
                Some(Body::RoomSent(v1::RoomSent {
                    room: m.room,
                    room_seq: seq,
                }))
            }
            Some(Body::FriendRequest(r)) => Some(Body::FriendOk(v1::FriendOk {
                user_id: r.user_id,
                state: v1::FriendState::RequestSent as i32,
            })),
            Some(Body::FriendRespond(r)) => Some(Body::FriendOk(v1::FriendOk {
                user_id: r.user_id,
                state: v1::FriendState::Friends as i32,
            })),
            Some(Body::SetPresence(p)) => {
                let state = match fault {
                    Fault::PresenceWrongState => v1::PresenceState::Offline as i32,
                    _ => p.state,
                };
                let copies = if matches!(fault, Fault::PresenceTwice) {
                    2
                } else {
                    1
                };
                let u = users.lock().unwrap();
                for (id, to) in &u.online {
                    for _ in 0..copies {
                        if *id != me {
                            let _ = to.send(push(Body::Presence(v1::Presence {
                                user_id: me,
                                state,
                                last_seen_ms: 0,
                            })));
                        }
                    }
                }
                Some(Body::SetPresenceOk(v1::SetPresenceOk { shown: p.state }))
            }
            _ => None,
        };
        if let Some(body) = answer
            && c.send_frame(&reply(body)).await.is_err()
        {
            return;
        }
    }
}

fn run_pairs(addr: SocketAddr) -> PairsReport {
    let cfg = PairsConfig {
        addr,
        transport: Transport::Tcp,
        pairs: 1,
        size: 64,
        window: WINDOW,
        duration: Duration::from_millis(300),
        rate: None,
        threads: 1,
        user_prefix: "f_".into(),
        password: "bench-password".into(),
        drain_timeout: Duration::from_millis(500),
        delivery_ack: false,
    };
    pairs::run(&cfg, &Observe::default()).unwrap()
}

#[test]
fn sends_the_server_never_answers_fail_the_run() {
    let report = run_pairs(start(Fault::Silent, 20));
    // Each side: 20 answered, then a full window that nothing ever answers.
    assert_eq!(report.acked, 40, "{report:?}");
    assert_eq!(report.faults.unanswered, 2 * WINDOW as u64, "{report:?}");
    assert_eq!(report.sent, report.acked + report.faults.unanswered);
    // Everything acked arrived: only the unanswered count shows the fault.
    assert_eq!(
        (report.faults.lost, report.faults.errors),
        (0, 0),
        "{report:?}"
    );
    assert!(!report.clean(), "{report:?}");
}

#[test]
fn a_reader_that_fails_is_counted_as_an_error() {
    let report = run_pairs(start(Fault::Garbage, 20));
    let failed: u64 = report
        .error_kinds
        .iter()
        .filter(|(kind, _)| kind.starts_with("reader failed"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 2, "{report:?}");
    assert!(report.faults.errors >= 2 && !report.clean(), "{report:?}");
}

#[test]
fn a_direct_message_echoed_to_its_sender_fails_the_run() {
    let report = run_pairs(start(Fault::PairEcho, u64::MAX));
    assert!(report.acked > 0, "{report:?}");
    // Each message reached its peer once, and came back to its sender: one error each, not
    // taken for the peer's message with the same index (which would then be a duplicate).
    assert_eq!(report.faults.errors, report.acked, "{report:?}");
    assert_eq!(
        (report.faults.lost, report.faults.duplicates),
        (0, 0),
        "{report:?}"
    );
    assert!(!report.clean(), "{report:?}");
}

fn run_room(addr: SocketAddr) -> RoomReport {
    let cfg = RoomConfig {
        addr,
        members: 3,
        senders: 1,
        size: 64,
        rate: 20.0,
        duration: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(2),
        user_prefix: "r_".into(),
        password: "bench-password".into(),
    };
    room::run(&cfg, &Observe::default()).unwrap()
}

#[test]
fn a_room_message_echoed_to_its_sender_fails_the_run() {
    let report = run_room(start(Fault::RoomEcho, 0));
    assert_eq!(report.sent, 10, "{report:?}");
    // Each message reached the two others, and came back to its sender: one error each.
    assert_eq!(report.deliveries, 2 * report.acked, "{report:?}");
    assert_eq!(report.faults.errors, report.sent, "{report:?}");
    assert!(!report.clean(), "{report:?}");
}

#[test]
fn a_second_answer_to_a_room_send_is_an_error_not_an_ack() {
    let report = run_room(start(Fault::RoomAnswerTwice, 0));
    assert_eq!(report.sent, 10, "{report:?}");
    assert_eq!((report.acked, report.refused), (10, 0), "{report:?}");
    assert_eq!(report.faults.errors, 9, "{report:?}");
    assert_eq!(report.deliveries, 20, "{report:?}");
    assert!(!report.clean(), "{report:?}");
}

fn run_fanout(addr: SocketAddr, changes: usize) -> FanoutReport {
    let cfg = FanoutConfig {
        addr,
        friends: 3,
        changes,
        user_prefix: "p_".into(),
        password: "bench-password".into(),
    };
    presence::run_fanout(&cfg, &Observe::default()).unwrap()
}

#[test]
fn presence_pushed_twice_is_counted_per_friend_and_change() {
    let report = run_fanout(start(Fault::PresenceTwice, 0), 4);
    // Each friend got each change once, then again (the last change's second copies may come
    // after the run: each friend's first three surely came before its next change).
    assert_eq!(report.delivered, 12, "{report:?}");
    assert!((9..=12).contains(&report.duplicates), "{report:?}");
    assert_eq!((report.lost, report.wrong_state), (0, 0), "{report:?}");
    assert!(!report.clean(), "{report:?}");
}

#[test]
fn presence_with_the_wrong_state_is_not_a_delivery() {
    // One change: nobody is told it, so it waits out the whole FANOUT_TIMEOUT.
    let report = run_fanout(start(Fault::PresenceWrongState, 0), 1);
    assert_eq!(report.delivered, 0, "{report:?}");
    assert_eq!(report.wrong_state, 3, "{report:?}");
    assert_eq!(report.lost, 3, "{report:?}");
    assert!(!report.clean(), "{report:?}");
}

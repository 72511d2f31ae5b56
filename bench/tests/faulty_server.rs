//! `pairs` against a server that misbehaves on purpose (a small fake speaking the protocol over
//! TCP): what it does wrong must show in the report and fail the run, never pass as clean.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringchat_bench::client::Client;
use ringchat_bench::scenario::Observe;
use ringchat_bench::scenario::pairs::{self, PairsConfig, PairsReport};
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
}

#[derive(Default)]
struct Users {
    ids: HashMap<String, u64>,
    /// Each logged-in user's connection, for pushes.
    online: HashMap<u64, mpsc::UnboundedSender<Frame>>,
    seq: u64,
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
                if let Some(peer) = peer {
                    let _ = peer.send(Frame {
                        request_id: 0,
                        body: Some(Body::Push(v1::Push {
                            message: Some(message),
                        })),
                    });
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

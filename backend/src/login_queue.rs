//! Logins have their own queue and a fixed number of slots, apart from the request loop that
//! serves logged-in users' reads.
//!
//! The request loop only moves a login here (no waiting, no store call), so a sync, history or
//! conversation list of an established session is never behind thousands of logins in that
//! loop. Token and password logins have a lane each (see [`LoginQueue`]). In each, one task
//! takes logins in arrival order and runs at most `backend.logins_in_flight_max` at once: a login's store reads run on the blocking pool
//! (`backend.blocking_threads_max` threads) that logged-in users' reads use too, so a storm of
//! unbounded login tasks would queue those reads behind every login's lookups. The queue holds
//! at most `backend.queue_requests_max` logins (in practice far fewer: each shard sends at most
//! `gateway.logins_in_flight_per_shard_max`); past it a login is answered `UNAVAILABLE` with a
//! jittered `retry_after_ms` at once.

use std::sync::{Arc, Mutex};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::api::{ConnRef, LoginReply};
use crate::service::Backend;

/// A login taken off the request loop, waiting for a slot.
pub(crate) struct QueuedLogin {
    pub conn: ConnRef,
    pub peer: std::net::IpAddr,
    pub body: v1::Login,
    pub reply: oneshot::Sender<LoginReply>,
}

pub(crate) struct LoginQueue {
    /// Token logins (one hash and one read each) and password logins (an argon2 hash each,
    /// `accounts.hash_concurrency` at a time): two lanes, each with its own queue and slots,
    /// so a storm of password logins waiting for the hasher never holds the slots token
    /// logins need. Reconnecting clients log in with tokens: they go at the store's pace.
    lanes: [Lane; 2],
}

struct Lane {
    tx: mpsc::Sender<QueuedLogin>,
    /// Taken by [`LoginQueue::start`].
    rx: Mutex<Option<mpsc::Receiver<QueuedLogin>>>,
    slots: Arc<Semaphore>,
}

impl Lane {
    fn new(waiting_max: usize, in_flight_max: usize) -> Self {
        let (tx, rx) = mpsc::channel(waiting_max.max(1));
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            slots: Arc::new(Semaphore::new(in_flight_max.max(1))),
        }
    }
}

const TOKEN_LANE: usize = 0;
const PASSWORD_LANE: usize = 1;

impl LoginQueue {
    /// `waiting_max` logins queued, `in_flight_max` running, at most, per lane.
    pub(crate) fn new(waiting_max: usize, in_flight_max: usize) -> Self {
        Self {
            lanes: [
                Lane::new(waiting_max, in_flight_max),
                Lane::new(waiting_max, in_flight_max),
            ],
        }
    }

    /// Queues a login without waiting. With its lane's queue full, it is answered
    /// `UNAVAILABLE` with a jittered `retry_after_ms` at once.
    pub(crate) fn push(&self, login: QueuedLogin) {
        let lane = match login.body.credential {
            Some(v1::login::Credential::Token(_)) => TOKEN_LANE,
            _ => PASSWORD_LANE,
        };
        match self.lanes[lane].tx.try_send(login) {
            Ok(()) => metrics::gauge!("ringchat_backend_logins_waiting").increment(1.0),
            Err(
                mpsc::error::TrySendError::Full(login) | mpsc::error::TrySendError::Closed(login),
            ) => {
                metrics::counter!("ringchat_backend_logins_refused_total").increment(1);
                let refusal = v1::Error {
                    code: ErrorCode::Unavailable as i32,
                    message: "too many logins waiting; retry after retry_after_ms".into(),
                    retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
                };
                // The connection may have gone meanwhile; nothing to do then.
                let _ = login.reply.send(LoginReply {
                    body: Body::Error(refusal),
                    session: None,
                });
            }
        }
    }

    /// Starts the tasks (one per lane) that run queued logins, each in its own task while it
    /// holds a slot; a second call does nothing.
    pub(crate) fn start(backend: &Arc<Backend>) {
        for lane in &backend.logins.lanes {
            let Some(mut rx) = lane.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return;
            };
            let slots = Arc::clone(&lane.slots);
            let backend = Arc::clone(backend);
            tokio::spawn(async move {
                while let Some(login) = rx.recv().await {
                    metrics::gauge!("ringchat_backend_logins_waiting").decrement(1.0);
                    // Never closed.
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        return;
                    };
                    // A client that left while its login waited costs nothing more.
                    if login.reply.is_closed() {
                        continue;
                    }
                    let backend = Arc::clone(&backend);
                    metrics::gauge!("ringchat_backend_logins_in_flight").increment(1.0);
                    tokio::spawn(async move {
                        backend.serve_login(login).await;
                        metrics::gauge!("ringchat_backend_logins_in_flight").decrement(1.0);
                        drop(slot);
                    });
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use ringchat_proto::v1::login;

    use super::*;
    use crate::api::{Request, SessionRequest, ShardEvent};
    use crate::config::Settings;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const PASSWORD: &str = "correct horse battery";
    /// How long a test waits for an answer that must come.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// A backend on its own data dir, serving `requests`, its shard 0's events on the receiver.
    /// Argon2 at its default cost, one hash at a time: password logins are slow.
    fn backend(
        dir: &tempfile::TempDir,
        tune: impl FnOnce(&mut Settings),
    ) -> (
        Arc<Backend>,
        mpsc::Sender<Request>,
        mpsc::Receiver<ShardEvent>,
    ) {
        let mut settings = Settings::default();
        settings.storage.data_dir = dir.path().join("data");
        settings.accounts.hash_concurrency = 1;
        tune(&mut settings);
        assert_eq!(settings.problems(), Vec::<String>::new());
        let (shard_tx, shard_rx) = mpsc::channel(1024);
        let backend = Backend::open(settings, vec![shard_tx]).expect("backend opens");
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(Arc::clone(&backend).serve(rx, std::future::pending()));
        (backend, tx, shard_rx)
    }

    async fn register(backend: &Backend, name: &str) {
        let body = v1::Register {
            username: name.into(),
            password: PASSWORD.into(),
            ..Default::default()
        };
        backend
            .accounts
            .register(PEER, body)
            .await
            .expect("register");
    }

    /// Sends a password login for connection `conn` of shard 0; its answer comes on the receiver.
    async fn login(
        requests: &mpsc::Sender<Request>,
        conn: u64,
        name: &str,
    ) -> oneshot::Receiver<LoginReply> {
        let (reply, answer) = oneshot::channel();
        let body = v1::Login {
            account: Some(login::Account::Username(name.into())),
            credential: Some(login::Credential::Password(PASSWORD.into())),
            device_id: format!("device-{conn}"),
            ..Default::default()
        };
        let conn = ConnRef { shard: 0, conn };
        let request = Request::Login {
            conn,
            peer: PEER,
            body,
            reply,
        };
        requests.send(request).await.expect("backend serving");
        answer
    }

    async fn answer(answer: oneshot::Receiver<LoginReply>) -> LoginReply {
        tokio::time::timeout(DEADLINE, answer)
            .await
            .expect("a login is answered")
            .expect("the backend answers every login")
    }

    #[tokio::test]
    async fn an_established_sessions_read_is_answered_while_logins_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, requests, mut events) = backend(&dir, |s| {
            s.backend.logins_in_flight_max = 1;
        });
        const STORM: u64 = 6;
        register(&backend, "ann").await;
        for i in 0..STORM {
            register(&backend, &format!("user{i}")).await;
        }
        let ann = answer(login(&requests, 1, "ann").await).await;
        let Body::LoginOk(ok) = ann.body else {
            panic!("ann logs in: {:?}", ann.body)
        };
        let mut storm = Vec::new();
        for i in 0..STORM {
            storm.push(login(&requests, 100 + i, &format!("user{i}")).await);
        }
        let read = Request::Session {
            conn: ConnRef { shard: 0, conn: 1 },
            user_id: ok.user_id,
            request_id: 7,
            request: SessionRequest::Conversations(v1::Conversations::default()),
        };
        requests.send(read).await.expect("backend serving");
        tokio::time::timeout(DEADLINE, async {
            loop {
                match events.recv().await.expect("the backend runs") {
                    ShardEvent::Frame { conn: 1, .. } => return,
                    _ => continue,
                }
            }
        })
        .await
        .expect("ann's conversation list is answered");
        // One slow password login at a time: the read did not wait for all of them.
        let mut replies = Vec::new();
        let mut waiting = Vec::new();
        for mut a in storm {
            match a.try_recv() {
                Ok(reply) => replies.push(reply),
                Err(_) => waiting.push(a),
            }
        }
        assert!(
            !waiting.is_empty(),
            "the read came after every login ({STORM} answered)"
        );
        for a in waiting {
            replies.push(answer(a).await);
        }
        for reply in replies {
            assert!(matches!(reply.body, Body::LoginOk(_)), "{:?}", reply.body);
        }
    }

    #[tokio::test]
    async fn a_token_login_does_not_wait_behind_password_logins() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, requests, _events) = backend(&dir, |s| {
            s.backend.logins_in_flight_max = 1;
        });
        const STORM: u64 = 6;
        register(&backend, "ann").await;
        for i in 0..STORM {
            register(&backend, &format!("user{i}")).await;
        }
        let Body::LoginOk(ann) = answer(login(&requests, 1, "ann").await).await.body else {
            panic!("ann logs in")
        };
        let mut storm = Vec::new();
        for i in 0..STORM {
            storm.push(login(&requests, 100 + i, &format!("user{i}")).await);
        }
        let (reply, token_answer) = oneshot::channel();
        let body = v1::Login {
            credential: Some(login::Credential::Token(ann.token.clone())),
            device_id: "device-1".into(),
            ..Default::default()
        };
        let conn = ConnRef { shard: 0, conn: 2 };
        requests
            .send(Request::Login {
                conn,
                peer: PEER,
                body,
                reply,
            })
            .await
            .expect("backend serving");
        let token_login = answer(token_answer).await;
        assert!(
            matches!(token_login.body, Body::LoginOk(_)),
            "{:?}",
            token_login.body
        );
        // It did not wait for the password logins (one argon2 hash at a time).
        let mut waiting = Vec::new();
        for mut a in storm {
            if a.try_recv().is_err() {
                waiting.push(a);
            }
        }
        assert!(!waiting.is_empty(), "every password login was done first");
        for a in waiting {
            assert!(matches!(answer(a).await.body, Body::LoginOk(_)));
        }
    }

    #[tokio::test]
    async fn a_full_login_queue_answers_unavailable_with_a_jittered_retry_after_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let base = Settings::default().storage.unavailable_retry_after_ms;
        let (backend, requests, _events) = backend(&dir, |s| {
            s.backend.logins_in_flight_max = 1;
            // One login waiting for the slot, at most.
            s.backend.queue_requests_max = 1;
        });
        register(&backend, "ann").await;
        let mut sent = Vec::new();
        for conn in 0..8 {
            sent.push(login(&requests, conn, "ann").await);
        }
        let mut refused = Vec::new();
        let mut logged_in = 0;
        for a in sent {
            match answer(a).await.body {
                Body::LoginOk(_) => logged_in += 1,
                Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                    refused.push(e.retry_after_ms);
                }
                other => panic!("unexpected answer: {other:?}"),
            }
        }
        assert!(logged_in >= 1, "the first login runs");
        assert!(!refused.is_empty(), "a full queue refuses");
        assert!(
            refused.iter().all(|ms| (base..2 * base).contains(ms)),
            "{refused:?} not in [{base}, {})",
            2 * base
        );
    }
}

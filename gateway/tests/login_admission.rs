//! Admission under a login storm: a shard takes a bounded number of logins at once, turns the
//! others away at once with `SERVER_FULL` and a jittered `retry_after_ms`, and the clients
//! already logged in are never refused.

mod common;

use std::cell::Cell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{PASSWORD, TestServer, WAIT_DEADLINE, wait_until};
use ringchat_bench::client::{Client, password_login};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// `gateway.login_retry_after_ms` in these tests.
const RETRY_BASE_MS: u64 = 300;
/// Clients logging in at once, against 2 login slots.
const STORM: usize = 12;

/// What a login came to on one connection.
enum Outcome {
    LoggedIn,
    /// Refused with this `retry_after_ms`; the server closed the connection after it.
    Refused(u64),
}

/// Hello and a password login on a new connection. A refusal must be `SERVER_FULL` with a
/// `retry_after_ms`, followed by the close.
async fn try_login(server: &TestServer, name: &str) -> Outcome {
    let mut c = server.client().await;
    c.hello().await.unwrap();
    match c
        .login(password_login(name, PASSWORD, "storm"))
        .await
        .unwrap()
    {
        Ok(_) => Outcome::LoggedIn,
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::ServerFull, "{e}");
            assert!(c.recv_timeout().await.unwrap().is_none(), "closed after it");
            Outcome::Refused(e.0.retry_after_ms)
        }
    }
}

/// Logs in as a client would: after a refusal, waits the `retry_after_ms` it was told and
/// reconnects. Returns every `retry_after_ms` it was told on the way.
async fn login_with_retries(server: &TestServer, name: &str) -> Vec<u64> {
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut told = Vec::new();
    loop {
        match try_login(server, name).await {
            Outcome::LoggedIn => return told,
            Outcome::Refused(ms) => {
                told.push(ms);
                assert!(Instant::now() < deadline, "{name} never got in: {told:?}");
                // The protocol's back-off, not a guess: the server said when to come back.
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_login_storm_is_turned_away_with_jittered_retry_after_and_the_logged_in_go_on() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__LOGINS_IN_FLIGHT_PER_SHARD_MAX", "2"),
        ("GATEWAY__LOGIN_RETRY_AFTER_MS", "300"),
        // Argon2 at its default cost, one hash at a time: each password login is slow, so
        // the storm's logins overlap.
        ("ACCOUNTS__ARGON2_MEMORY_KIB", "19456"),
        ("ACCOUNTS__ARGON2_ITERATIONS", "2"),
        ("ACCOUNTS__HASH_CONCURRENCY", "1"),
        // Twelve logins from one address are not an attack here.
        ("LOGIN__FAILURES_FREE", "1000"),
    ]);
    // Accounts first, one at a time on one connection (one login slot).
    let mut setup = server.client().await;
    setup.hello().await.unwrap();
    for name in ["ann", "bob"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..STORM).map(|i| format!("storm{i:02}")))
    {
        setup.register(&name, PASSWORD).await.unwrap().unwrap();
    }
    drop(setup);
    let mut ann = server.client().await;
    ann.hello().await.unwrap();
    ann.login_password("ann", PASSWORD, "ann-phone")
        .await
        .unwrap()
        .unwrap();
    let mut bob = server.client().await;
    bob.hello().await.unwrap();
    let bob_id = bob
        .login_password("bob", PASSWORD, "bob-phone")
        .await
        .unwrap()
        .unwrap()
        .user_id;

    let storm = async {
        let logins = (0..STORM).map(|i| {
            let server = &server;
            async move { login_with_retries(server, &format!("storm{i:02}")).await }
        });
        futures_util::future::join_all(logins).await
    };
    // Ann talks to Bob every 20 ms for as long as the storm lasts (20 messages at least):
    // every send acked, none refused, and a read of her session answered now and then.
    let mut storm = std::pin::pin!(storm);
    let mut told = None;
    let mut sent = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while told.is_none() || sent.len() < 20 {
        if told.is_none() {
            tokio::select! {
                t = &mut storm => {
                    told = Some(t);
                    continue;
                }
                _ = pace.tick() => {}
            }
        } else {
            pace.tick().await;
        }
        let text = format!("message {}", sent.len());
        let ack = ann
            .send_text(bob_id, &format!("m{}", sent.len()), &text)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a logged-in client's send was refused: {e}"));
        sent.push((ack.seq, text));
        if sent.len() % 5 == 0 {
            ann.conversations().await.unwrap();
        }
    }
    let told = told.expect("the storm ended");

    // Every message reached Bob, in order.
    for (seq, text) in &sent {
        let message = bob.next_push().await.unwrap();
        assert_eq!(message.seq, *seq);
        assert_eq!(message.content, text.as_bytes());
    }
    let seqs: Vec<u64> = sent.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Some of the storm were turned away, each told to come back in [base, 2 × base), not all
    // at the same moment; every one of them got in when it came back.
    let refusals: Vec<u64> = told.iter().flatten().copied().collect();
    assert!(refusals.len() >= 2, "2 slots for {STORM} logins: {told:?}");
    assert!(
        refusals
            .iter()
            .all(|ms| (RETRY_BASE_MS..2 * RETRY_BASE_MS).contains(ms)),
        "{refusals:?}"
    );
    let distinct: HashSet<u64> = refusals.iter().copied().collect();
    assert!(distinct.len() >= 2, "jittered: {refusals:?}");

    wait_until("the refusals counted and the slots given back", || {
        let m = server.metrics();
        let refused: f64 = m
            .iter()
            .filter(|(k, _)| {
                // One client here: past its share of the slots (one of two) before the shard's.
                k.starts_with("ringchat_logins_refused_total{")
                    && (k.contains("reason=\"logins_in_flight\"")
                        || k.contains("reason=\"client_share\""))
            })
            .map(|(_, v)| v)
            .sum();
        refused == refusals.len() as f64
            && m.get("ringchat_logins_in_flight{shard=\"0\"}").copied() == Some(0.0)
    });
}

#[tokio::test]
async fn a_full_shard_says_when_to_come_back() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__CONNS_PER_SHARD_MAX", "1"),
        ("GATEWAY__LOGIN_RETRY_AFTER_MS", "300"),
    ]);
    let (mut held, _) = server.user("ann").await;
    let mut told = Vec::new();
    for _ in 0..4 {
        told.push(server_full_then_closed(&mut server.client().await).await);
    }
    assert!(
        told.iter()
            .all(|ms| (RETRY_BASE_MS..2 * RETRY_BASE_MS).contains(ms)),
        "{told:?}"
    );
    // The client already in is not touched.
    held.ping().await.unwrap();
}

#[tokio::test]
async fn logins_over_the_pace_wait_their_turn_and_the_logged_in_do_not() {
    /// Logins a second on the one shard, one at a time: the storm below takes seconds.
    const PER_SECOND: u64 = 4;
    const LOGINS: usize = 8;
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__LOGINS_PER_SECOND_PER_SHARD", "4"),
        ("GATEWAY__LOGIN_BURST_PER_SHARD", "1"),
    ]);
    // Accounts first (registrations keep the pace too).
    let (mut ann, _) = server.user("ann").await;
    let (_bob, bob) = server.user("bob").await;
    let mut setup = server.client().await;
    setup.hello().await.unwrap();
    let names: Vec<String> = (0..LOGINS).map(|i| format!("paced{i}")).collect();
    for name in &names {
        setup.register(name, PASSWORD).await.unwrap().unwrap();
    }
    drop(setup);

    let started = Instant::now();
    let storm = futures_util::future::join_all(names.iter().map(|name| {
        let server = &server;
        async move {
            let mut c = server.client().await;
            c.hello().await.unwrap();
            c.login_password(name, PASSWORD, "paced").await.unwrap()
        }
    }));
    let mut storm = std::pin::pin!(storm);
    // While the storm waits its turn, a logged-in client's send is acked: it is never paced.
    let ack = tokio::select! {
        _ = &mut storm => panic!("the storm was not paced"),
        ack = ann.send_text(bob.user_id, "during", "hello during the storm") => ack,
    };
    ack.unwrap().expect("acked");
    for login in storm.await {
        login.expect("every paced login gets in");
    }
    // Each login after the first waited at least one gap for its turn.
    let gap = Duration::from_millis(1000 / PER_SECOND);
    assert!(
        started.elapsed() >= gap * (LOGINS as u32 - 1),
        "{:?}",
        started.elapsed()
    );
    assert!(server.metric("ringchat_logins_paced_total{shard=\"0\"}") >= (LOGINS - 1) as f64);
}

/// A client that hangs up while its login waits its turn is closed then, and its login never
/// reaches the backend. Before, the shard noticed the hang-up only once the login was done
/// (a password hash, a session opened and closed again, presence to friends): a storm of
/// clients that give up and retry cost twice the logins, and a nameless device's refreshed
/// token was retired by a login whose `LoginOk` nobody read.
#[tokio::test]
async fn a_login_whose_client_hung_up_while_it_waited_is_never_served() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__LOGINS_PER_SECOND_PER_SHARD", "1"),
        ("GATEWAY__LOGIN_BURST_PER_SHARD", "1"),
    ]);
    let mut setup = server.client().await;
    setup.hello().await.unwrap();
    for name in ["first", "gone", "later"] {
        setup.register(name, PASSWORD).await.unwrap().unwrap();
    }
    drop(setup);

    let mut first = server.client().await;
    first.hello().await.unwrap();
    let mut gone = server.client().await;
    gone.hello().await.unwrap();
    let first_login = first.send(Body::Login(password_login("first", PASSWORD, "first")));
    first_login.await.unwrap();
    // A second behind `first` in the pace: it waits, and its client gives up.
    gone.send(Body::Login(password_login("gone", PASSWORD, "gone")))
        .await
        .unwrap();
    drop(gone);
    common::wait_until_async("the hang-up noticed while the login waited", || {
        server.metric("ringchat_logins_abandoned_total{shard=\"0\"}") == 1.0
    })
    .await;
    match first.recv().await.unwrap().and_then(|f| f.body) {
        Some(Body::LoginOk(_)) => {}
        other => panic!("first: {other:?}"),
    }
    // Paced behind the abandoned one: by its LoginOk that one would have been served.
    let mut later = server.client().await;
    later.hello().await.unwrap();
    later
        .login_password("later", PASSWORD, "later")
        .await
        .unwrap()
        .expect("later logs in");
    assert_eq!(
        server.metric("ringchat_shard_logins_total{shard=\"0\"}"),
        2.0
    );
    assert_eq!(
        server.metric("ringchat_shard_login_failures_total{shard=\"0\"}"),
        0.0
    );
}

/// A connection that is turned away as a full shard's are: `SERVER_FULL` with a
/// `retry_after_ms` in [base, 2 × base) as its first frame, before the client says anything,
/// then the close.
async fn expect_turned_away(server: &TestServer) {
    let retry_after_ms = server_full_then_closed(&mut server.client().await).await;
    assert!(
        (RETRY_BASE_MS..2 * RETRY_BASE_MS).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
}

/// `c`'s first frame is `SERVER_FULL`, sent before the client says anything, then the close;
/// returns its `retry_after_ms`.
async fn server_full_then_closed(c: &mut Client) -> u64 {
    let frame = c
        .recv_timeout()
        .await
        .unwrap()
        .expect("an answer, then the close");
    let Some(Body::Error(v1::Error {
        code,
        retry_after_ms,
        ..
    })) = frame.body
    else {
        panic!("{frame:?}")
    };
    assert_eq!(code, ErrorCode::ServerFull as i32);
    assert!(c.recv_timeout().await.unwrap().is_none(), "closed after it");
    retry_after_ms
}

/// One client cannot fill a shard with connections that never log in (renewing them every
/// handshake timeout, it would push everyone else out): past
/// `gateway.prelogin_conns_per_ip_max` of its connections not logged in yet, a new one is
/// turned away as a full shard's is. A login or a close gives the place back; logged-in
/// sessions never count.
#[tokio::test]
async fn a_client_past_its_connections_not_logged_in_is_told_server_full() {
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__PRELOGIN_CONNS_PER_IP_MAX", "2"),
        ("GATEWAY__LOGIN_RETRY_AFTER_MS", "300"),
    ]);
    // Logged in, so not counted: the two places below are all 127.0.0.1's.
    let (mut ann, _) = server.user("ann").await;
    let mut first = server.client().await;
    first.hello().await.unwrap();
    let mut second = server.client().await;
    second.hello().await.unwrap();
    expect_turned_away(&server).await;
    // The two in place are not touched.
    first.ping().await.unwrap();
    second.ping().await.unwrap();

    // A login gives its place back by the time its LoginOk comes.
    first
        .login_password("ann", PASSWORD, "ann-2")
        .await
        .unwrap()
        .expect("logs in");
    let mut third = server.client().await;
    third.hello().await.unwrap();
    expect_turned_away(&server).await;

    // So does a close, once the server has seen it.
    drop(second);
    common::wait_until_async("the closed connection gone from the shard", || {
        // ann, first (logged in) and third.
        server.metric("ringchat_connections{shard=\"0\"}") == 3.0
    })
    .await;
    let mut fourth = server.client().await;
    fourth.hello().await.unwrap();
    third.ping().await.unwrap();
    ann.ping().await.unwrap();

    assert_eq!(
        server.metric("ringchat_prelogin_refused_total{shard=\"0\"}"),
        2.0
    );
    assert_eq!(
        server.metric("ringchat_rejected_full_total{shard=\"0\"}"),
        0.0
    );
}

/// Clients that send a login and reset while it waits its turn give their places in the pace
/// back. Before, each kept its place: a client doing connect, login, reset a thousand times a
/// second pushed the shard's pace seconds ahead each second, and every real login waited past
/// its handshake deadline (`Kicked{handshake_timeout}`) before the backend ever saw it.
#[tokio::test]
async fn logins_abandoned_while_they_wait_give_their_places_back() {
    /// Login-and-reset cycles: 15 s of places at the pace below, were none given back.
    const CYCLES: usize = 1_500;
    /// Connections sent their login together, then reset together once the shard read them.
    const BATCH: usize = 100;
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__LOGINS_PER_SECOND_PER_SHARD", "100"),
        ("GATEWAY__LOGIN_BURST_PER_SHARD", "1"),
        ("GATEWAY__HANDSHAKE_TIMEOUT_MS", "3000"),
        // The few resets' logins that reach the backend fail (no such user): not failures
        // of the real client's address to delay it for.
        ("LOGIN__FAILURES_FREE", "1000000"),
    ]);
    let mut setup = server.client().await;
    setup.hello().await.unwrap();
    setup.register("ann", PASSWORD).await.unwrap().unwrap();
    drop(setup);
    let frames_in = "ringchat_frames_in_total{shard=\"0\"}";
    let open = "ringchat_connections{shard=\"0\"}";
    common::wait_until_async("the setup connection closed", || server.metric(open) == 0.0).await;

    for _ in 0..CYCLES / BATCH {
        let read_by = server.metric(frames_in) + 2.0 * BATCH as f64;
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let mut c = server.client().await;
            c.send(Body::Hello(v1::Hello {
                protocol_version: ringchat_proto::PROTOCOL_VERSION,
                client_name: "reset".into(),
            }))
            .await
            .unwrap();
            c.send(Body::Login(password_login("nobody", PASSWORD, "reset")))
                .await
                .unwrap();
            batch.push(c);
        }
        // Each login read, so booked in the pace, before its client resets.
        common::wait_until_async("the batch's logins read", || {
            server.metric(frames_in) >= read_by
        })
        .await;
        for c in batch {
            let (stream, _) = c.into_parts();
            stream.set_zero_linger().unwrap();
        }
        common::wait_until_async("the batch's resets seen", || server.metric(open) == 0.0).await;
    }
    // They waited their turn and hung up: the hang-ups were seen while they waited.
    let abandoned = server.metric("ringchat_logins_abandoned_total{shard=\"0\"}");
    assert!(abandoned >= (CYCLES * 9 / 10) as f64, "{abandoned}");

    // A real client's login waits for no place of theirs: it gets in within a second or two
    // (the pace had 15 s of their places), well within its handshake deadline.
    let started = Instant::now();
    let mut ann = server.client().await;
    ann.hello().await.unwrap();
    let login = ann.login_password("ann", PASSWORD, "ann-phone").await;
    assert!(
        matches!(login, Ok(Ok(_))),
        "after {:?}: {login:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Error answers to pre-login requests one connection gets before the server closes it
/// (`PRELOGIN_REFUSALS_PER_CONN_MAX` in the gateway's `session.rs`).
const REFUSALS_PER_CONN_MAX: usize = 8;

/// How one abusive connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Abused {
    /// Told `SERVER_FULL` (then closed) after this many `INVALID_ARGUMENT`s.
    ServerFull(usize),
    /// Closed after its `REFUSALS_PER_CONN_MAX`th `INVALID_ARGUMENT`.
    ClosedAtTheBound,
}

/// One connection from 127.0.0.1 sending `Login{}` (refused at once by the backend) in a loop,
/// one at a time, until the server turns it away or closes it.
async fn abuse(server: &TestServer) -> Abused {
    let mut c = server.client().await;
    c.hello().await.unwrap();
    let empty = v1::Login {
        device_id: "d".into(),
        ..Default::default()
    };
    for refused in 0..REFUSALS_PER_CONN_MAX {
        let e = c
            .login(empty.clone())
            .await
            .unwrap()
            .expect_err("a login without a credential");
        match e.code() {
            ErrorCode::InvalidArgument => {}
            ErrorCode::ServerFull => {
                let ms = e.0.retry_after_ms;
                assert!((RETRY_BASE_MS..2 * RETRY_BASE_MS).contains(&ms), "{ms}");
                assert!(c.recv_timeout().await.unwrap().is_none(), "closed after it");
                return Abused::ServerFull(refused);
            }
            other => panic!("{other:?}: {e}"),
        }
    }
    // Nothing more sent: the server closes on its own after the last refusal.
    assert!(
        c.recv_timeout().await.unwrap().is_none(),
        "closed after {REFUSALS_PER_CONN_MAX} refusals"
    );
    Abused::ClosedAtTheBound
}

/// One host looping logins the backend refuses at once (`Login{}` here; bad passwords past
/// the throttle alike) on many connections cannot take a shard's login slots from everyone
/// else: it may take idle ones but of the last quarter only a quarter (here: one),
/// and is told `SERVER_FULL` without taking one, and each of its connections is closed after `REFUSALS_PER_CONN_MAX` refusals.
/// Meanwhile a client of another address logs in. Before, the looping host held every slot
/// (each refused login waited its turn in the pace holding one) and the other client was told
/// `SERVER_FULL`.
#[tokio::test]
async fn one_address_looping_refused_logins_leaves_other_clients_their_slots() {
    const ABUSERS: usize = 8;
    let server = TestServer::start(&[
        ("GATEWAY__CORES", "[0]"),
        // A quarter of them: one per client.
        ("GATEWAY__LOGINS_IN_FLIGHT_PER_SHARD_MAX", "4"),
        // Slow enough that each login waits its turn holding its slot.
        ("GATEWAY__LOGINS_PER_SECOND_PER_SHARD", "20"),
        ("GATEWAY__LOGIN_BURST_PER_SHARD", "1"),
        ("GATEWAY__LOGIN_RETRY_AFTER_MS", "300"),
    ]);
    let mut setup = server.client().await;
    setup.hello().await.unwrap();
    setup.register("ann", PASSWORD).await.unwrap().unwrap();
    drop(setup);

    let logged_in = Cell::new(false);
    let abusers = (0..ABUSERS).map(|_| {
        let (server, logged_in) = (&server, &logged_in);
        async move {
            let mut ends = Vec::new();
            // Each connection as soon as the last ended, until the other client is in.
            while !logged_in.get() {
                ends.push(abuse(server).await);
            }
            ends
        }
    });
    let refused = || {
        server
            .metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("ringchat_logins_refused_total{"))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let other = async {
        common::wait_until_async("the looping host turned away", || refused() >= 8.0).await;
        let from: IpAddr = "127.0.0.2".parse().unwrap();
        let mut c = Client::connect_from(server.tcp, Some(from)).await.unwrap();
        c.hello().await.unwrap();
        let login = c
            .login_password("ann", PASSWORD, "ann-phone")
            .await
            .unwrap();
        assert!(login.is_ok(), "a client of another address: {login:?}");
        logged_in.set(true);
        c
    };
    let (ends, mut ann) = tokio::time::timeout(
        WAIT_DEADLINE,
        futures_util::future::join(futures_util::future::join_all(abusers), other),
    )
    .await
    .expect("the other client logged in");
    ann.ping().await.unwrap();
    let ends: Vec<Abused> = ends.into_iter().flatten().collect();
    assert!(
        ends.iter().any(|e| matches!(e, Abused::ServerFull(_))),
        "past its share the host is told SERVER_FULL: {ends:?}"
    );
    // Alone now, one of its connections gets its refusals, then the close.
    assert_eq!(abuse(&server).await, Abused::ClosedAtTheBound);
    assert!(server.metric("ringchat_prelogin_refusals_closed_total{shard=\"0\"}") >= 1.0);
}

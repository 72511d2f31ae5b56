//! The presence timer over a real backend (embedded store, friendship made through the
//! sequencer): what the user's friends are sent, in order. The tracker is driven with explicit
//! times (the quiet period is long enough that the backend's own timer never fires here), so
//! the interleavings are made on purpose, not waited for.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, Platform};
use tokio::sync::mpsc;

use super::{DeviceState, State};
use crate::api::{ConnRef, ContactWrite, Request, ShardEvent, WriteRequest, decoded_frames};
use crate::config::Settings;
use crate::messaging::Submitted;
use crate::service::Backend;
use crate::sessions::Session;
use crate::store::UserId;
use crate::time::now_ms;

const QUIET_MS: u64 = 600_000;
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a test waits for an answer that must come.
const DEADLINE: Duration = Duration::from_secs(30);

fn conn(n: u64) -> ConnRef {
    ConnRef { shard: 0, conn: n }
}

/// A backend on its own data dir, serving; its shard 0's events on the receiver.
fn backend(
    dir: &tempfile::TempDir,
) -> (
    Arc<Backend>,
    mpsc::Sender<Request>,
    mpsc::Receiver<ShardEvent>,
) {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    settings.presence.quiet_period_ms = QUIET_MS;
    assert_eq!(settings.problems(), Vec::<String>::new());
    let (shard_tx, shard_rx) = mpsc::channel(1024);
    let backend = Backend::open(settings, vec![shard_tx]).expect("backend opens");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(Arc::clone(&backend).serve(rx, std::future::pending()));
    (backend, tx, shard_rx)
}

/// Registers `name`, with a session on connection `n` of shard 0.
async fn user(b: &Backend, name: &str, n: u64) -> UserId {
    let req = v1::Register {
        username: name.into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let user_id = b.accounts.register(PEER, req).await.unwrap().user_id;
    let session = Session {
        conn: conn(n),
        device_id: format!("{name}-dev").into(),
        platform: Platform::Web,
        token_hash: [n as u8; 32],
        peer: PEER,
        opened_at_ms: now_ms(),
        token_expires_at_ms: u64::MAX,
    };
    b.sessions.write().open(user_id, session).unwrap();
    user_id
}

/// A contacts write of `user` on connection `n`, answered (`FriendOk`) before this returns.
async fn contact(
    b: &Backend,
    events: &mut mpsc::Receiver<ShardEvent>,
    user: UserId,
    n: u64,
    write: ContactWrite,
) {
    let writes = b.writes().expect("the sequencer runs");
    let submitted = writes.submit(
        conn(n),
        user,
        &"dev".into(),
        1,
        WriteRequest::Contact(write),
    );
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
    let answered = async {
        loop {
            let event = events.recv().await.expect("the shard's inbox is open");
            for (to, body) in decoded_frames(event) {
                if to == n {
                    match body {
                        Body::FriendOk(_) => return,
                        Body::Error(e) => panic!("refused: {e:?}"),
                        _ => {}
                    }
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, answered)
        .await
        .expect("the write is answered");
}

/// The presence pushes on the inbox now, as (connection, user shown, state).
fn presence_sent(events: &mut mpsc::Receiver<ShardEvent>) -> Vec<(u64, UserId, v1::PresenceState)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        for (to, body) in decoded_frames(event) {
            if let Body::Presence(p) = body {
                out.push((to, p.user_id, p.state()));
            }
        }
    }
    out
}

/// Alice and Bob, friends through the sequencer, with the presence pushes of becoming friends
/// taken out of `events`.
async fn alice_and_bob_friends(
    b: &Backend,
    events: &mut mpsc::Receiver<ShardEvent>,
) -> (UserId, UserId) {
    let alice = user(b, "alice", 1).await;
    let bob = user(b, "bob", 2).await;
    let ask = ContactWrite::FriendRequest(v1::FriendRequest {
        user_id: bob,
        message: String::new(),
    });
    contact(b, events, alice, 1, ask).await;
    let accept = ContactWrite::FriendRespond(v1::FriendRespond {
        user_id: alice,
        accept: true,
    });
    contact(b, events, bob, 2, accept).await;
    presence_sent(events);
    (alice, bob)
}

/// After a mass disconnect the timer takes its due pushes (an "offline" among them) and sends
/// them one after another, each after store reads; a user who is back meanwhile gets "online"
/// pushed by the login. The timer's stale "offline" must not reach the friend after it.
#[tokio::test]
async fn a_due_offline_taken_before_a_reconnect_is_not_pushed_after_the_online() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _requests, mut events) = backend(&dir);
    let (alice, _bob) = alice_and_bob_friends(&b, &mut events).await;

    let t0 = now_ms();
    let (_, online) = b
        .presence
        .device(alice, conn(1), Some(DeviceState::Online), t0);
    b.push_presence(online.expect("coming online is pushed at once"))
        .await;
    assert_eq!(
        presence_sent(&mut events),
        vec![(2, alice, v1::PresenceState::Online)]
    );
    // Alice's connection drops: "offline" falls due a quiet period later, and the timer
    // takes it.
    let (_, later) = b.presence.device(alice, conn(1), None, t0 + 1);
    assert!(later.is_none(), "going offline waits for the quiet period");
    let due = b.presence.due(t0 + 1 + QUIET_MS);
    assert_eq!(
        due.iter()
            .map(|p| (p.user, p.shown.state))
            .collect::<Vec<_>>(),
        vec![(alice, State::Offline)]
    );
    // Before the timer has sent it, alice is back (a quiet period after the offline was
    // published, so the login pushes at once).
    let (_, back) = b.presence.device(
        alice,
        conn(3),
        Some(DeviceState::Online),
        t0 + 2 + 2 * QUIET_MS,
    );
    b.push_presence(back.expect("coming back is pushed at once"))
        .await;
    // Now the timer sends what it took.
    b.push_due(due).await;
    assert_eq!(
        presence_sent(&mut events),
        vec![(2, alice, v1::PresenceState::Online)],
        "bob sees alice online, and nothing after"
    );
    assert_eq!(b.presence.pushes_pending(), 0, "no push is left counted");
}

/// A push checked before a newer one was decided is still sent, and first: friends see each
/// state in the order it was published.
#[tokio::test]
async fn pushes_of_one_user_reach_friends_in_the_order_they_were_published() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _requests, mut events) = backend(&dir);
    let (alice, _bob) = alice_and_bob_friends(&b, &mut events).await;

    let t0 = now_ms();
    let (_, online) = b
        .presence
        .device(alice, conn(1), Some(DeviceState::Online), t0);
    b.push_presence(online.unwrap()).await;
    let (_, _) = b.presence.device(alice, conn(1), None, t0 + 1);
    let due = b.presence.due(t0 + 1 + QUIET_MS);
    b.push_due(due).await;
    let (_, back) = b.presence.device(
        alice,
        conn(3),
        Some(DeviceState::Online),
        t0 + 2 + 2 * QUIET_MS,
    );
    b.push_presence(back.unwrap()).await;
    assert_eq!(
        presence_sent(&mut events),
        vec![
            (2, alice, v1::PresenceState::Online),
            (2, alice, v1::PresenceState::Offline),
            (2, alice, v1::PresenceState::Online),
        ]
    );
}

//! A login, or a cluster repair of the online index, while delivery lags, over a real backend
//! (embedded store, real sequencer and delivery task): the shard's inbox is left full, so
//! committed groups wait in the delivery task, unrouted. A new member whose groups are read
//! then must not join the group's audience before the commits the read saw are routed: it
//! would be pushed the group's older messages, which its history-hidden membership does not
//! show it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, login};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    ConnRef, GroupWrite, LoginReply, Request, ShardEvent, WriteRequest, decoded_frames,
};
use crate::config::Settings;
use crate::messaging::Submitted;
use crate::service::Backend;
use crate::store::UserId;
use crate::testkit::metric_sum;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PASSWORD: &str = "correct horse battery";
/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);
const OWNER_CONN: u64 = 1;
const JOINER_LOGIN_CONN: u64 = 2;
const JOINER_WRITE_CONN: u64 = 3;

fn conn(n: u64) -> ConnRef {
    ConnRef { shard: 0, conn: n }
}

async fn register(b: &Backend, name: &str) -> UserId {
    let req = v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    b.accounts.register(PEER, req).await.unwrap().user_id
}

fn submit(b: &Backend, n: u64, user: UserId, request: WriteRequest) {
    let writes = b.writes().expect("the sequencer runs");
    let submitted = writes.submit(conn(n), user, &"dev".into(), 1, request);
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
}

fn send(g: u64, id: &str) -> WriteRequest {
    WriteRequest::Send(v1::Send {
        client_msg_id: id.into(),
        conversation_id: g,
        content_type: v1::ContentType::Text as i32,
        content: Bytes::from_static(b"hidden from new members"),
        ..Default::default()
    })
}

async fn login(requests: &mpsc::Sender<Request>, n: u64, name: &str) -> LoginReply {
    let body = v1::Login {
        account: Some(login::Account::Username(name.into())),
        credential: Some(login::Credential::Password(PASSWORD.into())),
        device_id: format!("device-{n}"),
        ..Default::default()
    };
    login_with(requests, conn(n), body).await
}

async fn login_with(
    requests: &mpsc::Sender<Request>,
    conn: ConnRef,
    body: v1::Login,
) -> LoginReply {
    let (reply, answer) = oneshot::channel();
    let request = Request::Login {
        conn,
        peer: PEER,
        body,
        reply,
    };
    requests.send(request).await.expect("backend serving");
    tokio::time::timeout(DEADLINE, answer)
        .await
        .expect("a login is answered")
        .expect("the backend answers every login")
}

/// Waits (with the deadline) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(DEADLINE, waited)
        .await
        .unwrap_or_else(|_| panic!("{what}"));
}

/// A backend on one shard whose inbox holds one event: a second waits in the delivery task,
/// unrouted. A login or a repair that waits longer than 100 ms for delivery gives up.
fn stalling_backend(
    dir: &std::path::Path,
) -> (
    Arc<Backend>,
    mpsc::Receiver<ShardEvent>,
    mpsc::Sender<ShardEvent>,
) {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    assert_eq!(settings.problems(), Vec::<String>::new());
    let (shard_tx, events) = mpsc::channel(1);
    let inbox = shard_tx.clone();
    let b = Backend::open(settings, vec![shard_tx]).expect("backend opens");
    b.delivery
        .in_flight
        .set_wait_max(Duration::from_millis(100));
    (b, events, inbox)
}

/// The owner makes an open group whose history new members do not see; delivery stalls; the
/// owner sends `hidden`, then the joiner joins: both durable, neither routed. Returns the group.
async fn a_hidden_message_then_a_join(
    b: &Arc<Backend>,
    events: &mut mpsc::Receiver<ShardEvent>,
    inbox: &mpsc::Sender<ShardEvent>,
    owner: UserId,
    joiner: UserId,
) -> u64 {
    let create = v1::GroupCreate {
        name: "g".into(),
        join_policy: v1::JoinPolicy::Open as i32,
        history_visible: false,
        ..Default::default()
    };
    submit(
        b,
        OWNER_CONN,
        owner,
        WriteRequest::Group(GroupWrite::Create(create)),
    );
    let g = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.expect("the shard's inbox is open");
            for (_, body) in decoded_frames(event) {
                if let Body::GroupCreated(c) = body {
                    return c.group.expect("the group").conversation_id;
                }
            }
        }
    })
    .await
    .expect("the group is created");

    // Delivery stalls: the first send's frames fill the inbox, the second's wait in the task.
    submit(b, OWNER_CONN, owner, send(g, "fill-1"));
    until("the inbox fills", || inbox.capacity() == 0).await;
    let begun = b.delivery.in_flight.begun();
    submit(b, OWNER_CONN, owner, send(g, "fill-2"));
    until("the second send's group begins", || {
        b.delivery.in_flight.begun() > begun
    })
    .await;
    // M, then the joiner's join: both durable, neither routed.
    submit(b, OWNER_CONN, owner, send(g, "hidden"));
    let join = v1::GroupJoin {
        conversation_id: g,
        message: String::new(),
    };
    submit(
        b,
        JOINER_WRITE_CONN,
        joiner,
        WriteRequest::Group(GroupWrite::Join(join)),
    );
    let groups = Arc::clone(&b.ports.groups);
    until("the join is durable", || {
        let mine = groups
            .groups_of_user(joiner, 0, 8)
            .expect("the store reads");
        mine.iter().any(|(_, row)| row.is_member())
    })
    .await;
    g
}

/// Every frame until the joiner's join is answered: the messages pushed to its login's
/// connection meanwhile.
async fn pushed_to_the_joiner_until_its_join_is_answered(
    events: &mut mpsc::Receiver<ShardEvent>,
) -> Vec<String> {
    let mut pushed_to_joiner = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.expect("the shard's inbox is open");
            for (to, body) in decoded_frames(event) {
                match body {
                    Body::Push(p) if to == JOINER_LOGIN_CONN => {
                        pushed_to_joiner.push(p.message.expect("a message").client_msg_id);
                    }
                    Body::GroupOk(_) if to == JOINER_WRITE_CONN => return,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("the join is answered once delivery catches up");
    pushed_to_joiner
}

#[tokio::test]
async fn a_login_while_delivery_lags_is_refused_and_never_pushed_hidden_history() {
    let dir = tempfile::tempdir().unwrap();
    let (b, mut events, inbox) = stalling_backend(dir.path());
    let (requests, rx) = mpsc::channel(16);
    tokio::spawn(Arc::clone(&b).serve(rx, std::future::pending()));
    let owner = register(&b, "owner").await;
    let joiner = register(&b, "joiner").await;

    a_hidden_message_then_a_join(&b, &mut events, &inbox, owner, joiner).await;

    let lagging = login(&requests, JOINER_LOGIN_CONN, "joiner").await;

    // Delivery catches up: every frame until the join's answer.
    let pushed_to_joiner = pushed_to_the_joiner_until_its_join_is_answered(&mut events).await;
    assert_eq!(
        pushed_to_joiner,
        Vec::<String>::new(),
        "a message from before the join, hidden from new members, was pushed to the joiner"
    );
    let Body::Error(refused) = lagging.body else {
        panic!(
            "installed before its read's commits were routed: {:?}",
            lagging.body
        )
    };
    assert_eq!(refused.code(), ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.retry_after_ms > 0, "{refused:?}");
    assert!(lagging.session.is_none());

    // Routed now: the retry logs in.
    let retried = login(&requests, JOINER_LOGIN_CONN, "joiner").await;
    assert!(
        matches!(retried.body, Body::LoginOk(_)),
        "{:?}",
        retried.body
    );
}

/// A member's session on device D is open when D logs in again (its token) while delivery
/// lags past the routed wait: the new session takes the user's groups from the old one's, so
/// it is let in without waiting, and the old connection is kicked as `REPLACED` only then.
/// (Kicked first, the old session's close could empty the user's groups online, and the login
/// was refused "delivery is behind" with the working connection already gone.)
#[tokio::test]
async fn a_relogin_on_the_same_device_while_delivery_lags_keeps_the_old_session_until_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    assert_eq!(settings.problems(), Vec::<String>::new());
    // Shard 0 holds the member's connections; shard 1's inbox, one event deep, stalls delivery.
    let (shard0, mut events) = mpsc::channel(256);
    let (shard1, _stalled) = mpsc::channel(1);
    let inbox1 = shard1.clone();
    let b = Backend::open(settings, vec![shard0, shard1]).expect("backend opens");
    b.delivery
        .in_flight
        .set_wait_max(Duration::from_millis(100));
    let (requests, rx) = mpsc::channel(16);
    tokio::spawn(Arc::clone(&b).serve(rx, std::future::pending()));
    let owner = register(&b, "owner").await;
    let create = v1::GroupCreate {
        name: "g".into(),
        join_policy: v1::JoinPolicy::Open as i32,
        ..Default::default()
    };
    submit(
        &b,
        OWNER_CONN,
        owner,
        WriteRequest::Group(GroupWrite::Create(create)),
    );
    let g = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.expect("the shard's inbox is open");
            for (_, body) in decoded_frames(event) {
                if let Body::GroupCreated(c) = body {
                    return c.group.expect("the group").conversation_id;
                }
            }
        }
    })
    .await
    .expect("the group is created");
    let device = |credential| v1::Login {
        account: Some(login::Account::Username("owner".into())),
        credential: Some(credential),
        device_id: "phone".into(),
        ..Default::default()
    };
    let (old, new) = (conn(10), conn(11));
    let first = login_with(
        &requests,
        old,
        device(login::Credential::Password(PASSWORD.into())),
    )
    .await;
    let Body::LoginOk(ok) = first.body else {
        panic!("{:?}", first.body)
    };

    // Delivery stalls on shard 1: the first send's ack fills its inbox, the second waits.
    let on_shard1 = ConnRef { shard: 1, conn: 20 };
    let writes = b.writes().expect("the sequencer runs");
    let queued = writes.submit(on_shard1, owner, &"dev".into(), 1, send(g, "fill-1"));
    assert!(matches!(queued, Submitted::Queued), "{queued:?}");
    until("shard 1's inbox fills", || inbox1.capacity() == 0).await;
    let begun = b.delivery.in_flight.begun();
    let queued = writes.submit(on_shard1, owner, &"dev".into(), 1, send(g, "fill-2"));
    assert!(matches!(queued, Submitted::Queued), "{queued:?}");
    until("the second send's group begins", || {
        b.delivery.in_flight.begun() > begun
    })
    .await;

    // The same device again, with its token; shard 0 closes what is kicked, as a shard does.
    let relogin = tokio::spawn({
        let requests = requests.clone();
        let body = device(login::Credential::Token(ok.token));
        async move { login_with(&requests, new, body).await }
    });
    let g_conv = crate::store::ConvId::from_wire(g).expect("a group id");
    let new_was_in_audience = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await.expect("the shard's inbox is open") {
                ShardEvent::Kick { conn, reason } if conn == old.conn => {
                    assert_eq!(reason, v1::KickReason::Replaced);
                    let mut listed = false;
                    b.group_online.audience(g_conv, |shard, conns| {
                        listed |= shard == 0 && conns.contains(&new.conn);
                    });
                    let closed = Request::Closed {
                        conn: old,
                        user_id: owner,
                    };
                    requests.send(closed).await.expect("backend serving");
                    return listed;
                }
                ShardEvent::Kick { conn, reason } => panic!("kicked {conn}: {reason:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the old session is kicked");
    let relogin = tokio::time::timeout(DEADLINE, relogin)
        .await
        .expect("the login is answered")
        .expect("the login task ends");
    assert!(
        matches!(relogin.body, Body::LoginOk(_)),
        "refused while the old session held the groups: {:?}",
        relogin.body
    );
    assert!(
        new_was_in_audience,
        "the old session was kicked before the new one had joined its groups"
    );
    assert_eq!(inbox1.capacity(), 0, "delivery lagged all along");
}

/// A cluster repair of the online index (another node's membership change may have been lost)
/// re-reads the groups of a user online here while delivery lags: the user joined a group
/// this node owns right after a message, both durable, neither routed. The repair installs
/// what it read only once delivery has routed what the read saw, as a login does: the message
/// from before the join is not pushed to the new member (this node routes its own groups
/// without floors).
#[tokio::test]
async fn a_repair_while_delivery_lags_never_pushes_a_new_member_earlier_messages() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rendered = recorder.handle();
    // A current-thread runtime: the repair's task records here.
    let _recording = metrics::set_default_local_recorder(&recorder);
    let dir = tempfile::tempdir().unwrap();
    // A pass that waits longer for delivery fails, and is tried again a second later.
    let (b, mut events, inbox) = stalling_backend(dir.path());
    let (requests, rx) = mpsc::channel(16);
    tokio::spawn(Arc::clone(&b).serve(rx, std::future::pending()));
    let owner = register(&b, "owner").await;
    let joiner = register(&b, "joiner").await;
    // Online, in no group yet: its (empty) groups are installed.
    let online = login(&requests, JOINER_LOGIN_CONN, "joiner").await;
    assert!(matches!(online.body, Body::LoginOk(_)), "{:?}", online.body);

    let g = a_hidden_message_then_a_join(&b, &mut events, &inbox, owner, joiner).await;

    // The repair, as a cluster node runs it, reads the joiner's groups now.
    b.group_online.set_repair_source(
        Arc::clone(&b.ports.groups),
        b.settings.groups.per_user_max as usize,
        Arc::clone(&b.delivery.in_flight),
        b.settings.backend.blocking_threads_max,
    );
    assert!(b.group_online.repair_wanted(), "no pass runs yet");
    let repair = tokio::spawn({
        let online = Arc::clone(&b.group_online);
        async move { online.repair().await }
    });
    until(
        "the repair installed what it read, or waited for delivery in vain",
        || {
            repair.is_finished()
                || metric_sum(
                    &rendered.render(),
                    "ringchat_group_online_repair_failures_total",
                ) > 0.0
        },
    )
    .await;

    // Delivery catches up: every frame until the join's answer.
    let pushed_to_joiner = pushed_to_the_joiner_until_its_join_is_answered(&mut events).await;
    tokio::time::timeout(DEADLINE, repair)
        .await
        .expect("the repair ends once delivery has caught up")
        .expect("the repair task ends");
    assert_eq!(
        pushed_to_joiner,
        Vec::<String>::new(),
        "a message from before the join, hidden from new members, was pushed to the joiner"
    );
    let g = crate::store::ConvId::from_wire(g).expect("a group id");
    assert!(
        b.group_online.is_online_member(g, joiner),
        "the new member is in the group's audience"
    );
}

//! Presence over the real server: a user's state aggregated over their devices, pushed to online
//! friends only (never to strangers or blocked users), coalesced when a connection flaps, last
//! seen (hidden on request), and the snapshot in `ListFriends`.

mod common;

use common::TestServer;
use common::contacts::*;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, PresenceState as P};

/// A request answered through the same inbox as pushes: every push queued for `c` before it
/// arrives first. Returns the Presence pushes among them.
async fn presence_so_far(c: &mut Client) -> Vec<v1::Presence> {
    list_friends(c, 0, 1).await;
    let mut out = Vec::new();
    while c.pending_events() > 0 {
        if let Some(Body::Presence(p)) = c.next_event().await.unwrap().unwrap().body {
            out.push(p);
        }
    }
    out
}

fn quiet(ms: &str) -> TestServer {
    TestServer::start(&[("PRESENCE__QUIET_PERIOD_MS", ms)])
}

#[tokio::test]
async fn a_user_is_shown_the_most_present_state_of_their_devices() {
    let server = quiet("0");
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    drop(a);
    let me = alice.user_id;
    expect_presence(&mut b, me, P::Offline).await;

    let mut phone = device_with_presence(&server, "alice", "phone", P::Away).await;
    expect_presence(&mut b, me, P::Away).await;
    let mut desktop = device_with_presence(&server, "alice", "desktop", P::Online).await;
    expect_presence(&mut b, me, P::Online).await;
    assert_eq!(set_presence(&mut desktop, P::Busy).await, P::Busy);
    expect_presence(&mut b, me, P::Busy).await;
    // An invisible device changes nothing friends see.
    let mut web = device_with_presence(&server, "alice", "web", P::Invisible).await;
    assert_eq!(set_presence(&mut web, P::Invisible).await, P::Busy);
    assert_eq!(presence_so_far(&mut b).await, vec![]);
    // Neither does one that logs in asking for OFFLINE: it is invisible, never shown online.
    let mut hiding = device_with_presence(&server, "alice", "hiding", P::Offline).await;
    assert_eq!(set_presence(&mut hiding, P::Invisible).await, P::Busy);
    assert_eq!(presence_so_far(&mut b).await, vec![]);
    drop(hiding);

    drop(desktop);
    expect_presence(&mut b, me, P::Away).await;
    assert_eq!(set_presence(&mut phone, P::Online).await, P::Online);
    expect_presence(&mut b, me, P::Online).await;
    drop(phone);
    // Only the invisible device is left: offline, last seen when the phone left.
    let gone = expect_presence(&mut b, me, P::Offline).await;
    assert!(gone.last_seen_ms > 0, "{gone:?}");
    let listed = list_friends(&mut b, 0, 10).await;
    let snapshot = listed.friends[0].presence.expect("presence");
    assert_eq!(
        (snapshot.state(), snapshot.last_seen_ms),
        (P::Offline, gone.last_seen_ms)
    );

    // Hiding last seen: the state is still shown, the time is not.
    let hide = v1::UpdateProfile {
        hide_last_seen: Some(true),
        ..Default::default()
    };
    match ask(&mut web, Body::UpdateProfile(hide)).await {
        Body::Profile(p) => assert!(p.hide_last_seen),
        other => panic!("expected Profile, got {other:?}"),
    }
    let listed = list_friends(&mut b, 0, 10).await;
    let snapshot = listed.friends[0].presence.expect("presence");
    assert_eq!((snapshot.state(), snapshot.last_seen_ms), (P::Offline, 0));
    assert_eq!(set_presence(&mut web, P::Away).await, P::Away);
    expect_presence(&mut b, me, P::Away).await;
    drop(web);
    let gone = expect_presence(&mut b, me, P::Offline).await;
    assert_eq!(gone.last_seen_ms, 0, "hidden");
}

#[tokio::test]
async fn presence_reaches_online_friends_only_and_never_a_blocked_user() {
    let server = quiet("0");
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (mut c, _) = server.user("carol").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    // Carol asked and was not answered: no friend either.
    friend_ok(
        request(&mut c, alice.user_id, "hi").await,
        alice.user_id,
        v1::FriendState::RequestSent,
    );
    let me = alice.user_id;

    assert_eq!(set_presence(&mut a, P::Busy).await, P::Busy);
    expect_presence(&mut b, me, P::Busy).await;
    assert_eq!(presence_so_far(&mut c).await, vec![], "carol is no friend");
    let listed = list_friends(&mut b, 0, 10).await;
    assert_eq!(
        listed.friends[0].presence.as_ref().map(|p| p.state()),
        Some(P::Busy)
    );

    // Bob blocks Alice: the friendship ends and her presence no longer reaches him.
    block(&mut b, me).await;
    assert_eq!(set_presence(&mut a, P::Online).await, P::Online);
    assert_eq!(set_presence(&mut a, P::Away).await, P::Away);
    assert_eq!(presence_so_far(&mut b).await, vec![], "blocked");
    assert_eq!(list_friends(&mut b, 0, 10).await.friends.len(), 0);
}

#[tokio::test]
async fn a_flapping_connection_does_not_flood_friends() {
    // Long enough for the reconnects below even on a loaded machine.
    let server = quiet("3000");
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    befriend(&mut a, alice.user_id, &mut b, bob.user_id).await;
    let me = alice.user_id;
    // Alice has been online all along (pushed at login, before the friendship): bob's list
    // says so.
    let listed = list_friends(&mut b, 0, 10).await;
    assert_eq!(
        listed.friends[0].presence.as_ref().map(|p| p.state()),
        Some(P::Online)
    );
    // Her connection drops and comes back three times, then drops for good.
    drop(a);
    for _ in 0..3 {
        let again = device_with_presence(&server, "alice", "alice-dev1", P::Online).await;
        drop(again);
    }
    // Bob is told once, after the quiet period: offline.
    let p = next_presence(&mut b).await;
    assert_eq!((p.user_id, p.state()), (me, P::Offline), "{p:?}");
    assert_eq!(presence_so_far(&mut b).await, vec![]);
}

#[tokio::test]
async fn set_presence_takes_device_states_only() {
    let server = quiet("0");
    let (mut a, _) = server.user("alice").await;
    for bad in [P::Offline, P::Unspecified] {
        let reply = ask(
            &mut a,
            Body::SetPresence(v1::SetPresence { state: bad.into() }),
        )
        .await;
        assert_eq!(code(reply), ErrorCode::InvalidArgument);
    }
    let reply = ask(&mut a, Body::SetPresence(v1::SetPresence { state: 99 })).await;
    assert_eq!(code(reply), ErrorCode::InvalidArgument);
    assert_eq!(set_presence(&mut a, P::Away).await, P::Away);
}

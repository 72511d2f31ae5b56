//! Helpers for the contacts tests: requests by body, expected replies, friend events, and a
//! sync point that shows what a connection got from earlier commit groups.

use ringchat_bench::client::{Client, conversation_id};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, FriendEventKind, FriendState};

/// Sends a request and returns its reply body.
pub async fn ask(c: &mut Client, body: Body) -> Body {
    c.request(body).await.expect("a reply")
}

/// The error code of a reply, panicking if it is no error.
pub fn code(reply: Body) -> ErrorCode {
    match reply {
        Body::Error(e) => ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The error of a reply, panicking if it is no error.
pub fn error(reply: Body) -> v1::Error {
    match reply {
        Body::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub async fn request(c: &mut Client, to: u64, message: &str) -> Body {
    ask(
        c,
        Body::FriendRequest(v1::FriendRequest {
            user_id: to,
            message: message.into(),
        }),
    )
    .await
}

pub async fn respond(c: &mut Client, to: u64, accept: bool) -> Body {
    ask(
        c,
        Body::FriendRespond(v1::FriendRespond {
            user_id: to,
            accept,
        }),
    )
    .await
}

pub async fn cancel(c: &mut Client, to: u64) -> Body {
    ask(c, Body::FriendCancel(v1::FriendCancel { user_id: to })).await
}

pub async fn delete(c: &mut Client, to: u64) -> Body {
    ask(c, Body::FriendDelete(v1::FriendDelete { user_id: to })).await
}

pub async fn block(c: &mut Client, who: u64) -> Body {
    ask(c, Body::Block(v1::Block { user_id: who })).await
}

pub async fn unblock(c: &mut Client, who: u64) -> Body {
    ask(c, Body::Unblock(v1::Unblock { user_id: who })).await
}

/// Asserts a `FriendOk` with this state.
pub fn friend_ok(reply: Body, user_id: u64, state: FriendState) {
    match reply {
        Body::FriendOk(ok) => {
            assert_eq!(ok.user_id, user_id);
            assert_eq!(ok.state(), state, "{ok:?}");
        }
        other => panic!("expected FriendOk({state:?}), got {other:?}"),
    }
}

/// Befriends two logged-in users: `a` asks, `b` accepts (events are left to the caller).
pub async fn befriend(a: &mut Client, a_id: u64, b: &mut Client, b_id: u64) {
    friend_ok(request(a, b_id, "").await, b_id, FriendState::RequestSent);
    friend_ok(respond(b, a_id, true).await, a_id, FriendState::Friends);
}

/// The next frame the server sent on its own, which must be a `FriendEvent`.
pub async fn friend_event(c: &mut Client) -> v1::FriendEvent {
    let frame = c.next_event().await.expect("a frame").expect("open");
    match frame.body {
        Some(Body::FriendEvent(e)) => e,
        other => panic!("expected a FriendEvent, got {other:?}"),
    }
}

/// Asserts the next event's kind, other user and state; returns it.
pub async fn expect_event(
    c: &mut Client,
    kind: FriendEventKind,
    about: u64,
    state: FriendState,
) -> v1::FriendEvent {
    let e = friend_event(c).await;
    assert_eq!(
        (e.kind(), e.user_id, e.state()),
        (kind, about, state),
        "{e:?}"
    );
    assert_eq!(e.profile.as_ref().map(|p| p.user_id), Some(about));
    e
}

/// Waits until everything earlier commit groups sent this connection has arrived, and returns
/// those frames: a `Read` goes through the sequencer like every contacts write, and its answer
/// leaves after the frames of every group committed before it.
pub async fn sync_point(c: &mut Client, me: u64, peer: u64) -> Vec<v1::frame::Body> {
    let conv = conversation_id(me, peer);
    c.read(conv, 0).await.expect("CursorOk");
    let mut before = Vec::new();
    while c.pending_events() > 0 {
        let frame = c.next_event().await.unwrap().unwrap();
        before.extend(frame.body);
    }
    before
}

pub async fn list_requests(
    c: &mut Client,
    direction: v1::RequestDirection,
    after: u64,
    limit: u32,
) -> v1::FriendRequestList {
    match ask(
        c,
        Body::ListFriendRequests(v1::ListFriendRequests {
            direction: direction as i32,
            after_user_id: after,
            limit,
        }),
    )
    .await
    {
        Body::FriendRequestList(l) => l,
        other => panic!("expected FriendRequestList, got {other:?}"),
    }
}

pub async fn list_friends(c: &mut Client, after: u64, limit: u32) -> v1::FriendList {
    match ask(
        c,
        Body::ListFriends(v1::ListFriends {
            after_user_id: after,
            limit,
        }),
    )
    .await
    {
        Body::FriendList(l) => l,
        other => panic!("expected FriendList, got {other:?}"),
    }
}

pub async fn list_blocks(c: &mut Client, after: u64, limit: u32) -> v1::BlockList {
    match ask(
        c,
        Body::ListBlocks(v1::ListBlocks {
            after_user_id: after,
            limit,
        }),
    )
    .await
    {
        Body::BlockList(l) => l,
        other => panic!("expected BlockList, got {other:?}"),
    }
}

pub fn friend_ids(list: &v1::FriendList) -> Vec<u64> {
    list.friends
        .iter()
        .map(|f| f.profile.as_ref().unwrap().user_id)
        .collect()
}

pub fn request_ids(list: &v1::FriendRequestList) -> Vec<u64> {
    list.requests
        .iter()
        .map(|r| r.profile.as_ref().unwrap().user_id)
        .collect()
}

pub async fn get_profiles(c: &mut Client, ids: &[u64]) -> Body {
    ask(
        c,
        Body::GetProfiles(v1::GetProfiles {
            user_ids: ids.to_vec(),
        }),
    )
    .await
}

/// The profiles a GetProfiles returned, panicking on an error.
pub async fn profiles(c: &mut Client, ids: &[u64]) -> Vec<v1::Profile> {
    match get_profiles(c, ids).await {
        Body::ProfileList(l) => l.profiles,
        other => panic!("expected ProfileList, got {other:?}"),
    }
}

pub async fn search(
    c: &mut Client,
    query: v1::search_users::Query,
    after: &str,
    limit: u32,
) -> Body {
    ask(
        c,
        Body::SearchUsers(v1::SearchUsers {
            query: Some(query),
            after: after.into(),
            limit,
        }),
    )
    .await
}

pub fn users(reply: Body) -> v1::UserList {
    match reply {
        Body::UserList(l) => l,
        other => panic!("expected UserList, got {other:?}"),
    }
}

pub async fn set_privacy(c: &mut Client, policy: v1::DmPolicy) -> Body {
    ask(
        c,
        Body::SetPrivacy(v1::SetPrivacy {
            dm_policy: policy as i32,
        }),
    )
    .await
}

/// Logs a device of an existing user (password `super::PASSWORD`) in with an initial presence.
pub async fn device_with_presence(
    server: &super::TestServer,
    name: &str,
    device: &str,
    presence: v1::PresenceState,
) -> Client {
    use ringchat_proto::v1::login;
    let mut c = Client::connect(server.tcp).await.unwrap();
    c.hello().await.unwrap();
    c.login(v1::Login {
        account: Some(login::Account::Username(name.into())),
        credential: Some(login::Credential::Password(super::PASSWORD.into())),
        device_id: device.into(),
        platform: v1::Platform::Desktop as i32,
        presence: presence.into(),
        resume: None,
    })
    .await
    .unwrap()
    .expect("login");
    c
}

/// The next `Presence` push, skipping friend events and Sync hints (a cluster node that lost
/// a link tells its sessions to catch up); within `super::WAIT_DEADLINE`.
pub async fn next_presence(c: &mut Client) -> v1::Presence {
    let wait = async {
        loop {
            let frame = c.next_event_untimed().await.unwrap().expect("open");
            match frame.body {
                Some(Body::Presence(p)) => return p,
                Some(Body::FriendEvent(_) | Body::SyncNeeded(_)) => {}
                other => panic!("expected a Presence push, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(super::WAIT_DEADLINE, wait)
        .await
        .expect("a Presence push in time")
}

/// The next `Presence` push, which must say `user` is now `state`.
pub async fn expect_presence(c: &mut Client, user: u64, state: v1::PresenceState) -> v1::Presence {
    let p = next_presence(c).await;
    assert_eq!((p.user_id, p.state()), (user, state), "{p:?}");
    p
}

/// Sets this device's presence; returns the state its user is now shown in.
pub async fn set_presence(c: &mut Client, state: v1::PresenceState) -> v1::PresenceState {
    match ask(
        c,
        Body::SetPresence(v1::SetPresence {
            state: state.into(),
        }),
    )
    .await
    {
        Body::SetPresenceOk(ok) => ok.shown(),
        other => panic!("expected SetPresenceOk, got {other:?}"),
    }
}

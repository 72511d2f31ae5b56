//! Friends over the real server: requests, answers, cancels and deletes seen from both sides and
//! every device, offline users, mutual requests, limits and paging.

mod common;

use common::TestServer;
use common::contacts::*;
use ringchat_proto::Body;
use ringchat_proto::v1::{
    ErrorCode, FriendEventKind as Kind, FriendState as State, RequestDirection,
};

#[tokio::test]
async fn a_request_waits_for_an_offline_user_and_reaches_every_device_of_both() {
    let mut server = TestServer::start(&[]);
    let (mut a1, alice) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-laptop").await;
    let bob = server.user("bob").await.1; // offline from here on
    friend_ok(
        request(&mut a1, bob.user_id, "hi, it's Alice").await,
        bob.user_id,
        State::RequestSent,
    );
    // The sender's other device sees it, with the recipient's name; the asking one gets no event.
    let e = expect_event(&mut a2, Kind::Request, bob.user_id, State::RequestSent).await;
    assert_eq!(e.message, "hi, it's Alice");
    assert_eq!(e.profile.unwrap().username, "bob");
    assert!(
        sync_point(&mut a1, alice.user_id, bob.user_id)
            .await
            .is_empty()
    );
    drop((a1, a2));

    // Stored: still there for Bob after a restart.
    server.stop();
    server.restart();
    let (mut b1, _) = server.device("bob", "bob-phone").await;
    let (mut b2, _) = server.device("bob", "bob-laptop").await;
    let incoming = list_requests(&mut b1, RequestDirection::Incoming, 0, 0).await;
    assert_eq!(request_ids(&incoming), [alice.user_id]);
    let r = &incoming.requests[0];
    assert!(r.incoming);
    assert_eq!(r.message, "hi, it's Alice");
    assert!(r.sent_at_ms > 0);
    let p = r.profile.as_ref().unwrap();
    assert_eq!(
        (p.username.as_str(), p.friend_state()),
        ("alice", State::RequestReceived)
    );
    assert!(
        list_requests(&mut b1, RequestDirection::Outgoing, 0, 0)
            .await
            .requests
            .is_empty()
    );

    let (mut a1, _) = server.device("alice", "alice-dev1").await;
    let (mut a2, _) = server.device("alice", "alice-laptop").await;
    let outgoing = list_requests(&mut a1, RequestDirection::Outgoing, 0, 0).await;
    assert_eq!(request_ids(&outgoing), [bob.user_id]);
    assert!(!outgoing.requests[0].incoming);

    // Bob accepts on one device: both of Alice's and Bob's other one hear of it.
    friend_ok(
        respond(&mut b1, alice.user_id, true).await,
        alice.user_id,
        State::Friends,
    );
    for a in [&mut a1, &mut a2] {
        let e = expect_event(a, Kind::Accepted, bob.user_id, State::Friends).await;
        assert_eq!(e.profile.unwrap().username, "bob");
    }
    expect_event(&mut b2, Kind::Accepted, alice.user_id, State::Friends).await;
    assert!(
        sync_point(&mut b1, bob.user_id, alice.user_id)
            .await
            .is_empty()
    );

    let friends = list_friends(&mut a1, 0, 0).await;
    assert_eq!(friend_ids(&friends), [bob.user_id]);
    assert!(friends.friends[0].since_ms > 0);
    assert_eq!(
        friends.friends[0].profile.as_ref().unwrap().friend_state(),
        State::Friends
    );
    assert_eq!(
        friend_ids(&list_friends(&mut b2, 0, 0).await),
        [alice.user_id]
    );
    assert!(
        list_requests(&mut a1, RequestDirection::Outgoing, 0, 0)
            .await
            .requests
            .is_empty()
    );
    assert!(
        list_requests(&mut b1, RequestDirection::Incoming, 0, 0)
            .await
            .requests
            .is_empty()
    );
}

#[tokio::test]
async fn reject_cancel_and_delete_are_told_to_both_sides() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);

    // Rejected.
    friend_ok(request(&mut a, b_id, "").await, b_id, State::RequestSent);
    expect_event(&mut b, Kind::Request, a_id, State::RequestReceived).await;
    friend_ok(respond(&mut b, a_id, false).await, a_id, State::None);
    expect_event(&mut a, Kind::Rejected, b_id, State::None).await;
    assert!(
        list_requests(&mut a, RequestDirection::Outgoing, 0, 0)
            .await
            .requests
            .is_empty()
    );
    assert_eq!(code(respond(&mut b, a_id, true).await), ErrorCode::NotFound);

    // The rejected sender may not ask again for a while (each request is an event on the
    // target's devices); the one who rejected may still ask.
    let again = request(&mut a, b_id, "again").await;
    match &again {
        Body::Error(e) => assert!(
            e.code() == ErrorCode::RateLimited && e.retry_after_ms > 3_600_000,
            "{e:?}"
        ),
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
    assert!(
        sync_point(&mut b, b_id, a_id).await.is_empty(),
        "B not told"
    );

    // Asked the other way, then cancelled.
    friend_ok(
        request(&mut b, a_id, "again").await,
        a_id,
        State::RequestSent,
    );
    let e = expect_event(&mut a, Kind::Request, b_id, State::RequestReceived).await;
    assert_eq!(e.message, "again");
    friend_ok(cancel(&mut b, a_id).await, a_id, State::None);
    expect_event(&mut a, Kind::Cancelled, b_id, State::None).await;
    assert!(
        list_requests(&mut a, RequestDirection::Incoming, 0, 0)
            .await
            .requests
            .is_empty()
    );
    assert_eq!(code(cancel(&mut b, a_id).await), ErrorCode::NotFound);
    assert_eq!(
        code(respond(&mut a, b_id, true).await),
        ErrorCode::NotFound,
        "a cancelled request cannot be accepted"
    );
    // Only the one who asked can cancel.
    assert_eq!(code(cancel(&mut a, b_id).await), ErrorCode::NotFound);

    // Friends, then deleted by the other side.
    befriend(&mut b, b_id, &mut a, a_id).await;
    expect_event(&mut a, Kind::Request, b_id, State::RequestReceived).await;
    expect_event(&mut b, Kind::Accepted, a_id, State::Friends).await;
    friend_ok(delete(&mut b, a_id).await, a_id, State::None);
    expect_event(&mut a, Kind::Deleted, b_id, State::None).await;
    assert!(list_friends(&mut a, 0, 0).await.friends.is_empty());
    assert!(list_friends(&mut b, 0, 0).await.friends.is_empty());
    assert_eq!(code(delete(&mut a, b_id).await), ErrorCode::NotFound);
    assert!(sync_point(&mut a, a_id, b_id).await.is_empty());
    assert!(sync_point(&mut b, b_id, a_id).await.is_empty());
}

#[tokio::test]
async fn mutual_requests_become_a_friendship_and_repeats_change_nothing() {
    let server = TestServer::start(&[]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (a_id, b_id) = (alice.user_id, bob.user_id);
    friend_ok(
        request(&mut a, b_id, "first").await,
        b_id,
        State::RequestSent,
    );
    // Asking twice: the same answer, and Bob is told once.
    friend_ok(
        request(&mut a, b_id, "second").await,
        b_id,
        State::RequestSent,
    );
    let e = expect_event(&mut b, Kind::Request, a_id, State::RequestReceived).await;
    assert_eq!(e.message, "first");
    assert!(sync_point(&mut b, b_id, a_id).await.is_empty(), "told once");
    // Bob asks back: that is a yes.
    friend_ok(request(&mut b, a_id, "").await, a_id, State::Friends);
    expect_event(&mut a, Kind::Accepted, b_id, State::Friends).await;
    friend_ok(request(&mut a, b_id, "").await, b_id, State::Friends);
    assert_eq!(friend_ids(&list_friends(&mut a, 0, 0).await), [b_id]);
    assert!(
        list_requests(&mut a, RequestDirection::Outgoing, 0, 0)
            .await
            .requests
            .is_empty()
    );
    assert!(
        list_requests(&mut b, RequestDirection::Incoming, 0, 0)
            .await
            .requests
            .is_empty()
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = TestServer::start(&[("CONTACTS__FRIEND_REQUEST_MESSAGE_BYTES_MAX", "8")]);
    let (mut a, alice) = server.user("alice").await;
    let bob = server.user("bob").await.1;
    assert_eq!(
        code(request(&mut a, alice.user_id, "").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(request(&mut a, 5, "").await), ErrorCode::UserNotFound);
    assert_eq!(
        code(request(&mut a, 999_999_999, "").await),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(request(&mut a, bob.user_id, "123456789").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(request(&mut a, bob.user_id, "a\u{7}").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(respond(&mut a, 999_999_999, true).await),
        ErrorCode::NotFound
    );
    friend_ok(
        request(&mut a, bob.user_id, "12345678").await,
        bob.user_id,
        State::RequestSent,
    );
    // Before login, none of it.
    let mut anon = server.client().await;
    anon.hello().await.unwrap();
    assert_eq!(
        code(request(&mut anon, bob.user_id, "").await),
        ErrorCode::NotAuthenticated
    );
    assert_eq!(
        code(ask(&mut anon, Body::ListFriends(Default::default())).await),
        ErrorCode::NotAuthenticated
    );
}

#[tokio::test]
async fn every_friend_limit_is_answered_with_its_code() {
    let server = TestServer::start(&[
        ("CONTACTS__FRIENDS_MAX", "1"),
        ("CONTACTS__FRIEND_REQUESTS_PENDING_MAX", "2"),
        ("CONTACTS__FRIEND_REQUESTS_RECEIVED_MAX", "2"),
        ("CONTACTS__FRIEND_REQUESTS_PER_DAY_MAX", "3"),
    ]);
    let mut ids = std::collections::HashMap::new();
    let mut clients = std::collections::HashMap::new();
    for name in ["aa", "bb", "cc", "dd", "ee", "xx", "yy", "zz", "ww"] {
        let (c, ok) = server.user(&format!("{name}-user")).await;
        ids.insert(name, ok.user_id);
        clients.insert(name, c);
    }
    let mut c = |n: &str| clients.remove(n).unwrap();
    let (mut aa, mut bb, mut zz) = (c("aa"), c("bb"), c("zz"));
    let (mut xx, mut yy, mut ww) = (c("xx"), c("yy"), c("ww"));

    // Pending sent: two at most.
    friend_ok(
        request(&mut aa, ids["bb"], "").await,
        ids["bb"],
        State::RequestSent,
    );
    friend_ok(
        request(&mut aa, ids["cc"], "").await,
        ids["cc"],
        State::RequestSent,
    );
    let e = error(request(&mut aa, ids["dd"], "").await);
    assert_eq!(e.code(), ErrorCode::TooManyFriendRequests, "{e:?}");
    // Per day: three; a cancel does not give one back.
    friend_ok(cancel(&mut aa, ids["cc"]).await, ids["cc"], State::None);
    friend_ok(
        request(&mut aa, ids["dd"], "").await,
        ids["dd"],
        State::RequestSent,
    );
    friend_ok(cancel(&mut aa, ids["dd"]).await, ids["dd"], State::None);
    let e = error(request(&mut aa, ids["ee"], "").await);
    assert_eq!(e.code(), ErrorCode::RateLimited, "{e:?}");
    assert!(
        e.retry_after_ms > 0 && e.retry_after_ms <= 86_400_000,
        "{e:?}"
    );

    // Pending received: two at most, then the next sender is refused.
    friend_ok(
        request(&mut xx, ids["zz"], "").await,
        ids["zz"],
        State::RequestSent,
    );
    friend_ok(
        request(&mut yy, ids["zz"], "").await,
        ids["zz"],
        State::RequestSent,
    );
    assert_eq!(
        code(request(&mut ww, ids["zz"], "").await),
        ErrorCode::TooManyFriendRequests
    );

    // Friends: one each. Accepting a second is refused, for either side's list.
    friend_ok(
        respond(&mut bb, ids["aa"], true).await,
        ids["aa"],
        State::Friends,
    );
    friend_ok(
        respond(&mut zz, ids["xx"], true).await,
        ids["xx"],
        State::Friends,
    );
    assert_eq!(
        code(respond(&mut zz, ids["yy"], true).await),
        ErrorCode::TooManyFriends
    );
    // A full list refuses before asking (checked before the day's count, which aa has used).
    assert_eq!(
        code(request(&mut aa, ids["ww"], "").await),
        ErrorCode::TooManyFriends
    );
    // The refused answer left the request in place.
    assert_eq!(
        request_ids(&list_requests(&mut zz, RequestDirection::Incoming, 0, 0).await),
        [ids["yy"]]
    );
}

#[tokio::test]
async fn friends_and_requests_are_listed_in_pages() {
    let server = TestServer::start(&[("CONTACTS__LIST_PAGE_MAX", "2")]);
    let (mut hub, h) = server.user("hub").await;
    let mut askers = Vec::new();
    for i in 0..5 {
        let (mut c, ok) = server.user(&format!("asker{i}")).await;
        friend_ok(
            request(&mut c, h.user_id, &format!("m{i}")).await,
            h.user_id,
            State::RequestSent,
        );
        askers.push(ok.user_id);
    }
    askers.sort_unstable();
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        // A limit over the server's page is clamped.
        let page = list_requests(&mut hub, RequestDirection::Incoming, after, 100).await;
        assert!(page.requests.len() <= 2);
        pages += 1;
        seen.extend(request_ids(&page));
        after = *seen.last().unwrap_or(&0);
        if !page.has_more {
            break;
        }
    }
    assert_eq!((seen.clone(), pages), (askers.clone(), 3));
    let past_the_end = list_requests(&mut hub, RequestDirection::Incoming, after, 0).await;
    assert!(past_the_end.requests.is_empty() && !past_the_end.has_more);
    for id in &askers {
        friend_ok(respond(&mut hub, *id, true).await, *id, State::Friends);
    }
    let first = list_friends(&mut hub, 0, 1).await;
    assert_eq!(
        (friend_ids(&first), first.has_more),
        (askers[..1].to_vec(), true)
    );
    let next = list_friends(&mut hub, askers[0], 0).await;
    assert_eq!(
        (friend_ids(&next), next.has_more),
        (askers[1..3].to_vec(), true)
    );
    let last = list_friends(&mut hub, askers[2], 2).await;
    assert_eq!(
        (friend_ids(&last), last.has_more),
        (askers[3..].to_vec(), false)
    );
}

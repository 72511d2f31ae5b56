//! Profiles and search over the real server: updates by their owner, names instead of ids,
//! non-searchable users never listed, paging and rate limits.

mod common;

use common::TestServer;
use common::contacts::*;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, FriendState as State, search_users::Query};

async fn update(c: &mut ringchat_bench::client::Client, u: v1::UpdateProfile) -> Body {
    ask(c, Body::UpdateProfile(u)).await
}

fn profile(reply: Body) -> v1::Profile {
    match reply {
        Body::Profile(p) => p,
        other => panic!("expected Profile, got {other:?}"),
    }
}

fn names(list: &v1::UserList) -> Vec<&str> {
    list.users.iter().map(|u| u.username.as_str()).collect()
}

#[tokio::test]
async fn a_profile_is_changed_by_its_owner_field_by_field_and_shown_by_name() {
    let server = TestServer::start(&[
        ("CONTACTS__NICKNAME_BYTES_MAX", "16"),
        ("CONTACTS__BIO_BYTES_MAX", "32"),
    ]);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, _) = server.user("bob").await;
    let p = profile(
        update(
            &mut a,
            v1::UpdateProfile {
                nickname: Some("Älice 🌸".into()),
                avatar_url: Some("https://example.com/a.png".into()),
                bio: Some("line one\nline two".into()),
                searchable: None,
                hide_last_seen: None,
            },
        )
        .await,
    );
    assert_eq!(
        (p.username.as_str(), p.nickname.as_str()),
        ("alice", "Älice 🌸")
    );
    // Only the fields sent change.
    let p = profile(
        update(
            &mut a,
            v1::UpdateProfile {
                bio: Some(String::new()),
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(
        (p.nickname.as_str(), p.avatar_url.as_str(), p.bio.as_str()),
        ("Älice 🌸", "https://example.com/a.png", "")
    );
    let seen = profiles(&mut b, &[alice.user_id, alice.user_id, 999_999_999]).await;
    assert_eq!(seen.len(), 1, "duplicates once, unknown ids left out");
    assert_eq!(
        (seen[0].username.as_str(), seen[0].nickname.as_str()),
        ("alice", "Älice 🌸")
    );
    assert_eq!(
        seen[0].dm_policy(),
        v1::DmPolicy::Unspecified,
        "another user's policy is not shown"
    );
    assert_eq!(seen[0].friend_state(), State::None);

    for bad in [
        v1::UpdateProfile {
            nickname: Some("x".repeat(17)),
            ..Default::default()
        },
        v1::UpdateProfile {
            nickname: Some("tab\there".into()),
            ..Default::default()
        },
        v1::UpdateProfile {
            avatar_url: Some("javascript:alert(1)".into()),
            ..Default::default()
        },
        v1::UpdateProfile {
            avatar_url: Some("https://a b".into()),
            ..Default::default()
        },
        v1::UpdateProfile {
            bio: Some("y".repeat(33)),
            ..Default::default()
        },
    ] {
        assert_eq!(
            code(update(&mut a, bad.clone()).await),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        profiles(&mut a, &[alice.user_id]).await[0].nickname,
        "Älice 🌸",
        "a refused update changes nothing"
    );
    let too_many: Vec<u64> = (0..101).map(|i| 100_000_000 + i).collect();
    assert_eq!(
        code(get_profiles(&mut b, &too_many).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn search_never_lists_users_who_are_not_searchable() {
    let server = TestServer::start(&[]);
    let (mut me, viewer) = server.user("viewer").await;
    let (_, ann) = server.user("Ann").await;
    let (_, anna) = server.user("anna").await;
    let (mut hidden, annie) = server.user("annie").await;
    server.user("bob").await;
    let p = profile(
        update(
            &mut hidden,
            v1::UpdateProfile {
                searchable: Some(false),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(!p.searchable);

    let found = users(search(&mut me, Query::UsernamePrefix("ANN".into()), "", 0).await);
    assert_eq!(names(&found), ["Ann", "anna"]);
    assert!(!found.has_more);
    // By exact id: the searchable ones, never the hidden one, who is not there for GetProfiles either.
    assert_eq!(
        names(&users(
            search(&mut me, Query::UserId(ann.user_id), "", 0).await
        )),
        ["Ann"]
    );
    assert!(
        users(search(&mut me, Query::UserId(annie.user_id), "", 0).await)
            .users
            .is_empty()
    );
    assert!(
        profiles(&mut me, &[annie.user_id, anna.user_id])
            .await
            .iter()
            .all(|p| p.user_id != annie.user_id)
    );
    // The e-mail index comes with the accounts work: no address is found yet, none leaks.
    assert!(
        users(search(&mut me, Query::Email("annie@example.com".into()), "", 0).await)
            .users
            .is_empty()
    );

    // Once they are friends, the exact id finds her; the prefix search still does not list her.
    befriend(&mut hidden, annie.user_id, &mut me, viewer.user_id).await;
    let by_id = users(search(&mut me, Query::UserId(annie.user_id), "", 0).await);
    assert_eq!(names(&by_id), ["annie"]);
    assert_eq!(by_id.users[0].friend_state(), State::Friends);
    assert_eq!(profiles(&mut me, &[annie.user_id]).await.len(), 1);
    assert_eq!(
        names(&users(
            search(&mut me, Query::UsernamePrefix("ann".into()), "", 0).await
        )),
        ["Ann", "anna"]
    );
    // She sees herself.
    assert_eq!(profiles(&mut hidden, &[annie.user_id]).await.len(), 1);

    // A hidden user who writes to someone is shown to them by name.
    let (mut quiet, q) = server.user("quiet").await;
    update(
        &mut quiet,
        v1::UpdateProfile {
            searchable: Some(false),
            ..Default::default()
        },
    )
    .await;
    let (mut reader, _) = server.user("reader").await;
    assert!(profiles(&mut reader, &[q.user_id]).await.is_empty());
    assert!(
        profiles(&mut quiet, &[]).await.is_empty(),
        "no ids: an empty answer"
    );
    let r = users(search(&mut quiet, Query::UsernamePrefix("reader".into()), "", 0).await).users[0]
        .user_id;
    quiet.send_text(r, "q1", "hello").await.unwrap().unwrap();
    assert_eq!(
        profiles(&mut reader, &[q.user_id]).await[0].username,
        "quiet"
    );

    // What a viewer does alone shows a hidden user to nobody: a message, a request, a block
    // (which used to show the profile to whoever blocked, and costs nothing to undo).
    let (mut snoop, _) = server.user("snoop").await;
    snoop
        .send_text(q.user_id, "s1", "hi")
        .await
        .unwrap()
        .unwrap();
    friend_ok(
        request(&mut snoop, q.user_id, "").await,
        q.user_id,
        State::RequestSent,
    );
    assert!(profiles(&mut snoop, &[q.user_id]).await.is_empty());
    match block(&mut snoop, q.user_id).await {
        Body::BlockOk(ok) => assert!(ok.blocked),
        other => panic!("{other:?}"),
    }
    assert!(profiles(&mut snoop, &[q.user_id]).await.is_empty());
    let blocks = list_blocks(&mut snoop, 0, 0).await;
    let shown = blocks.users[0].profile.clone().unwrap();
    assert_eq!(shown.user_id, q.user_id);
    assert!(shown.username.is_empty(), "by id only: {shown:?}");
}

#[tokio::test]
async fn search_pages_by_cursor_and_is_rate_limited() {
    let server = TestServer::start(&[
        ("CONTACTS__SEARCH_PAGE_MAX", "2"),
        ("CONTACTS__SEARCHES_PER_MIN_MAX", "6"),
        ("CONTACTS__PROFILES_PER_MIN_MAX", "3"),
    ]);
    let (mut me, _) = server.user("viewer").await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(server.user(&format!("page{i}")).await.1.user_id);
    }
    server.user("pager").await;
    server.user("zzz").await;
    // The budgets are per clock minute: start well inside one, so that the refusals below are
    // not passed by a fresh minute.
    common::clock::inside_one_clock_minute(std::time::Duration::from_secs(10)).await;
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        // A limit over the server's page is clamped.
        let page = users(search(&mut me, Query::UsernamePrefix("PAGE".into()), &after, 50).await);
        pages += 1;
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|u| u.username.clone()));
        if !page.has_more {
            assert!(page.next_after.is_empty());
            break;
        }
        after = page.next_after;
    }
    assert_eq!(seen, ["page1", "page2", "page3", "page4", "page5", "pager"]);
    assert_eq!(pages, 3);
    assert_eq!(
        code(search(&mut me, Query::UsernamePrefix(String::new()), "", 0).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(ask(&mut me, Body::SearchUsers(v1::SearchUsers::default())).await),
        ErrorCode::InvalidArgument
    );
    // Three searches so far (the refused ones cost nothing); three more, then the limit.
    for _ in 0..3 {
        users(search(&mut me, Query::UserId(ids[0]), "", 0).await);
    }
    let e = error(search(&mut me, Query::UserId(ids[0]), "", 0).await);
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 60_000);
    // Profile lookups are counted per id.
    assert_eq!(profiles(&mut me, &ids[..3]).await.len(), 3);
    assert_eq!(
        code(get_profiles(&mut me, &ids[3..4]).await),
        ErrorCode::RateLimited
    );
}

#[tokio::test]
async fn profile_updates_are_limited_per_user_and_others_are_answered_meanwhile() {
    let server = TestServer::start(&[("CONTACTS__PROFILE_UPDATES_PER_MIN_MAX", "3")]);
    let (mut a, alice) = server.user("alice").await;
    let (mut a2, _) = server.device("alice", "alice-dev2").await;
    let (mut b, bob) = server.user("bob").await;
    let bio = |text: &str| v1::UpdateProfile {
        bio: Some(text.into()),
        ..Default::default()
    };
    // The budget is per clock minute: start well inside one, so that the refusals below are
    // not passed by a fresh minute.
    common::clock::inside_one_clock_minute(std::time::Duration::from_secs(10)).await;
    for i in 0..3 {
        assert_eq!(
            profile(update(&mut a, bio(&i.to_string())).await).bio,
            i.to_string()
        );
    }
    let e = error(update(&mut a, bio("too many")).await);
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert!(
        e.retry_after_ms > 0 && e.retry_after_ms <= 60_000,
        "{}",
        e.retry_after_ms
    );
    // The budget is the user's, whichever device asks.
    assert_eq!(
        code(update(&mut a2, bio("other device")).await),
        ErrorCode::RateLimited
    );
    // Meanwhile another user's update and everyone's reads are answered, and the refused
    // updates changed nothing.
    assert_eq!(profile(update(&mut b, bio("bob's")).await).bio, "bob's");
    let seen = profiles(&mut b, &[alice.user_id]).await;
    assert_eq!(seen[0].bio, "2");
    assert_eq!(profiles(&mut a, &[bob.user_id]).await[0].bio, "bob's");
}

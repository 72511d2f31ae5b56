//! The admin API's groups part against the real server: search by name prefix (digits too)
//! and id, view, members paged, and a dissolve by an operator that goes through the sequencer
//! like an owner's: an online member gets the DISSOLVED event pushed, an offline one by Sync.

mod common;

use common::TestServer;
use common::admin::AdminClient;
use common::groups::{create, event_of, push_at, send, sync};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, GroupEventKind};
use serde_json::{Value, json};

fn code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
}

fn names(reply: &(u16, Value)) -> Vec<String> {
    assert_eq!(reply.0, 200, "{}", reply.1);
    reply.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn groups_are_found_viewed_and_dissolved_by_an_operator_members_learn_it() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watch", "viewer");
    let anonymous = AdminClient::new(&server);
    let (mut a, alice) = server.user("alice").await;
    let (mut b, bob) = server.user("bob").await;
    let (c, carol) = server.user("carol").await;
    let members = [bob.user_id, carol.user_id];
    let team = create(&mut a, "Team Rust", &members, v1::JoinPolicy::Open, true).await;
    let g = team.group.unwrap().conversation_id;
    create(&mut a, "team älpha", &[], v1::JoinPolicy::Approval, false).await;
    create(&mut a, "Other", &[], v1::JoinPolicy::InviteOnly, false).await;
    let year = create(&mut a, "2024 Team", &[], v1::JoinPolicy::Open, false).await;
    let year = year.group.unwrap().conversation_id;
    create(&mut a, "2024 Plans", &[], v1::JoinPolicy::Open, false).await;
    push_at(&mut b, g, 1).await;

    // Search: by name prefix (any case, paged), by id, all by id.
    let r = viewer.get("/api/groups?query=TEAM&limit=1");
    assert_eq!(names(&r), ["Team Rust"]);
    let cursor = r.1["next_cursor"].as_str().unwrap().to_owned();
    let r = viewer.get(&format!(
        "/api/groups?query=team&limit=1&cursor={}",
        urlencode(&cursor)
    ));
    assert_eq!(names(&r), ["team älpha"]);
    assert!(r.1.get("next_cursor").is_none());
    assert_eq!(
        names(&viewer.get(&format!("/api/groups?query={g}"))),
        ["Team Rust"]
    );
    assert_eq!(names(&viewer.get("/api/groups")).len(), 5);
    assert!(names(&viewer.get("/api/groups?query=nothing")).is_empty());
    assert!(names(&viewer.get("/api/groups?query=123")).is_empty());
    // A number that is no group's id is the start of a name, paged like any; an id is that group.
    let r = viewer.get("/api/groups?query=2024&limit=1");
    assert_eq!(names(&r), ["2024 Plans"]);
    let cursor = r.1["next_cursor"].as_str().unwrap().to_owned();
    let r = viewer.get(&format!(
        "/api/groups?query=2024&limit=1&cursor={}",
        urlencode(&cursor)
    ));
    assert_eq!(names(&r), ["2024 Team"]);
    assert!(r.1.get("next_cursor").is_none());
    assert_eq!(
        names(&viewer.get(&format!("/api/groups?query={year}"))),
        ["2024 Team"]
    );

    // View and members, paged.
    let r = viewer.get(&format!("/api/groups/{g}"));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["owner"], alice.user_id);
    assert_eq!(r.1["member_count"], 3);
    assert_eq!(r.1["join_policy"], "open");
    assert_eq!(r.1["dissolved"], false);
    let r = viewer.get(&format!("/api/groups/{g}/members?limit=2"));
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["items"][0]["username"], "alice");
    assert_eq!(r.1["items"][0]["role"], "owner");
    let cursor = r.1["next_cursor"].as_str().unwrap().to_owned();
    let r = viewer.get(&format!("/api/groups/{g}/members?limit=2&cursor={cursor}"));
    assert_eq!(r.1["items"][0]["username"], "carol");
    assert!(r.1.get("next_cursor").is_none());

    // Refused: anonymous, viewer's change, unknown and malformed ids.
    assert_eq!(anonymous.get("/api/groups").0, 401);
    let r = viewer.post(&format!("/api/groups/{g}/dissolve"), json!({}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
    let r = anonymous.post(&format!("/api/groups/{g}/dissolve"), json!({}));
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    for path in ["/api/groups/7", "/api/groups/7/members"] {
        let r = viewer.get(path);
        assert_eq!((r.0, code(&r)), (404, "not_found"), "{path}");
    }
    let r = viewer.get("/api/groups/x");
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
    let r = admin.post("/api/groups/7/dissolve", json!({}));
    assert_eq!((r.0, code(&r)), (404, "not_found"));
    let r = viewer.get("/api/groups?cursor=nope&query=t");
    assert_eq!((r.0, code(&r)), (400, "bad_request"));

    // Carol goes offline; the operator dissolves.
    drop(c);
    let r = admin.post(&format!("/api/groups/{g}/dissolve"), json!({}));
    assert_eq!(r.0, 200, "{}", r.1);
    let seq = r.1["event_seq"].as_u64().unwrap();
    let pushed = push_at(&mut b, g, seq).await;
    let ev = event_of(&pushed);
    assert_eq!(ev.kind, GroupEventKind::Dissolved as i32);
    assert_eq!(ev.actor_id, 0, "the operators");
    let pushed = push_at(&mut a, g, seq).await;
    assert_eq!(event_of(&pushed).kind, GroupEventKind::Dissolved as i32);
    let (mut c, _) = server.device("carol", "carol-dev2").await;
    let synced = sync(&mut c, g).await;
    let last = synced.last().expect("the group's log");
    assert_eq!(
        (last.seq, event_of(last).kind),
        (seq, GroupEventKind::Dissolved as i32)
    );
    match send(&mut b, g, "late", "anyone?").await {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::GroupDissolved as i32),
        other => panic!("{other:?}"),
    }
    let r = viewer.get(&format!("/api/groups/{g}"));
    assert_eq!(
        (r.1["dissolved"].as_bool(), r.1["dissolved_seq"].as_u64()),
        (Some(true), Some(seq))
    );
    let r = admin.post(&format!("/api/groups/{g}/dissolve"), json!({}));
    assert_eq!((r.0, code(&r)), (409, "conflict"), "once");

    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !admin.get("/api/audit?limit=50").1["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "group.dissolve" && e["target"] == format!("group:{g}"))
    {
        assert!(
            std::time::Instant::now() < end,
            "no audit entry for the dissolve"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! What one operator may hold of the admin listener's shared places, against the real server:
//! live-tail streams (`log.streams_per_operator_max` of `log.streams_max`) and dashboard
//! sessions (`admin.sessions_per_operator_max` of `admin.sessions_max`).

mod common;

use common::TestServer;
use common::admin::{AdminClient, OPERATOR_PASSWORD};
use common::sse::Sse;

#[test]
fn one_operator_holds_at_most_its_share_of_the_live_tail_streams() {
    let server = TestServer::start(&[
        ("LOG__STREAMS_MAX", "4"),
        ("LOG__STREAMS_PER_OPERATOR_MAX", "2"),
    ]);
    let greedy = server.api_key("greedy", "viewer").key().unwrap();
    let other = server.api_key("other", "viewer").key().unwrap();

    let held: Vec<Sse> = (0..2)
        .map(|_| Sse::open(server.admin, Some(&greedy), "", None))
        .collect();
    assert!(held.iter().all(|s| s.status == 200));
    let refused = Sse::open(server.admin, Some(&greedy), "", None);
    assert_eq!(refused.status, 503);
    let error = refused.error_body();
    assert_eq!(error["error"]["code"], "unavailable", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("log.streams_per_operator_max"),
        "{error}"
    );
    // Another operator still gets one of the places left.
    let theirs = Sse::open(server.admin, Some(&other), "", None);
    assert_eq!(theirs.status, 200);
}

#[test]
fn an_operator_past_their_sessions_share_ends_their_own_oldest_not_anothers() {
    let server = TestServer::start(&[
        ("ADMIN__SESSIONS_MAX", "4"),
        ("ADMIN__SESSIONS_PER_OPERATOR_MAX", "2"),
    ]);
    let bob = server.operator("bob", "viewer");
    let first = server.operator("alice", "admin");
    let mut logins = Vec::new();
    for _ in 0..4 {
        let mut c = AdminClient::new(&server);
        let (status, body) = c.login("alice", OPERATOR_PASSWORD);
        assert_eq!(status, 200, "{body}");
        logins.push(c);
    }
    // Alice holds her two newest; bob's session, the oldest of all, was not hers to end.
    assert_eq!(
        first.get("/api/session").0,
        401,
        "alice's first session ended"
    );
    for c in &logins[..2] {
        assert_eq!(c.get("/api/session").0, 401);
    }
    for c in &logins[2..] {
        assert_eq!(c.get("/api/session").0, 200);
    }
    assert_eq!(bob.get("/api/session").0, 200, "bob is still logged in");
}

//! A live log tail ends with its caller's access: an API key revoked, a dashboard session
//! logged out, an operator removed by the CLI. Before, a stream was authenticated once and ran
//! until `log.stream_duration_max_s` (600 s by default), so a leaked key kept tailing the logs
//! after its revocation. Against the real binary; every wait is on an event with a deadline.

mod common;

use common::TestServer;
use common::sse::Sse;
use serde_json::json;

/// A viewer API key's secret (made by the CLI).
fn viewer_key(server: &TestServer, name: &str) -> String {
    let out = server.admin_cli(&["add-key", name, "--role", "viewer"], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_live_tail_ends_when_its_key_is_revoked_or_its_session_ends() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let marker = "revokemarker3";
    // A line the streams below match: the filter change logs the new filter.
    let log_marker = |n: u32| {
        let (status, body) = admin.call(
            "PUT",
            "/api/logs/filter",
            Some(json!({ "filter": format!("info,{marker}_{n}=debug") }).to_string()),
        );
        assert_eq!(status, 200, "{body}");
    };
    let query = format!("q={marker}");

    let key = viewer_key(&server, "watch");
    let by_key = Sse::open(server.admin, Some(&key), &query, None);
    let logged_out = server.operator("eve", "viewer");
    let eve = Sse::open_with_cookie(server.admin, &logged_out.cookie().unwrap(), &query);
    let removed = server.operator("mallory", "viewer");
    let mallory = Sse::open_with_cookie(server.admin, &removed.cookie().unwrap(), &query);
    assert_eq!((by_key.status, eve.status, mallory.status), (200, 200, 200));
    log_marker(1);
    for stream in [&by_key, &eve, &mallory] {
        assert!(
            stream
                .next_log()
                .1
                .to_string()
                .contains(&format!("{marker}_1"))
        );
    }

    // Revoked through the API, then a matching line: the stream ends without it.
    let (status, body) = admin.delete("/api/keys/watch");
    assert_eq!(status, 204, "{body}");
    log_marker(2);
    let after = by_key.logs_until_end();
    assert!(after.is_empty(), "sent after the revocation: {after:?}");
    assert_eq!(
        Sse::open(server.admin, Some(&key), &query, None).status,
        401
    );
    for stream in [&eve, &mallory] {
        assert!(
            stream
                .next_log()
                .1
                .to_string()
                .contains(&format!("{marker}_2"))
        );
    }

    // Logged out, and a removal made by the CLI in the file the server re-reads: each stream
    // ends by itself, with no event to carry the news.
    let (status, body) = logged_out.delete("/api/session");
    assert_eq!(status, 204, "{body}");
    assert!(eve.logs_until_end().is_empty());
    let out = server.admin_cli(&["remove-user", "mallory"], "");
    assert!(out.status.success(), "remove-user: {out:?}");
    assert!(mallory.logs_until_end().is_empty());
    let cookie = removed.cookie().unwrap();
    assert_eq!(
        Sse::open_with_cookie(server.admin, &cookie, &query).status,
        401
    );
}

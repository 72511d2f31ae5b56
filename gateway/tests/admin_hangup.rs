//! An admin change runs to its end when its client goes away mid-request: hyper drops a
//! request's handler when an HTTP/1 client half-closes before the answer, and a change that
//! stopped between its store write and its follow-ups (the kick of a disable, the audit entry)
//! would leave a disabled user online and no trace of who did it. And a shutdown neither takes
//! a change after its start nor loses the audit entry of one under way.

mod common;

use std::time::{Duration, Instant};

use common::admin::AdminClient;
use common::http1::Http1;
use common::{TestServer, expect_kicked_then_closed, wait_until};
use ringchat_proto::v1::KickReason;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits (bounded) until the audit log holds an entry with `action` and `target`.
fn wait_audit(client: &AdminClient, action: &str, target: &str) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let reply = client.get("/api/audit?limit=200");
        assert_eq!(reply.0, 200, "{}", reply.1);
        if let Some(e) = reply.1["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
        {
            return e.clone();
        }
        assert!(Instant::now() < end, "no audit entry {action} {target}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disable_whose_client_hangs_up_still_kicks_and_is_audited() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let key = admin.key().unwrap();
    let (mut alice, ok) = server.user("alice").await;
    let id = ok.user_id;

    // The whole request, then the client's write side closed at once (as `curl` killed by
    // Ctrl-C after sending, or a script's timeout, leaves it).
    let mut raw = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    let request = format!(
        "POST /api/users/{id}/disable HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    raw.shutdown().await.unwrap();

    let reason = tokio::time::timeout(DEADLINE, expect_kicked_then_closed(&mut alice))
        .await
        .expect("the disabled user's session is kicked");
    assert_eq!(reason, KickReason::AccountDisabled);
    let entry = wait_audit(&admin, "user.disable", &format!("user:{id}"));
    assert_eq!(entry["actor"], "key:ops", "{entry}");
    let r = admin.get(&format!("/api/users/{id}"));
    assert_eq!(
        (r.0, &r.1["disabled"]),
        (200, &Value::Bool(true)),
        "{}",
        r.1
    );
}

/// A graceful stop takes no admin change after its start and lets those under way finish
/// before the audit log's last write: a change whose body arrives after SIGTERM (admitted
/// before it: its handler is reading the body) is answered and its entry is there after a
/// restart, while a change sent after SIGTERM is refused with 503. The listener used to take
/// changes on through the final audit flush, and an entry queued after it was never written.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_refuses_new_changes_and_audits_those_under_way() {
    let mut server = TestServer::start(&[]);
    let key = server.api_key("ops", "admin").key().unwrap();
    let json = [("Content-Type", "application/json")];
    let body = br#"{"note": "held across SIGTERM"}"#;

    // Admitted before the stop: `100 Continue` comes once its handler reads the body.
    let mut held = Http1::connect(server.admin).await;
    let expect = [json[0], ("Expect", "100-continue")];
    held.send_head(
        "POST",
        "/api/invites",
        Some(&key),
        &expect,
        Some(body.len()),
    )
    .await
    .unwrap();
    let go_on = held.read_response(false).await.unwrap();
    assert_eq!(go_on.status, 100, "{go_on:?}");
    // A connection of its own, open (and served) before the stop.
    let mut late = Http1::connect(server.admin).await;
    let health = late
        .request("GET", "/healthz", None, &[], b"")
        .await
        .unwrap();
    assert_eq!(health.status, 200);

    server.signal("TERM");
    wait_until("the server is shutting down", || {
        server.log_lines_with("shutting down") > 0
    });
    let refused = late
        .request(
            "POST",
            "/api/invites",
            Some(&key),
            &json,
            br#"{"note": "late"}"#,
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.json()["error"]["code"], "unavailable");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");

    held.send_body(body).await.unwrap();
    let made = held.read_response(false).await.unwrap();
    assert_eq!(made.status, 201, "{:?}", made.json());
    let id = made.json()["id"].as_u64().unwrap();
    assert!(server.wait_exit().success(), "{}", server.log_tail());

    server.restart();
    let admin = AdminClient::new(&server).with_key(&key);
    let (status, page) = admin.get("/api/audit?limit=200");
    assert_eq!(status, 200, "{page}");
    let created: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "invite.create")
        .collect();
    assert_eq!(created.len(), 1, "{page}");
    assert_eq!(created[0]["target"], format!("invite:{id}"), "{page}");
    let (status, invites) = admin.get("/api/invites");
    assert_eq!(status, 200, "{invites}");
    assert_eq!(invites["items"].as_array().unwrap().len(), 1, "{invites}");
}

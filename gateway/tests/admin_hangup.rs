//! An admin change runs to its end when its client goes away mid-request: hyper drops a
//! request's handler when an HTTP/1 client half-closes before the answer, and a change that
//! stopped between its store write and its follow-ups (the kick of a disable, the audit entry)
//! would leave a disabled user online and no trace of who did it.

mod common;

use std::time::{Duration, Instant};

use common::admin::AdminClient;
use common::{TestServer, expect_kicked_then_closed};
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

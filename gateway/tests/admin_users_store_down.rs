//! An operator's disable or password set whose store write fails (PostgreSQL down: the write
//! may have landed, for all the server knows) still kicks the user's sessions and leaves an
//! audit entry saying the outcome is unknown, written once the store is back. The test runs
//! its own PostgreSQL cluster (`common/pg_cluster.rs`) and stops it under the server.

mod common;

use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::{TestServer, expect_kicked_then_closed, http_get, wait_until};
use ringchat_proto::v1::KickReason;
use serde_json::{Value, json};

const AUDIT_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_disable_or_password_set_the_store_failed_kicks_and_is_audited_as_unknown() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "2000"),
        ("STORAGE__POSTGRES__STATEMENT_TIMEOUT_MS", "5000"),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
    ]);
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = server.user("bob").await;
    let ops = server.api_key("ops", "admin");
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");

    // Away, not crashed: the store only has to fail the writes (see `PgCluster::stop_fast`).
    cluster.stop_fast();
    let disable = ops.post(
        &format!("/api/users/{}/disable", a.user_id),
        json!({"reason": "abuse"}),
    );
    assert_eq!(disable.0, 503, "{}", disable.1);
    assert_eq!(
        expect_kicked_then_closed(&mut alice).await,
        KickReason::AccountDisabled
    );
    let reset = ops.post(
        &format!("/api/users/{}/reset-password", b.user_id),
        json!({"password": "a brand new password"}),
    );
    assert_eq!(reset.0, 503, "{}", reset.1);
    assert_eq!(
        expect_kicked_then_closed(&mut bob).await,
        KickReason::PasswordChanged
    );

    cluster.start();
    let unknown = |action: &'static str, user: u64| {
        let target = format!("user:{user}");
        move |e: &Value| {
            e["action"] == action
                && e["target"] == target.as_str()
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("outcome unknown: "))
        }
    };
    let (disabled, reset) = (
        unknown("user.disable", a.user_id),
        unknown("user.reset_password", b.user_id),
    );
    let deadline = Instant::now() + AUDIT_DEADLINE;
    loop {
        let (status, page) = ops.get("/api/audit?limit=200");
        if status == 200 {
            let items = page["items"].as_array().unwrap();
            if items.iter().any(&disabled) && items.iter().any(&reset) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 'outcome unknown' audit entries: {status} {page}; server log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

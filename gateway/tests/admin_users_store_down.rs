//! An operator's disable or password set whose store write fails (PostgreSQL down: the write
//! may have landed, for all the server knows) still kicks the user's sessions and leaves an
//! audit entry saying the outcome is unknown, written once the store is back; so does an
//! invite's create or revoke, and a user's create, edit or enable. The tests run their own
//! PostgreSQL cluster (`common/pg_cluster.rs`) and stop it under the server, or make one
//! write lose its answer with a trigger.

mod common;

use std::time::{Duration, Instant};

use common::admin::AdminClient;
use common::pg_cluster::PgCluster;
use common::store::{LOSE_ANSWER, sql_in};
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
    let (disabled, reset) = (
        unknown("user.disable", format!("user:{}", a.user_id)),
        unknown("user.reset_password", format!("user:{}", b.user_id)),
    );
    wait_audit(&server, &ops, &[&disabled, &reset]).await;
}

/// Waits (bounded) until the audit log holds an entry matching each of `wanted`.
async fn wait_audit(server: &TestServer, ops: &AdminClient, wanted: &[&dyn Fn(&Value) -> bool]) {
    let deadline = Instant::now() + AUDIT_DEADLINE;
    loop {
        let (status, page) = ops.get("/api/audit?limit=200");
        if status == 200 {
            let items = page["items"].as_array().unwrap();
            if wanted.iter().all(|w| items.iter().any(w)) {
                return;
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

/// Whether an entry is `action` on `target` with an "outcome unknown" detail.
fn unknown(action: &'static str, target: String) -> impl Fn(&Value) -> bool {
    move |e: &Value| {
        e["action"] == action
            && e["target"] == target.as_str()
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("outcome unknown: "))
    }
}

#[tokio::test]
async fn an_invite_create_or_revoke_the_store_failed_is_audited_as_unknown() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("STORAGE__POSTGRES__URL", url.as_str()),
        ("STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "2000"),
        ("STORAGE__POSTGRES__STATEMENT_TIMEOUT_MS", "5000"),
        ("STORAGE__POSTGRES__RECONNECT_INTERVAL_MS", "100"),
    ]);
    let ops = server.api_key("ops", "admin");
    wait_until("ready", || http_get(server.admin, "/readyz") == "ready\n");
    let made = ops.post("/api/invites", json!({"note": "kept"}));
    assert_eq!(made.0, 201, "{}", made.1);
    let id = made.1["id"].as_u64().unwrap();

    cluster.stop_fast();
    let revoke = ops.delete(&format!("/api/invites/{id}"));
    assert_eq!(revoke.0, 503, "{}", revoke.1);
    let create = ops.post("/api/invites", json!({"note": "lost?"}));
    assert_eq!(create.0, 503, "{}", create.1);

    cluster.start();
    let (revoked, created) = (
        unknown("invite.revoke", format!("invite:{id}")),
        unknown("invite.create", "invite".to_owned()),
    );
    wait_audit(&server, &ops, &[&revoked, &created]).await;
}

/// An operator's create, profile edit or enable whose write loses its answer is a 503 and is
/// audited as "outcome unknown" (each used to return before its entry). The reads before each
/// write work: only the write fails, by a trigger (`common::store::LOSE_ANSWER`).
#[tokio::test]
async fn a_create_edit_or_enable_whose_answer_was_lost_is_audited_as_unknown() {
    let server = TestServer::start(&[("STORAGE__ENGINE", "postgres")]);
    let ops = server.api_key("ops", "admin");
    let made = ops.post("/api/users", json!({"username": "alice"}));
    assert_eq!(made.0, 201, "{}", made.1);
    let a = made.1["user_id"].as_u64().unwrap();
    let disable = ops.post(&format!("/api/users/{a}/disable"), json!({}));
    assert_eq!(disable.0, 200, "{}", disable.1);
    sql_in(
        &server.data_dir,
        vec![
            LOSE_ANSWER.into(),
            "CREATE TRIGGER lose_create BEFORE INSERT ON users FOR EACH ROW \
             WHEN (NEW.username = 'lost') EXECUTE FUNCTION lose_answer()"
                .into(),
            format!(
                "CREATE TRIGGER lose_edit BEFORE INSERT OR UPDATE ON profiles FOR EACH ROW \
                 WHEN (NEW.user_id = {a}) EXECUTE FUNCTION lose_answer()"
            ),
            format!(
                "CREATE TRIGGER lose_enable BEFORE DELETE ON user_flags FOR EACH ROW \
                 WHEN (OLD.user_id = {a}) EXECUTE FUNCTION lose_answer()"
            ),
        ],
    )
    .unwrap();

    let create = ops.post("/api/users", json!({"username": "lost"}));
    assert_eq!(create.0, 503, "{}", create.1);
    let edit = ops.patch(&format!("/api/users/{a}"), json!({"nickname": "Al"}));
    assert_eq!(edit.0, 503, "{}", edit.1);
    let enable = ops.post(&format!("/api/users/{a}/enable"), json!({}));
    assert_eq!(enable.0, 503, "{}", enable.1);

    let (created, edited, enabled) = (
        unknown("user.create", "username:lost".to_owned()),
        unknown("user.edit", format!("user:{a}")),
        unknown("user.enable", format!("user:{a}")),
    );
    wait_audit(&server, &ops, &[&created, &edited, &enabled]).await;
}

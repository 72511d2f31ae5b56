//! A notification cut short, by a crash or by a store that refused its batches, is finished by
//! sending it again with the same `id`: what a job stored is durable, and each recipient's
//! system conversation recognises the id (the dedup window), so those who have it are counted
//! as repeats and nobody gets it twice (README: System notifications).

mod common;

use common::TestServer;
use common::admin::AdminClient;
use common::store::sql_in;
use prost::Message as _;
use ringchat_proto::v1;
use serde_json::{Value, json};

#[tokio::test]
async fn a_broadcast_cut_by_a_crash_is_finished_by_sending_it_again_with_its_id() {
    let mut server = TestServer::start(&[("NOTIFICATIONS__BATCH_USERS", "2")]);
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan", "eve"] {
        users.push(server.user(name).await.1.user_id);
    }
    let body = |to: Value| json!({"id": "maint-7", "text": "down at noon", "to": to});

    // What a broadcast to everyone leaves behind when the server dies after its first batch:
    // the first two users have it, durably.
    let admin = server.api_key("ops", "admin");
    let (status, r) = admin.post("/api/notifications", body(json!({"users": users[..2]})));
    assert_eq!(status, 202, "{r}");
    assert_eq!(admin.notification_when_done("maint-7")["state"], "done");
    server.kill9();
    server.restart();
    // The listeners have new ports.
    let admin = AdminClient::new(&server).with_key(&admin.key().unwrap());

    // The job is gone with the process; the same request again finishes it.
    assert_eq!(admin.get("/api/notifications/maint-7").0, 404);
    let (status, r) = admin.post("/api/notifications", body(json!({"all": true})));
    assert_eq!(status, 202, "{r}");
    let view = admin.notification_when_done("maint-7");
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(view["recipients_done"], 5, "{view}");
    assert_eq!(view["repeats"], 2, "the first two already had it: {view}");

    for (name, user) in ["ann", "ben", "cat", "dan", "eve"].iter().zip(&users) {
        assert_eq!(
            notification_ids(&server, name, *user).await,
            ["maint-7"],
            "{name} has it exactly once"
        );
    }
}

/// The system conversation's notification ids, in order.
async fn notification_ids(server: &TestServer, name: &str, user: u64) -> Vec<String> {
    let (mut c, _) = server.device(name, "check").await;
    let got = c.sync_all((2 << 62) | user, 0).await.unwrap();
    got.iter()
        .map(|m| {
            v1::SystemNotice::decode(m.content.as_ref())
                .unwrap()
                .notification_id
        })
        .collect()
}

/// A job fails for real: the server runs on PostgreSQL, and a trigger refuses every write to
/// one recipient's system conversation, so that recipient's batch is refused by the store
/// (three tries, then the job stops, `failed`). Once the store takes it again, the same
/// request with the same id runs the job again (it used to return the failed job, `repeated`,
/// until a restart).
#[tokio::test]
async fn a_failed_notification_is_finished_by_sending_it_again_with_its_id() {
    let server = TestServer::start(&[
        ("STORAGE__ENGINE", "postgres"),
        ("NOTIFICATIONS__BATCH_USERS", "1"),
    ]);
    let names = ["ann", "ben", "cat"];
    let mut users = Vec::new();
    for name in names {
        users.push(server.user(name).await.1.user_id);
    }
    // Listed users are walked in id order, one per batch: ann's is stored, ben's refused.
    let ben_system = ((2u64 << 62) | users[1]) as i64;
    sql_in(
        &server.data_dir,
        vec![
            "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                .into(),
            format!(
                "CREATE TRIGGER refuse_ben BEFORE INSERT ON messages FOR EACH ROW \
                 WHEN (NEW.conv_id = {ben_system}) EXECUTE FUNCTION refuse_write()"
            ),
        ],
    )
    .unwrap();
    let admin = server.api_key("ops", "admin");
    let body = json!({"id": "maint-9", "text": "down at noon", "to": {"users": users}});
    let (status, r) = admin.post("/api/notifications", body.clone());
    assert_eq!(status, 202, "{r}");
    let view = admin.notification_when_done("maint-9");
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["recipients_done"], 1, "ann's batch was stored: {view}");

    sql_in(
        &server.data_dir,
        vec!["DROP TRIGGER refuse_ben ON messages".into()],
    )
    .unwrap();
    let (status, r) = admin.post("/api/notifications", body.clone());
    assert_eq!(status, 202, "a new run: {r}");
    assert_eq!(r["repeated"], false, "{r}");
    let view = admin.notification_when_done("maint-9");
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(view["recipients_done"], 3, "{view}");
    assert_eq!(view["repeats"], 1, "ann had it already: {view}");
    assert!(view.get("error").is_none(), "{view}");
    // Done, the id is a repeat again: nothing is sent.
    let (status, r) = admin.post("/api/notifications", body);
    assert_eq!((status, r["repeated"].as_bool()), (200, Some(true)), "{r}");

    for (name, user) in names.iter().zip(&users) {
        assert_eq!(
            notification_ids(&server, name, *user).await,
            ["maint-9"],
            "{name} has it exactly once"
        );
    }
    // One history row, the run that finished; both runs audited.
    let (_, page) = admin.get("/api/notifications");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notification_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["maint-9"], "{page}");
    let (_, audit) = admin.get("/api/audit?limit=50");
    let sends: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "notification.send")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(
        sends.iter().any(|d| d.contains("again after it failed")),
        "{sends:?}"
    );
}

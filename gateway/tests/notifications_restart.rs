//! A notification cut short by a crash is finished by sending it again with the same `id`
//! after the restart: jobs live in memory, but what a job stored is durable, and each
//! recipient's system conversation recognises the id (the dedup window), so those who have it
//! are counted as repeats and nobody gets it twice (README: System notifications).

mod common;

use common::TestServer;
use common::admin::AdminClient;
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
        let (mut c, _) = server.device(name, "again").await;
        let got = c.sync_all((2 << 62) | user, 0).await.unwrap();
        let ids: Vec<String> = got
            .iter()
            .map(|m| {
                v1::SystemNotice::decode(m.content.as_ref())
                    .unwrap()
                    .notification_id
            })
            .collect();
        assert_eq!(ids, vec!["maint-7"], "{name} has it exactly once");
    }
}

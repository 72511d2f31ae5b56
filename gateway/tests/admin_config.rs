//! Runtime configuration against the real server: `GET/PATCH /api/config`, the IP rules, the
//! overrides file across a restart, `SIGHUP`, and the admin listener over TLS.

mod common;

use common::{expect_kicked_then_closed, wait_until};

use std::io::Read as _;
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;
use common::admin::AdminClient;
use ringchat_bench::client::text_message;
use ringchat_proto::Body;
use ringchat_proto::v1::{ErrorCode, KickReason};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(10);

/// The view of one key in `GET /api/config`.
fn key(client: &AdminClient, name: &str) -> Value {
    let (status, body) = client.get("/api/config");
    assert_eq!(status, 200, "{body}");
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == name)
        .unwrap_or_else(|| panic!("{name} not in {body}"))
        .clone()
}

/// The newest `config.change` entry for `target`, waited for (the audit log is written in
/// batches).
fn audit_entry(client: &AdminClient, target: &str) -> Value {
    let mut found = Value::Null;
    wait_until("the audit entry", || {
        let (_, audit) = client.get("/api/audit?limit=20");
        if let Some(e) = audit["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["action"] == "config.change" && e["target"] == target)
        {
            found = e.clone();
        }
        !found.is_null()
    });
    found
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[test]
fn the_effective_config_shows_sources_and_redacts_secrets() {
    let server = TestServer::start(&[
        ("EMAIL__SMTP__USERNAME", "mailer"),
        ("EMAIL__SMTP__PASSWORD", "hunter2-secret"),
    ]);
    let viewer = server.api_key("watcher", "viewer");
    let (status, body) = viewer.get("/api/config");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.to_string().contains("hunter2-secret"),
        "a secret leaked: {body}"
    );
    assert_eq!(body["config"]["email"]["smtp"]["password"], "<redacted>");
    let password = key(&viewer, "email.smtp.password");
    assert_eq!(password["value"], "<redacted>");
    assert_eq!(password["source"], "env");
    assert_eq!(password["origin"], "RINGCHAT_EMAIL__SMTP__PASSWORD");
    assert_eq!(password["live"], false);
    let rate = key(&viewer, "limits.messages_per_s_max");
    assert_eq!(rate["source"], "default");
    assert_eq!(rate["live"], true);
    assert_eq!(rate["value"], 10_000);
    assert_eq!(key(&viewer, "gateway.tcp_listen")["live"], false);
    assert!(
        body["overrides_file"]
            .as_str()
            .unwrap()
            .ends_with("config.overrides.toml")
    );
    let (status, body) = AdminClient::new(&server).get("/api/config");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[test]
fn a_change_is_validated_like_check_config_persisted_and_audited() {
    let mut server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watcher", "viewer");
    let refused = |body: Value, expect: &str| {
        let (status, reply) = admin.patch("/api/config", body.clone());
        assert_eq!(status, 422, "{body} → {reply}");
        assert_eq!(reply["error"]["code"], "invalid");
        assert!(
            error_message(&reply).contains(expect),
            "{body} → {reply}, expected {expect:?}"
        );
    };
    refused(
        json!({"limits.messages_per_s_max": 0}),
        "limits.messages_per_s_max = 0: must be at least 1",
    );
    refused(
        json!({"limits.messages_per_s_max": "fast"}),
        "invalid type: string \"fast\"",
    );
    refused(
        json!({"limits.mesages_per_s_max": 5}),
        "unknown key (did you mean limits.messages_per_s_max?)",
    );
    refused(
        json!({"storage.durability": "none"}),
        "cannot change while the server runs",
    );
    refused(
        json!({"gateway.heartbeat_interval_ms": 60_000}),
        "must be below idle_timeout_ms",
    );
    refused(
        json!({"security.deny": ["not-an-address"]}),
        "neither an IP address nor a CIDR range",
    );
    refused(json!({}), "no keys given");
    let (status, reply) = admin.call("PATCH", "/api/config", Some("[1, 2]".to_owned()));
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = viewer.patch("/api/config", json!({"limits.messages_per_s_max": 5}));
    assert_eq!(status, 403, "{reply}");
    // Nothing above changed anything.
    assert_eq!(key(&admin, "limits.messages_per_s_max")["value"], 10_000);

    let (status, reply) = admin.patch(
        "/api/config",
        json!({"limits.messages_per_s_max": 50, "accounts.password_bytes_min": 12}),
    );
    assert_eq!(status, 200, "{reply}");
    let changed = reply["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 2, "{reply}");
    assert!(
        changed.contains(&json!({"key": "limits.messages_per_s_max", "old": 10_000, "new": 50}))
    );
    let rate = key(&admin, "limits.messages_per_s_max");
    assert_eq!(rate["value"], 50);
    assert_eq!(rate["source"], "override");
    let entry = audit_entry(&admin, "limits.messages_per_s_max");
    assert_eq!(entry["detail"], "10000 → 50");
    assert_eq!(entry["actor"], "key:ops");

    // The password rule applies to the next registration at once.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = server.client().await;
        c.hello().await.unwrap();
        let e = c
            .register("shorty", "elevenchars")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e:?}");
    });

    // Persisted: a restart keeps it.
    server.stop();
    server.restart();
    // The admin port changed: a new client (and key) for the restarted server.
    let admin = server.api_key("ops-again", "admin");
    assert_eq!(key(&admin, "limits.messages_per_s_max")["value"], 50);
    assert_eq!(key(&admin, "accounts.password_bytes_min")["value"], 12);
    let overrides = std::fs::read_to_string(server.data_dir.join("config.overrides.toml")).unwrap();
    assert!(overrides.contains("messages_per_s_max = 50"), "{overrides}");
    // null drops the override.
    let (status, reply) = admin.patch("/api/config", json!({"limits.messages_per_s_max": null}));
    assert_eq!(status, 200, "{reply}");
    let rate = key(&admin, "limits.messages_per_s_max");
    assert_eq!(
        (rate["value"].clone(), rate["source"].clone()),
        (json!(10_000), json!("default"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_rate_limit_refuses_the_next_burst_on_an_open_connection() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (mut sender, _) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let to = recipient.user_id;
    assert_eq!(
        burst(&mut sender, to, 0).await,
        0,
        "10,000 per second: no refusal"
    );
    let (status, reply) = tokio::task::spawn_blocking(move || {
        admin.patch("/api/config", json!({"limits.messages_per_s_max": 5}))
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
    // Applied on every shard before the answer: the same connection's next burst is refused.
    let limited = burst(&mut sender, to, 1).await;
    assert!(
        limited >= 20,
        "only {limited} of 30 refused at 5 per second"
    );
    sender.ping().await.expect("still connected");
}

/// A session pings at the interval it was told in `HelloOk`: lowering the heartbeat and idle
/// timeout live must not close it (it keeps the idle timeout it was told), while a session
/// that says hello afterwards is told, and held to, the new values.
#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_idle_timeout_applies_to_new_sessions_not_to_open_ones() {
    // The reaper ticks every 250 ms (an eighth of the idle timeout at start).
    let server = TestServer::start(&[
        ("GATEWAY__HEARTBEAT_INTERVAL_MS", "1000"),
        ("GATEWAY__IDLE_TIMEOUT_MS", "2000"),
    ]);
    let admin = server.api_key("ops", "admin");
    let (mut open, _) = server.user("open").await;
    let (status, reply) = tokio::task::spawn_blocking(move || {
        admin.patch(
            "/api/config",
            json!({"gateway.heartbeat_interval_ms": 100, "gateway.idle_timeout_ms": 300}),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
    // The open session's gaps start here, however long the PATCH and the new client's hello
    // took on a loaded machine.
    open.ping()
        .await
        .expect("the open session, right after the change");
    let mut ticker = tokio::time::interval(Duration::from_millis(1000));
    ticker.tick().await;

    let mut new = server.client().await;
    let ok = new.hello().await.unwrap();
    assert_eq!((ok.heartbeat_interval_ms, ok.idle_timeout_ms), (100, 300));
    let new_kicked = tokio::spawn(async move { expect_kicked_then_closed(&mut new).await });

    // Every second, as it was told: past the new idle timeout each time, within the old one.
    for _ in 0..4 {
        ticker.tick().await;
        open.ping()
            .await
            .expect("the open session keeps the idle timeout it was told");
    }
    // The new session said nothing after its hello: closed by the new idle timeout.
    assert_eq!(new_kicked.await.unwrap(), KickReason::IdleTimeout);
}

/// Sends 30 messages at once; returns how many were refused as RATE_LIMITED.
async fn burst(sender: &mut ringchat_bench::client::Client, to: u64, round: usize) -> usize {
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            sender
                .send(text_message(to, &format!("r{round}-{i}"), "x"))
                .await
                .unwrap(),
        );
    }
    let mut limited = 0;
    for id in ids {
        match sender.reply_to(id).await.unwrap() {
            Body::SendAck(_) => {}
            Body::Error(e) if e.code == ErrorCode::RateLimited as i32 => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    limited
}

/// Connects and reads: `true` if the server closed the connection without a byte.
fn closed_at_accept(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).expect("the kernel accepts");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Ok(_) => false,
        Err(e) => panic!("read: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_rules_close_new_connections_at_accept_on_tcp_and_websocket() {
    let server = TestServer::start(&[]);
    let (mut open, _) = server.user("early").await;
    let admin = server.api_key("ops", "admin");
    let viewer = server.api_key("watcher", "viewer");
    let put = move |allow: Vec<&str>, deny: Vec<&str>| {
        let body = json!({"allow": allow, "deny": deny});
        let admin = admin.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                admin.call("PUT", "/api/security/ip-rules", Some(body.to_string()))
            })
            .await
            .unwrap()
        }
    };
    let (status, reply) = put(vec![], vec!["127.0.0.1"]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["deny"], json!(["127.0.0.1"]));
    let (tcp, ws) = (server.tcp, server.ws);
    let refused =
        tokio::task::spawn_blocking(move || (closed_at_accept(tcp), closed_at_accept(ws)))
            .await
            .unwrap();
    assert_eq!(refused, (true, true), "denied on TCP and WebSocket");
    open.ping()
        .await
        .expect("a connection made before the rule stays");
    let refused_total = |reason: &str| -> f64 {
        server
            .metrics()
            .iter()
            .filter(|(k, _)| {
                k.starts_with("ringchat_connections_refused_total{")
                    && k.contains(&format!("reason=\"{reason}\""))
            })
            .map(|(_, v)| *v)
            .sum()
    };
    // Counted per shard, published at the scrape.
    assert_eq!(refused_total("ip_denied"), 2.0);

    // An allow list without loopback refuses it too.
    let (status, reply) = put(vec!["10.0.0.0/8", "2001:db8::/32"], vec![]).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        tokio::task::spawn_blocking(move || closed_at_accept(tcp))
            .await
            .unwrap()
    );
    let mut ws_client = tokio::net::TcpStream::connect(ws).await.unwrap();
    let upgrade =
        common::ws::WsClient::try_handshake(Box::new(ws_client), &format!("ws://{ws}/ws")).await;
    assert!(upgrade.is_err(), "WebSocket upgrade refused");
    assert_eq!(refused_total("ip_not_allowed"), 2.0);

    // Allowed again: new connections get in.
    let (status, reply) = put(vec!["127.0.0.0/8", "::1"], vec![]).await;
    assert_eq!(status, 200, "{reply}");
    let mut c = server.client().await;
    c.hello().await.expect("allowed");
    ws_client = tokio::net::TcpStream::connect(ws).await.unwrap();
    common::ws::WsClient::try_handshake(Box::new(ws_client), &format!("ws://{ws}/ws"))
        .await
        .expect("allowed on WebSocket");
    let (status, reply) = put(vec![], vec![]).await;
    assert_eq!(status, 200, "{reply}");
    server.client().await.hello().await.expect("no rules");

    // Refused changes.
    let (status, reply) = put(vec!["10.0.0/8"], vec![]).await;
    assert_eq!(status, 422, "{reply}");
    assert!(error_message(&reply).contains("\"10.0.0/8\""), "{reply}");
    let (status, reply) = tokio::task::spawn_blocking(move || {
        viewer.call(
            "PUT",
            "/api/security/ip-rules",
            Some(r#"{"allow": [], "deny": ["1.2.3.4"]}"#.to_owned()),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "{reply}");
}

#[test]
fn sighup_applies_a_changed_file_and_refuses_a_broken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ringchat.toml");
    std::fs::write(&file, "# test\n[limits]\nmessages_per_s_max = 100\n").unwrap();
    let server = TestServer::start_with_config(&tmp.path().join("data"), Some(&file), &[]);
    let admin = server.api_key("ops", "admin");
    let rate = key(&admin, "limits.messages_per_s_max");
    assert_eq!(rate["value"], 100);
    assert_eq!(rate["source"], "file");
    assert_eq!(rate["origin"], format!("{}:3", file.display()));

    std::fs::write(
        &file,
        "# test\n[limits]\nmessages_per_s_max = 200\n[gateway]\nqueue_events_max = 5\n",
    )
    .unwrap();
    server.signal("HUP");
    wait_until("the new rate", || {
        key(&admin, "limits.messages_per_s_max")["value"] == 200
    });
    assert_eq!(
        key(&admin, "gateway.queue_events_max")["value"],
        65_536,
        "needs a restart"
    );
    wait_until("the restart warning", || {
        server.log_lines_with("needs a restart") >= 1
    });
    let entry = audit_entry(&admin, "limits.messages_per_s_max");
    assert_eq!(entry["actor"], "signal:SIGHUP");
    assert_eq!(entry["detail"], "100 → 200");
    let (_, audit) = admin.get("/api/audit?limit=20");
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "signal:SIGHUP" && e["target"] == "limits.messages_per_s_max"),
        "{audit}"
    );

    std::fs::write(
        &file,
        "[limits]\nmessages_per_s_max = 0\nmesages_per_s_max = 5\n",
    )
    .unwrap();
    server.signal("HUP");
    wait_until("the refusal", || {
        server.log_lines_with("configuration refused") >= 2
    });
    assert!(
        server.log_lines_with("did you mean limits.messages_per_s_max") >= 1,
        "{}",
        server.log_tail()
    );
    assert_eq!(
        key(&admin, "limits.messages_per_s_max")["value"],
        200,
        "still the old one"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { server.client().await.hello().await.expect("still serving") });
}

/// With the backend pinned, live changes are checked against the host's cores as read at
/// start, not against the one core the pinned thread that applies them may run on: every
/// change used to be refused ("gateway.cores: core 1 is not online (online: [0])").
#[test]
fn live_changes_apply_with_the_backend_and_the_shards_pinned() {
    let online = ringchat_gateway::config::online_cores();
    let (backend, shards) = (online[0], *online.get(1).unwrap_or(&online[0]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ringchat.toml");
    let pinned = format!("[backend]\ncores = [{backend}]\n[gateway]\ncores = [{shards}]\n");
    std::fs::write(
        &file,
        format!("{pinned}[limits]\nmessages_per_s_max = 100\n"),
    )
    .unwrap();
    let server = TestServer::start_with_config(&tmp.path().join("data"), Some(&file), &[]);
    let admin = server.api_key("ops", "admin");

    let (status, reply) = admin.patch("/api/config", json!({"limits.messages_per_s_max": 50}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(key(&admin, "limits.messages_per_s_max")["value"], 50);

    let rules = json!({"allow": [], "deny": ["192.0.2.0/24"]});
    let (status, reply) = admin.call("PUT", "/api/security/ip-rules", Some(rules.to_string()));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["deny"], json!(["192.0.2.0/24"]), "{reply}");

    std::fs::write(
        &file,
        format!("{pinned}[limits]\nmessages_per_s_max = 200\n"),
    )
    .unwrap();
    // The override set above wins over the file: drop it so that the file's value shows.
    let (status, reply) = admin.patch("/api/config", json!({"limits.messages_per_s_max": null}));
    assert_eq!(status, 200, "{reply}");
    server.signal("HUP");
    wait_until("the reloaded rate", || {
        key(&admin, "limits.messages_per_s_max")["value"] == 200
    });
    assert_eq!(
        server.log_lines_with("configuration refused"),
        0,
        "{}",
        server.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_speaks_tls_and_marks_the_cookie_secure() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key_file) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(["gen-cert", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (c, k) = (cert.display().to_string(), key_file.display().to_string());
    let server = TestServer::start_with_config(
        &tmp.path().join("data"),
        None,
        &[("ADMIN__TLS__CERT_PATH", &c), ("ADMIN__TLS__KEY_PATH", &k)],
    );
    let out = server.admin_cli(
        &["add-user", "tlsop", "--role", "admin"],
        &format!("{}\n", common::admin::OPERATOR_PASSWORD),
    );
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let body =
        json!({"username": "tlsop", "password": common::admin::OPERATOR_PASSWORD}).to_string();
    let request = format!(
        "POST /api/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tls = common::ws::tls_connect(server.admin, &pem)
        .await
        .expect("TLS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let cookie = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {response}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

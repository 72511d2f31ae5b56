//! The admin API's access rules against the real server: operators from the CLI, dashboard
//! sessions (cookie attributes, CSRF, expiry), API keys (roles, revocation by API and by CLI),
//! login throttling, the audit log, JSON errors for bad input, and the OpenAPI document.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::admin::{AdminClient, OPERATOR_PASSWORD};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, login};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

fn code(reply: &(u16, Value)) -> &str {
    reply.1["error"]["code"]
        .as_str()
        .unwrap_or("<no JSON error>")
}

/// The audit log's entries, newest first (first page of 200).
fn audit(client: &AdminClient) -> Vec<Value> {
    let reply = client.get("/api/audit?limit=200");
    assert_eq!(reply.0, 200, "{}", reply.1);
    reply.1["items"].as_array().unwrap().clone()
}

/// Waits (bounded) until the audit log holds an entry matching `pred`.
fn wait_audit(client: &AdminClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(e) = audit(client).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(Instant::now() < end, "no audit entry for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sessions_need_a_login_a_csrf_token_for_changes_and_the_right_role() {
    let server = TestServer::start(&[]);
    let anonymous = AdminClient::new(&server);
    let r = anonymous.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    let r = anonymous.post("/api/keys", json!({"name": "x", "role": "admin"}));
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));

    let admin = server.operator("root", "admin");
    let (status, cookie) = admin.login_cookie("root", OPERATOR_PASSWORD);
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    let me = admin.get("/api/session");
    assert_eq!(me.0, 200);
    assert_eq!(me.1["operator"], "root");
    assert_eq!(me.1["role"], "admin");
    assert_eq!(me.1["csrf_token"], admin.csrf.clone().unwrap().as_str());

    // A change without the CSRF token is refused, with it allowed.
    let mut no_csrf = admin.clone();
    no_csrf.send_csrf = false;
    let r = no_csrf.post("/api/keys", json!({"name": "ci", "role": "viewer"}));
    assert_eq!((r.0, code(&r)), (403, "csrf_missing"));
    let r = admin.post("/api/keys", json!({"name": "ci", "role": "viewer"}));
    assert_eq!(r.0, 201, "{}", r.1);
    assert!(r.1["key"].as_str().unwrap().starts_with("rck_"));

    // A viewer reads but changes nothing.
    let viewer = server.operator("watcher", "viewer");
    assert_eq!(viewer.get("/api/audit").0, 200);
    let r = viewer.post("/api/keys", json!({"name": "v", "role": "viewer"}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));
    let r = viewer.delete("/api/keys/ci");
    assert_eq!((r.0, code(&r)), (403, "forbidden"));

    // Logging out ends the session.
    assert_eq!(admin.delete("/api/session").0, 204);
    let r = admin.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    // Removing an operator ends their sessions at the next request.
    let out = server.admin_cli(&["remove-user", "watcher"], "");
    assert!(out.status.success(), "{out:?}");
    let r = viewer.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
}

/// A leaked operator password is dealt with by replacing it: every session begun with the old
/// one ends at its next request (also when the name is removed and added again), and the new
/// password logs in.
#[test]
fn replacing_an_operators_password_ends_their_sessions() {
    let server = TestServer::start(&[]);
    let stolen = server.operator("root", "admin");
    let readded = server.operator("ops", "admin");
    assert_eq!(stolen.get("/api/audit").0, 200);
    let out = server.admin_cli(
        &["add-user", "root", "--role", "admin", "--replace"],
        "new password 2\n",
    );
    assert!(out.status.success(), "{out:?}");
    let r = stolen.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"), "{}", r.1);
    assert_eq!(stolen.get("/api/audit").0, 401, "the session is gone");

    let out = server.admin_cli(&["remove-user", "ops"], "");
    assert!(out.status.success(), "{out:?}");
    let again = server.admin_cli(
        &["add-user", "ops", "--role", "admin"],
        &format!("{OPERATOR_PASSWORD}\n"),
    );
    assert!(again.status.success(), "{again:?}");
    let r = readded.get("/api/audit");
    assert_eq!(
        (r.0, code(&r)),
        (401, "unauthenticated"),
        "same password, new operator"
    );

    let mut fresh = AdminClient::new(&server);
    assert_eq!(fresh.login("root", "new password 2").0, 200);
    assert_eq!(fresh.get("/api/audit").0, 200);
}

#[test]
fn a_session_expires() {
    let server = TestServer::start(&[("ADMIN__SESSION_TTL_S", "1")]);
    let admin = server.operator("root", "admin");
    assert_eq!(admin.get("/api/session").0, 200, "live right after login");
    let end = Instant::now() + DEADLINE;
    loop {
        let r = admin.get("/api/session");
        if r.0 == 401 {
            assert_eq!(code(&r), "unauthenticated");
            break;
        }
        assert!(Instant::now() < end, "the session never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn api_keys_carry_a_role_and_stop_working_once_revoked_by_api_or_cli() {
    let server = TestServer::start(&[]);
    let admin_key = server.api_key("deploy", "admin");
    let me = admin_key.get("/api/session");
    assert_eq!(me.1["via"], "api_key");
    assert!(me.1.get("csrf_token").is_none());

    // An API key needs no CSRF token.
    let created = admin_key.post("/api/keys", json!({"name": "grafana", "role": "viewer"}));
    assert_eq!(created.0, 201, "{}", created.1);
    let viewer_key = AdminClient::new(&server).with_key(created.1["key"].as_str().unwrap());
    assert_eq!(viewer_key.get("/api/audit").0, 200);
    let r = viewer_key.post("/api/keys", json!({"name": "z", "role": "admin"}));
    assert_eq!((r.0, code(&r)), (403, "forbidden"));

    let dup = admin_key.post("/api/keys", json!({"name": "grafana", "role": "viewer"}));
    assert_eq!((dup.0, code(&dup)), (409, "conflict"));
    let listed = admin_key.get("/api/keys?limit=1");
    assert_eq!(listed.1["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.1["items"][0]["name"], "deploy");
    let cursor = listed.1["next_cursor"].as_str().unwrap().to_owned();
    let rest = admin_key.get(&format!("/api/keys?limit=1&cursor={cursor}"));
    assert_eq!(rest.1["items"][0]["name"], "grafana");
    assert!(rest.1.get("next_cursor").is_none(), "last page: {}", rest.1);
    assert!(
        !listed.1.to_string().contains("key_sha256"),
        "hashes never leave"
    );

    assert_eq!(admin_key.delete("/api/keys/grafana").0, 204);
    let r = viewer_key.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    let r = admin_key.delete("/api/keys/grafana");
    assert_eq!((r.0, code(&r)), (404, "not_found"));

    // The CLI revokes a key of the running server.
    let out = server.admin_cli(&["revoke-key", "deploy"], "");
    assert!(out.status.success(), "{out:?}");
    let r = admin_key.get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    let r = AdminClient::new(&server)
        .with_key("rck_not-a-key")
        .get("/api/audit");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));

    // Stored hashed: the key appears nowhere in the data dir.
    let key = created.1["key"].as_str().unwrap();
    let creds = std::fs::read_to_string(server.data_dir.join("admin/credentials.json")).unwrap();
    assert!(!creds.contains(key));
    assert!(!creds.contains(OPERATOR_PASSWORD));
}

#[test]
fn failed_admin_logins_are_throttled_and_audited() {
    let server = TestServer::start(&[
        ("LOGIN__FAILURES_FREE", "2"),
        ("LOGIN__FAILURE_DELAY_MS", "60000"),
        ("LOGIN__FAILURE_DELAY_MS_MAX", "60000"),
    ]);
    let admin = server.api_key("ops", "admin");
    let out = server.admin_cli(
        &["add-user", "root", "--role", "admin"],
        "right password 1\n",
    );
    assert!(out.status.success());
    let mut guesser = AdminClient::new(&server);
    for _ in 0..3 {
        let r = guesser.login("root", "wrong password");
        assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    }
    // Past the free failures even the right password waits.
    let r = guesser.login("root", "right password 1");
    assert_eq!((r.0, code(&r)), (429, "throttled"), "{}", r.1);
    assert!(r.1["error"]["retry_after_ms"].as_u64().unwrap() > 1_000);
    let r = guesser.login("nobody", "x");
    assert_eq!(r.0, 429, "the address is throttled too: {}", r.1);

    wait_audit(&admin, "a failed login", |e| {
        e["action"] == "admin.login_failed" && e["actor"] == "admin:root" && e["from"] != ""
    });
    wait_audit(&admin, "the CLI's add-user", |e| {
        e["action"] == "admin.user_add" && e["actor"] == "cli:tester" && e["target"] == "admin:root"
    });
}

/// A name that is no operator's may be a password typed in the wrong field: a failed login
/// with it leaves a marker in the audit log and the log files, not what was typed.
#[test]
fn a_failed_login_with_an_unknown_name_records_no_typed_name() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let typed = "Hunter2TypedInTheNameField";
    let r = AdminClient::new(&server).login(typed, "whatever");
    assert_eq!((r.0, code(&r)), (401, "unauthenticated"));
    let entry = wait_audit(&admin, "the failed login", |e| {
        e["action"] == "admin.login_failed"
    });
    assert_eq!(entry["actor"], "admin:(unknown name)", "{entry}");
    assert!(
        !audit(&admin).iter().any(|e| e.to_string().contains(typed)),
        "the typed name is in the audit log"
    );
    let failed = |q: &str| {
        admin.get(&format!("/api/logs?q={q}")).1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    common::wait_until("the failed login in the log files", || {
        lines = failed("admin%20login%20failed");
        !lines.is_empty()
    });
    assert_eq!(lines[0]["fields"]["operator"], "admin:(unknown name)");
    assert_eq!(
        failed(typed),
        Vec::<Value>::new(),
        "the typed name is logged"
    );
    assert_eq!(
        server.log_lines_with(typed),
        0,
        "the typed name is on the console"
    );
}

/// Guesses sent at once do not all pass the throttle: they are checked one at a time, and
/// the ones behind the failures past the free ones are refused before they cost a hash.
#[test]
fn parallel_admin_guesses_are_checked_one_at_a_time_and_throttled() {
    let server = TestServer::start(&[
        ("LOGIN__FAILURES_FREE", "2"),
        ("LOGIN__FAILURE_DELAY_MS", "60000"),
        ("LOGIN__FAILURE_DELAY_MS_MAX", "60000"),
    ]);
    let out = server.admin_cli(
        &["add-user", "root", "--role", "admin"],
        "right password 1\n",
    );
    assert!(out.status.success());
    let guesses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    AdminClient::new(server)
                        .login("root", &format!("wrong password {i}"))
                        .0
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let checked = guesses.iter().filter(|&&status| status == 401).count();
    let throttled = guesses.iter().filter(|&&status| status == 429).count();
    // Two free failures, the third sets the delay: at most three passwords were hashed.
    assert!(checked <= 3, "{guesses:?}");
    assert_eq!(checked + throttled, guesses.len(), "{guesses:?}");
}

/// Read-your-writes: an admin action answered is in the log read right after it, though the
/// writer batches entries (the second of two quick actions waits for the next write).
#[test]
fn an_answered_admin_action_is_in_the_log_read_right_after() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    for i in 0..3 {
        let r = admin.post(
            "/api/keys",
            json!({"name": format!("quick{i}"), "role": "viewer"}),
        );
        assert_eq!(r.0, 201, "{}", r.1);
        let targets: Vec<_> = audit(&admin)
            .into_iter()
            .filter(|e| e["action"] == "admin.key_add" && e["actor"] == "key:ops")
            .map(|e| e["target"].as_str().unwrap_or_default().to_owned())
            .collect();
        let expected: Vec<_> = (0..=i).rev().map(|j| format!("key:quick{j}")).collect();
        assert_eq!(targets, expected, "every answered action, newest first");
    }
}

#[tokio::test]
async fn changes_and_users_security_events_are_in_the_audit_log_newest_first() {
    let server = TestServer::start(&[]);
    let admin = server.operator("root", "admin");
    let r = admin.post("/api/keys", json!({"name": "k1", "role": "viewer"}));
    assert_eq!(r.0, 201);
    assert_eq!(admin.delete("/api/keys/k1").0, 204);
    let (_client, ok) = server.user("alice").await;

    let login = wait_audit(&admin, "alice's login", |e| {
        e["action"] == "user.login" && e["actor"] == format!("user:{}", ok.user_id)
    });
    assert!(login["from"].as_str().unwrap().starts_with("127.0.0.1"));
    let entries = audit(&admin);
    let pos = |action: &str| {
        entries
            .iter()
            .position(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} missing: {entries:?}"))
    };
    assert!(
        pos("admin.key_revoke") < pos("admin.key_add"),
        "newest first"
    );
    assert!(pos("admin.key_add") < pos("admin.login"));
    let add = &entries[pos("admin.key_add")];
    assert_eq!(add["actor"], "admin:root");
    assert_eq!(add["target"], "key:k1");

    // Paging walks every entry once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/audit?limit=2".to_owned(),
            Some(c) => format!("/api/audit?limit=2&cursor={c}"),
        };
        let page = admin.get(&path).1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "descending, no repeats");
    assert!(seen.len() >= entries.len().min(200));
}

/// A token login costs no argon2 and nothing paces one device's: looped (connect,
/// `Login{token}`, close), each added a `user.login` row, a thousand a second burying the
/// events worth reading. A device's token logins are audited once per interval now; a password
/// login always is.
#[tokio::test]
async fn a_devices_token_logins_looped_add_at_most_one_audit_row() {
    const TOKEN_LOGINS: usize = 200;
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let (_first, ok) = server.user("alice").await;
    let device = "alice-dev1";
    for i in 0..TOKEN_LOGINS {
        let mut c = common::account::hello(&server).await;
        let reply = c
            .request(Body::Login(v1::Login {
                credential: Some(login::Credential::Token(ok.token.clone())),
                device_id: device.into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert!(matches!(reply, Body::LoginOk(_)), "login {i}: {reply:?}");
    }
    // A password login of the device still has its row; bob's, after it, is the fence: the
    // audit log is written in the order entries were queued.
    let (_again, _) = server.device("alice", device).await;
    let (_bob, bob) = server.user("bob").await;
    wait_audit(&admin, "bob's login", |e| {
        e["action"] == "user.login" && e["actor"] == format!("user:{}", bob.user_id)
    });
    let rows: Vec<String> = audit(&admin)
        .into_iter()
        .filter(|e| e["action"] == "user.login" && e["actor"] == format!("user:{}", ok.user_id))
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        rows.iter()
            .all(|d| d.starts_with(&format!("device {device}"))),
        "{rows:?}"
    );
    let by_password = rows
        .iter()
        .filter(|d| *d == &format!("device {device}"))
        .count();
    assert_eq!(by_password, 2, "both password logins are audited: {rows:?}");
    assert!(
        rows.len() - by_password <= 1,
        "{} rows for {TOKEN_LOGINS} token logins of one device",
        rows.len() - by_password
    );
    assert_eq!(
        server.metric("ringchat_token_logins_total{outcome=\"ok\"}"),
        TOKEN_LOGINS as f64,
        "every token login is counted"
    );
}

#[test]
fn bad_input_gets_a_json_4xx() {
    let server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/api/keys",
            Some("{not json".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/keys",
            Some(r#"{"name": 5, "role": "admin"}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/keys",
            Some(r#"{"name": "a", "role": "root"}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/keys",
            Some(r#"{"name": "a", "role": "admin", "extra": 1}"#.into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/keys",
            Some(r#"{"name": "a b", "role": "admin"}"#.into()),
            422,
            "invalid",
        ),
        (
            "POST",
            "/api/keys",
            Some(format!(
                r#"{{"name": "{}", "role": "admin"}}"#,
                "x".repeat(70_000)
            )),
            413,
            "payload_too_large",
        ),
        ("GET", "/api/audit?limit=0", None, 422, "invalid"),
        ("GET", "/api/audit?limit=abc", None, 400, "bad_request"),
        ("GET", "/api/audit?cursor=zz", None, 400, "bad_request"),
        ("GET", "/api/audit?bogus=1", None, 400, "bad_request"),
        ("GET", "/api/no-such-thing", None, 404, "not_found"),
        ("POST", "/api/overview", None, 405, "method_not_allowed"),
        ("DELETE", "/api/users", None, 405, "method_not_allowed"),
        ("PUT", "/healthz", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, want) in cases {
        let r = admin.call(method, path, body.clone());
        assert_eq!(
            (r.0, code(&r)),
            (status, want),
            "{method} {path} {:?}: {}",
            body.map(|b| b.chars().take(60).collect::<String>()),
            r.1
        );
    }
    // A 405 still says which methods the path has.
    let mut raw = std::net::TcpStream::connect(server.admin).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(
        &mut raw,
        b"POST /api/overview HTTP/1.0\r\nHost: admin\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    let head = answer.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 405"), "{answer}");
    assert!(head.contains("\r\nallow: get,head\r\n"), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    // Any limit up to 10000 is taken (clamped to admin.page_items_max: the next test), past it
    // refused.
    let r = admin.get("/api/audit?limit=10000");
    assert_eq!(r.0, 200, "{}", r.1);
    let r = admin.get("/api/audit?limit=10001");
    assert_eq!((r.0, code(&r)), (422, "invalid"));
    let r = AdminClient::new(&server).post(
        "/api/session",
        json!({"username": "a", "password": "b", "otp": 1}),
    );
    assert_eq!((r.0, code(&r)), (400, "bad_request"));
}

/// A limit past `admin.page_items_max` (or none) gets a page of that many and a cursor to the
/// rest, as the chat protocol's pages are clamped.
#[test]
fn admin_pages_are_capped_at_page_items_max() {
    let server = TestServer::start(&[("ADMIN__PAGE_ITEMS_MAX", "2")]);
    let admin = server.api_key("ops", "admin");
    // Five audited changes.
    for i in 1..=5 {
        let r = admin.post(
            "/api/keys",
            json!({"name": format!("k{i}"), "role": "viewer"}),
        );
        assert_eq!(r.0, 201, "{}", r.1);
    }
    for path in ["/api/audit?limit=10000", "/api/audit"] {
        let r = admin.get(path);
        assert_eq!(r.0, 200, "{path}: {}", r.1);
        assert_eq!(r.1["items"].as_array().unwrap().len(), 2, "{path}: {}", r.1);
        assert!(r.1["next_cursor"].is_string(), "{path}: {}", r.1);
    }
    // Walking the cursors with the big limit still gets every entry, two at a time.
    let mut cursor = String::new();
    let mut seen = 0;
    loop {
        let r = admin.get(&format!("/api/audit?limit=10000&cursor={cursor}"));
        assert_eq!(r.0, 200, "{}", r.1);
        let items = r.1["items"].as_array().unwrap();
        assert!((1..=2).contains(&items.len()), "{}", r.1);
        seen += items.len();
        match r.1["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert!(seen >= 5, "{seen} entries");
}

#[test]
fn the_openapi_document_describes_the_api() {
    let server = TestServer::start(&[]);
    let doc = AdminClient::new(&server).get("/api/openapi.json");
    assert_eq!(doc.0, 200);
    assert!(doc.1["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/session",
        "/api/keys",
        "/api/keys/{name}",
        "/api/audit",
    ] {
        assert!(doc.1["paths"].get(path).is_some(), "{path} missing");
    }
    // The dashboard is served too, with a content policy.
    let (status, headers, page) = AdminClient::new(&server).get_text("/");
    assert_eq!(status, 200);
    assert!(page.contains("ringchat admin"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
}

#[test]
fn audit_entries_queued_before_a_clean_stop_are_kept() {
    let mut server = TestServer::start(&[]);
    let admin = server.api_key("ops", "admin");
    for i in 0..20 {
        let r = admin.post(
            "/api/keys",
            json!({"name": format!("k{i}"), "role": "viewer"}),
        );
        assert_eq!(r.0, 201);
    }
    // Stopped at once: the entries may still be queued; the stop drains them.
    assert!(server.stop().success());
    server.restart();
    let admin = AdminClient::new(&server).with_key(&admin.key().unwrap());
    let entries = audit(&admin);
    let added = entries
        .iter()
        .filter(|e| e["action"] == "admin.key_add" && e["actor"] == "key:ops")
        .count();
    assert_eq!(added, 20, "{entries:?}");
}

/// The operator's stored hash, as the credentials file in `data` holds it.
fn stored_operator_hash(data: &std::path::Path, name: &str) -> String {
    let file = std::fs::read(data.join("admin").join("credentials.json")).unwrap();
    let file: Value = serde_json::from_slice(&file).unwrap();
    let users = file["users"].as_array().unwrap();
    let user = users.iter().find(|u| u["name"] == name).unwrap();
    user["password_hash"].as_str().unwrap().to_owned()
}

/// Raising the argon2 parameters later (`accounts.argon2_memory_kib`, `…_iterations`): an
/// operator's next dashboard login stores their password hashed with the new ones, and the
/// session it starts holds. Otherwise an operator's hash stayed at the old parameters for ever
/// while an unknown name is hashed with the new ones: a known name answered faster.
#[test]
fn an_operator_login_after_the_argon2_parameters_were_raised_stores_the_new_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[]);
    drop(server.operator("root", "admin"));
    server.stop();
    let before = stored_operator_hash(&data, "root");
    assert!(before.contains("m=256,t=1,"), "{before}");

    let server = TestServer::start_in(
        &data,
        &[
            ("ACCOUNTS__ARGON2_MEMORY_KIB", "512"),
            ("ACCOUNTS__ARGON2_ITERATIONS", "2"),
        ],
    );
    let mut root = AdminClient::new(&server);
    let (status, body) = root.login("root", OPERATOR_PASSWORD);
    assert_eq!(status, 200, "{body}");
    let after = stored_operator_hash(&data, "root");
    assert!(after.contains("m=512,t=2,"), "{after}");
    // The session the login started is bound to the hash now stored: it holds.
    let me = root.get("/api/session");
    assert_eq!(me.0, 200, "{}", me.1);
    // The next login verifies against the new hash, and stores nothing new.
    let mut again = AdminClient::new(&server);
    assert_eq!(again.login("root", OPERATOR_PASSWORD).0, 200);
    assert_eq!(stored_operator_hash(&data, "root"), after);
    assert_eq!(root.get("/api/session").0, 200);
}

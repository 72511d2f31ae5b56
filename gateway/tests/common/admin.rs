//! The admin API from a test: the `ringchat admin` CLI on the server's data dir, and a small
//! HTTP client holding an API key or a dashboard session (cookie + CSRF token).

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::TestServer;

pub const OPERATOR_PASSWORD: &str = "operator password 1";

impl TestServer {
    /// Runs `ringchat admin ARGS` against this server's data dir, `stdin` as its input.
    pub fn admin_cli(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringchat"))
            .arg("admin")
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("USER", "tester")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ringchat admin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("ringchat admin exits")
    }

    /// A fresh API key with `role` ("admin" or "viewer"), made by the CLI.
    pub fn api_key(&self, name: &str, role: &str) -> AdminClient {
        let out = self.admin_cli(&["add-key", name, "--role", role], "");
        assert!(out.status.success(), "add-key: {out:?}");
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        AdminClient::new(self).with_key(&key)
    }

    /// An operator `name` with `role`, logged in to the dashboard API.
    pub fn operator(&self, name: &str, role: &str) -> AdminClient {
        let out = self.admin_cli(
            &["add-user", name, "--role", role],
            &format!("{OPERATOR_PASSWORD}\n"),
        );
        assert!(out.status.success(), "add-user: {out:?}");
        let mut client = AdminClient::new(self);
        let (status, body) = client.login(name, OPERATOR_PASSWORD);
        assert_eq!(status, 200, "login: {body}");
        client
    }
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
pub type Reply = (u16, Value);

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    agent: ureq::Agent,
    key: Option<String>,
    cookie: Option<String>,
    pub csrf: Option<String>,
    /// Send the CSRF token on changes (a test turns it off to see the refusal).
    pub send_csrf: bool,
}

impl AdminClient {
    /// Waits (bounded) until the notification `id` is no longer running; returns its view.
    pub fn notification_when_done(&self, id: &str) -> Value {
        let mut view = Value::Null;
        super::wait_until(&format!("notification {id} to finish"), || {
            let (status, v) = self.get(&format!("/api/notifications/{id}"));
            assert_eq!(status, 200, "{v}");
            view = v;
            view["state"] != "running"
        });
        view
    }

    pub fn new(server: &TestServer) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{}", server.admin),
            agent,
            key: None,
            cookie: None,
            csrf: None,
            send_csrf: true,
        }
    }

    /// The API key this client sends, if any.
    pub fn key(&self) -> Option<String> {
        self.key.clone()
    }

    /// The session cookie (`name=value`) this client sends, if any.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.clone()
    }

    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// `POST /api/session`; keeps the cookie and the CSRF token on success.
    pub fn login(&mut self, username: &str, password: &str) -> Reply {
        let (reply, cookie) = self.post_session(username, password);
        if reply.0 == 200 {
            let cookie = cookie.expect("a session cookie");
            self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
            self.csrf = reply.1["csrf_token"].as_str().map(str::to_owned);
        }
        reply
    }

    /// The raw `Set-Cookie` of a login, for checking its attributes.
    pub fn login_cookie(&self, username: &str, password: &str) -> (u16, Option<String>) {
        let (reply, cookie) = self.post_session(username, password);
        (reply.0, cookie)
    }

    fn post_session(&self, username: &str, password: &str) -> (Reply, Option<String>) {
        let body = serde_json::json!({ "username": username, "password": password });
        let resp = self
            .agent
            .post(format!("{}/api/session", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("admin listener reachable");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (read(resp), cookie)
    }

    /// A GET whose answer is not JSON (the dashboard's files): status, headers, text.
    pub fn get_text(&self, path: &str) -> (u16, ureq::http::HeaderMap, String) {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = req.call().expect("admin listener reachable");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (resp.status().as_u16(), resp.headers().clone(), text)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body.to_string()))
    }
    pub fn patch(&self, path: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(body.to_string()))
    }
    pub fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None)
    }

    /// Any method, with a raw body (sent as JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<String>) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        if let Some(cookie) = &self.cookie {
            req = req.header("Cookie", cookie.as_str());
        }
        if method != "GET"
            && self.send_csrf
            && let Some(csrf) = &self.csrf
        {
            req = req.header("X-CSRF-Token", csrf.as_str());
        }
        let resp = match body {
            Some(body) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(body)
                    .unwrap();
                self.agent.run(req)
            }
            None => self.agent.run(req.body(()).unwrap()),
        }
        .expect("admin listener reachable");
        read(resp)
    }
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

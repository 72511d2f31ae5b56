//! The admin listener's live log tail (`GET /api/logs/stream`) read from a raw socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use serde_json::Value;

/// A Server-Sent Events reader on a raw socket: (event, id, data) per event.
pub struct Sse {
    pub status: u16,
    events: mpsc::Receiver<(String, String, String)>,
    socket: TcpStream,
    /// The body of a refused stream.
    body: String,
}

impl Sse {
    pub fn open(admin: SocketAddr, key: Option<&str>, query: &str, last_id: Option<&str>) -> Self {
        let auth = key.map(|key| format!("Authorization: Bearer {key}"));
        Self::open_with(admin, auth.as_deref(), query, last_id)
    }

    /// A dashboard session's stream: `cookie` is the `name=value` of its session cookie.
    pub fn open_with_cookie(admin: SocketAddr, cookie: &str, query: &str) -> Self {
        Self::open_with(admin, Some(&format!("Cookie: {cookie}")), query, None)
    }

    /// `auth`: the header line that says who is asking, if any.
    fn open_with(
        admin: SocketAddr,
        auth: Option<&str>,
        query: &str,
        last_id: Option<&str>,
    ) -> Self {
        let mut socket = TcpStream::connect(admin).unwrap();
        let mut req = format!("GET /api/logs/stream?{query} HTTP/1.0\r\nHost: test\r\n");
        if let Some(auth) = auth {
            req.push_str(&format!("{auth}\r\n"));
        }
        if let Some(id) = last_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        socket.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut head = String::new();
        reader.read_line(&mut head).unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
        }
        let (tx, events) = mpsc::channel();
        if status != 200 {
            let mut body = String::new();
            let _ = reader.read_to_string(&mut body);
            return Self {
                status,
                events,
                socket,
                body,
            };
        }
        std::thread::spawn(move || {
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in reader.lines().map_while(Result::ok) {
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        let e = (
                            std::mem::take(&mut event),
                            std::mem::take(&mut id),
                            std::mem::take(&mut data),
                        );
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim_start().to_owned();
                }
            }
        });
        Self {
            status,
            events,
            socket,
            body: String::new(),
        }
    }

    /// The next `log` event's (id, line), within the deadline.
    pub fn next_log(&self) -> (String, Value) {
        loop {
            let (event, id, data) = self
                .events
                .recv_timeout(super::WAIT_DEADLINE)
                .expect("an event in time");
            if event == "log" {
                return (id, serde_json::from_str(&data).unwrap());
            }
        }
    }

    /// Waits (bounded) for the server to end the stream; the `log` events sent before it ended.
    pub fn logs_until_end(&self) -> Vec<Value> {
        let deadline = std::time::Instant::now() + super::WAIT_DEADLINE;
        let mut logs = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok((event, _, data)) if event == "log" => {
                    logs.push(serde_json::from_str(&data).unwrap());
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return logs,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the stream did not end in time; sent meanwhile: {logs:?}")
                }
            }
        }
    }

    /// The body of a refused stream (a JSON error).
    pub fn error_body(&self) -> Value {
        serde_json::from_str(self.body.trim()).unwrap_or(Value::Null)
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

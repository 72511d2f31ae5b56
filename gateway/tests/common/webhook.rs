//! A push gateway on loopback for the offline push tests: a plain HTTP/1.1 server on std
//! threads that keeps every request it gets and answers with the status the test sets (or is
//! not there at all: the port is known before the sink listens, for "receiver down").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the sink got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub struct WebhookSink {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    /// The body of the answers (JSON), empty by default.
    answer_body: Arc<Mutex<String>>,
}

/// A loopback address nobody listens on (yet): connecting to it is refused. Outside the
/// ephemeral range ([`super::free_port`]): no listener or connection of the test or its server
/// takes the port before [`WebhookSink::start_on`] binds it.
pub fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::free_port()))
}

impl WebhookSink {
    pub fn start() -> Self {
        Self::listen(TcpListener::bind("127.0.0.1:0").expect("bind the sink"))
    }

    /// Listens on `addr` (a port from [`free_port`]), answering 200 until told otherwise.
    pub fn start_on(addr: SocketAddr) -> Self {
        Self::listen(TcpListener::bind(addr).expect("bind the sink"))
    }

    fn listen(listener: TcpListener) -> Self {
        let sink = Self {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            answer_body: Arc::default(),
        };
        let (got, status, answer) = (
            Arc::clone(&sink.got),
            Arc::clone(&sink.status),
            Arc::clone(&sink.answer_body),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (got, status, answer) =
                    (Arc::clone(&got), Arc::clone(&status), Arc::clone(&answer));
                std::thread::spawn(move || serve(stream, &got, &status, &answer));
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    /// The status the next requests are answered with.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The body (JSON) the next requests are answered with.
    pub fn answer_body(&self, body: &str) {
        *self.answer_body.lock().unwrap() = body.to_owned();
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until a request answered 200 matches `pred`; returns it.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        let end = Instant::now() + deadline;
        loop {
            if let Some(r) = self
                .received()
                .into_iter()
                .find(|r| r.status == 200 && pred(r))
            {
                return r;
            }
            assert!(
                Instant::now() < end,
                "no webhook request for {what}; got {:?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One connection: requests until the peer closes (each answered, `Connection: close` after).
fn serve(
    stream: TcpStream,
    got: &Mutex<Vec<Received>>,
    status: &AtomicU16,
    answer: &Mutex<String>,
) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let code = status.load(Ordering::SeqCst);
    got.lock().unwrap().push(Received {
        path,
        headers,
        body,
        status: code,
    });
    let answer = answer.lock().unwrap().clone();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// Registers an FCM push `token` for the device `c` is logged in as.
#[allow(dead_code)] // Not every test crate that has `common` registers tokens.
pub async fn register_token(c: &mut ringchat_bench::client::Client, token: &str) {
    register_token_of(c, ringchat_proto::v1::PushProvider::Fcm, token).await;
}

/// Registers a push `token` of `provider` for the device `c` is logged in as.
#[allow(dead_code)] // Not every test crate that has `common` registers tokens.
pub async fn register_token_of(
    c: &mut ringchat_bench::client::Client,
    provider: ringchat_proto::v1::PushProvider,
    token: &str,
) {
    use ringchat_proto::Body;
    use ringchat_proto::v1;
    let reply = super::contacts::ask(
        c,
        Body::RegisterPushToken(v1::RegisterPushToken {
            provider: provider as i32,
            token: token.into(),
        }),
    )
    .await;
    assert_eq!(
        reply,
        Body::PushTokenOk(v1::PushTokenOk { registered: true })
    );
}

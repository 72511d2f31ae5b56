//! Signing a run's users up before the load: connect, hello, register if the name is new, log
//! in. A server under login admission answers some of these "later" (`SERVER_FULL`,
//! `UNAVAILABLE` or `RATE_LIMITED` with a `retry_after_ms`) and closes the connection; a setup
//! then reconnects after exactly that delay (the server jitters it already), as a client does,
//! and counts the refusal so that the report shows admission at work.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, password_login};
use crate::transport::{Link, Transport, Ws};

/// Attempts at one sign-up (each on a new connection) before giving up on a server that keeps
/// saying "later".
pub const SIGN_UP_ATTEMPTS_MAX: u32 = 1_000;
/// No attempt starts after this long from the first, nor when the server's `retry_after_ms`
/// would end past it.
pub const SIGN_UP_DEADLINE: Duration = Duration::from_secs(300);
/// One attempt (connect, hello, register, login) is abandoned after this long: a failure.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Who signs up.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub device_id: &'a str,
}

impl<'a> Identity<'a> {
    /// A user on the load generator's own device, `bench`.
    pub fn bench(username: &'a str, password: &'a str) -> Self {
        Self {
            username,
            password,
            device_id: "bench",
        }
    }
}

/// Where a sign-up connects: the transport, the server's address, and for TCP the source
/// address to bind (many connections to one server need several, see `connect`).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
}

impl Target {
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tcp,
            addr,
            source: None,
        }
    }
}

/// "Later" answers met while signing up, counted over a run's setup (all its tasks and
/// threads share one).
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<AtomicU64>);

impl Refusals {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What an answer other than the one asked for means to a client that is not logged in yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The server said "later": reconnect after this long.
    Later { code: ErrorCode, after: Duration },
    /// Not something to retry.
    Failed(String),
}

/// An `Error` that says "later" (`retry_after_ms` > 0 with `SERVER_FULL`, `UNAVAILABLE` or
/// `RATE_LIMITED`) is a refusal to retry; anything else, the same codes without a delay
/// included, is a failure. `what` names the request in the failure's message.
pub fn refusal_or_failure(what: &str, body: Body) -> Verdict {
    match body {
        Body::Error(e) => {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
            let later = matches!(
                code,
                ErrorCode::ServerFull | ErrorCode::Unavailable | ErrorCode::RateLimited
            );
            if later && e.retry_after_ms > 0 {
                Verdict::Later {
                    code,
                    after: Duration::from_millis(e.retry_after_ms),
                }
            } else if later {
                Verdict::Failed(format!(
                    "{what}: {} without retry_after_ms ({})",
                    code.as_str_name(),
                    e.message
                ))
            } else {
                Verdict::Failed(format!("{what}: {} ({})", code.as_str_name(), e.message))
            }
        }
        other => Verdict::Failed(format!(
            "{what}: unexpected {}",
            ringchat_proto::body_name(&other)
        )),
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// The server closed the connection.
    Closed,
    /// Writing, reading or decoding failed.
    Broken(anyhow::Error),
}

/// Sends a request and returns its answer. An `Error` the server sends on its own (request id
/// 0: `SERVER_FULL` from a full shard, before it closes) answers it too; anything else met on
/// the way is passed over. `answered` is set by any frame received.
pub async fn ask(c: &mut Client, body: Body, answered: &mut bool) -> Result<Body, NoAnswer> {
    let id = c.send(body).await.map_err(NoAnswer::Broken)?;
    loop {
        match c.recv().await {
            Ok(Some(frame)) => {
                *answered = true;
                if let Some(body) = answer_to(id, frame) {
                    return Ok(body);
                }
            }
            Ok(None) => return Err(NoAnswer::Closed),
            Err(e) => return Err(NoAnswer::Broken(e)),
        }
    }
}

/// The frame's body if it answers request `id`.
fn answer_to(id: u64, frame: Frame) -> Option<Body> {
    match frame.body {
        Some(body) if frame.request_id == id => Some(body),
        Some(Body::Error(e)) if frame.request_id == 0 => Some(Body::Error(e)),
        _ => None,
    }
}

/// [`ask`] over a WebSocket, with the caller's request id.
async fn ws_ask(ws: &mut Ws, id: u64, body: Body) -> Result<Body, NoAnswer> {
    let frame = Frame {
        request_id: id,
        body: Some(body),
    };
    ws.send(Message::Binary(frame.encode_to_vec().into()))
        .await
        .map_err(|e| NoAnswer::Broken(e.into()))?;
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(NoAnswer::Closed),
            Some(Err(e)) => return Err(NoAnswer::Broken(e.into())),
            Some(Ok(Message::Binary(data))) => {
                let frame = Frame::decode(data).map_err(|e| NoAnswer::Broken(e.into()))?;
                if let Some(body) = answer_to(id, frame) {
                    return Ok(body);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Why one attempt did not end logged in.
enum Attempt {
    Later { code: ErrorCode, after: Duration },
    Failed(anyhow::Error),
}

impl From<Verdict> for Attempt {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Later { code, after } => Attempt::Later { code, after },
            Verdict::Failed(why) => Attempt::Failed(anyhow!(why)),
        }
    }
}

fn no_answer(what: &str, e: NoAnswer) -> Attempt {
    Attempt::Failed(match e {
        NoAnswer::Closed => anyhow!("{what}: connection closed before the answer"),
        NoAnswer::Broken(e) => e.context(format!("{what}: no answer")),
    })
}

/// Signs `who` up at `to` (registering the name if it is new) and logs in, reconnecting after
/// the server's `retry_after_ms` each time it says "later" (counted in `refusals`), at most
/// [`SIGN_UP_ATTEMPTS_MAX`] times within [`SIGN_UP_DEADLINE`]. Any other error ends it.
pub async fn sign_up(
    to: Target,
    who: &Identity<'_>,
    refusals: &Refusals,
) -> anyhow::Result<(Link, v1::LoginOk)> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let once = async {
            match to.transport {
                Transport::Tcp => attempt_tcp(to, who).await,
                Transport::Ws => attempt_ws(to, who).await,
            }
        };
        let (code, after) = match tokio::time::timeout(ATTEMPT_TIMEOUT, once).await {
            Ok(Ok(signed_up)) => return Ok(signed_up),
            Ok(Err(Attempt::Later { code, after })) => (code, after),
            Ok(Err(Attempt::Failed(e))) => {
                return Err(e.context(format!("signing up {} at {}", who.username, to.addr)));
            }
            Err(_) => anyhow::bail!(
                "signing up {} at {}: no login within {ATTEMPT_TIMEOUT:?}",
                who.username,
                to.addr
            ),
        };
        refusals.add();
        // A server on its default configuration takes 1,000 sign-ups an hour from one address:
        // a load of more users stops here, so say which key lets it through.
        let hint = if code == ErrorCode::RateLimited {
            "; the server limits sign-ups per address (accounts.registrations_per_ip_per_hour, 1000 by default): set it to 0 on the server for a benchmark (bench/configs/server.toml does), or reuse users made before with the same --user-prefix"
        } else {
            ""
        };
        let code = code.as_str_name();
        if attempt >= SIGN_UP_ATTEMPTS_MAX {
            anyhow::bail!(
                "signing up {} at {}: still refused ({code}) after {attempt} attempts in {:?}{hint}",
                who.username,
                to.addr,
                started.elapsed()
            );
        }
        if started.elapsed() + after > SIGN_UP_DEADLINE {
            anyhow::bail!(
                "signing up {} at {}: refused ({code}) and told to come back in {after:?}, past the {SIGN_UP_DEADLINE:?} setup deadline ({attempt} attempts){hint}",
                who.username,
                to.addr
            );
        }
        tokio::time::sleep(after).await;
    }
}

/// [`sign_up`] over TCP, for callers that go on with the request/reply [`Client`].
pub async fn sign_up_tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
    who: &Identity<'_>,
    refusals: &Refusals,
) -> anyhow::Result<(Client, v1::LoginOk)> {
    let to = Target {
        transport: Transport::Tcp,
        addr,
        source,
    };
    match sign_up(to, who, refusals).await? {
        (Link::Tcp(client), ok) => Ok((client, ok)),
        (Link::Ws(_), _) => unreachable!("a TCP target gives a TCP link"),
    }
}

fn hello() -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "ringchat-bench".into(),
    })
}

fn register(who: &Identity<'_>) -> Body {
    Body::Register(v1::Register {
        username: who.username.into(),
        password: who.password.into(),
        ..Default::default()
    })
}

fn login(who: &Identity<'_>) -> Body {
    Body::Login(password_login(who.username, who.password, who.device_id))
}

/// The register step's answer: created, or the name was taken already (a later run, or an
/// earlier attempt whose login was refused) — both go on to the login.
fn registered(body: Body) -> Result<(), Attempt> {
    match body {
        Body::RegisterOk(_) => Ok(()),
        Body::Error(e) if e.code == ErrorCode::UsernameTaken as i32 => Ok(()),
        other => Err(refusal_or_failure("Register", other).into()),
    }
}

async fn attempt_tcp(to: Target, who: &Identity<'_>) -> Result<(Link, v1::LoginOk), Attempt> {
    let mut c = Client::connect_from(to.addr, to.source)
        .await
        .map_err(Attempt::Failed)?;
    let mut answered = false;
    match ask(&mut c, hello(), &mut answered)
        .await
        .map_err(|e| no_answer("Hello", e))?
    {
        Body::HelloOk(ok) => {
            c.heartbeat = Some(Duration::from_millis(ok.heartbeat_interval_ms.into()));
        }
        other => return Err(refusal_or_failure("Hello", other).into()),
    }
    let body = ask(&mut c, register(who), &mut answered)
        .await
        .map_err(|e| no_answer("Register", e))?;
    registered(body)?;
    match ask(&mut c, login(who), &mut answered)
        .await
        .map_err(|e| no_answer("Login", e))?
    {
        Body::LoginOk(ok) => Ok((Link::Tcp(c), ok)),
        other => Err(refusal_or_failure("Login", other).into()),
    }
}

async fn attempt_ws(to: Target, who: &Identity<'_>) -> Result<(Link, v1::LoginOk), Attempt> {
    let stream = crate::client::tcp_connect_from(to.addr, to.source)
        .await
        .map_err(Attempt::Failed)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", to.addr), stream)
        .await
        .context("WebSocket upgrade")
        .map_err(Attempt::Failed)?;
    match ws_ask(&mut ws, 1, hello())
        .await
        .map_err(|e| no_answer("Hello", e))?
    {
        Body::HelloOk(_) => {}
        other => return Err(refusal_or_failure("Hello", other).into()),
    }
    let body = ws_ask(&mut ws, 2, register(who))
        .await
        .map_err(|e| no_answer("Register", e))?;
    registered(body)?;
    match ws_ask(&mut ws, 3, login(who))
        .await
        .map_err(|e| no_answer("Login", e))?
    {
        Body::LoginOk(ok) => Ok((Link::Ws(ws), ok)),
        other => Err(refusal_or_failure("Login", other).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: ErrorCode, ms: u64) -> Body {
        Body::Error(v1::Error {
            code: code as i32,
            message: String::new(),
            retry_after_ms: ms,
        })
    }

    #[test]
    fn later_with_a_delay_is_a_refusal_anything_else_a_failure() {
        for code in [
            ErrorCode::ServerFull,
            ErrorCode::Unavailable,
            ErrorCode::RateLimited,
        ] {
            assert_eq!(
                refusal_or_failure("Login", err(code, 40)),
                Verdict::Later {
                    code,
                    after: Duration::from_millis(40)
                }
            );
        }
        assert!(matches!(
            refusal_or_failure("Login", err(ErrorCode::Unavailable, 0)),
            Verdict::Failed(why) if why.contains("without retry_after_ms")
        ));
        assert!(matches!(
            refusal_or_failure("Login", err(ErrorCode::InvalidCredentials, 40)),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            refusal_or_failure("Hello", Body::Pong(v1::Pong::default())),
            Verdict::Failed(why) if why.contains("unexpected")
        ));
    }

    #[test]
    fn an_error_of_the_server_s_own_answers_any_request() {
        let frame = |request_id, body| Frame {
            request_id,
            body: Some(body),
        };
        assert!(answer_to(3, frame(0, err(ErrorCode::ServerFull, 10))).is_some());
        assert!(answer_to(3, frame(3, Body::Pong(v1::Pong::default()))).is_some());
        assert!(answer_to(3, frame(0, Body::Pong(v1::Pong::default()))).is_none());
        assert!(answer_to(3, frame(2, err(ErrorCode::ServerFull, 10))).is_none());
    }
}

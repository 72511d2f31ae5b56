//! One storm client: connect, hello, log in, retrying as a real client does when the server
//! says "later" or the connection goes before the login is answered; then stay connected.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use ringchat_proto::v1;
use ringchat_proto::{Body, Frame, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Client;
use crate::scenario::{splitmix, unit};
use crate::signup::{self, Identity, NoAnswer, Refusals, Verdict, refusal_or_failure};

/// Backoff after a refused, reset or closed connection that came with no `retry_after_ms`:
/// doubling from the first to the cap, each wait jittered down by up to half.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Bytes a held connection reads at a time (what it reads is dropped: pushes, presence, pongs).
const HOLD_READ_BYTES: usize = 4096;

/// How a storm client logs in.
#[derive(Debug, Clone)]
pub enum Credential {
    Token { user_id: u64, token: String },
    Password { username: String, password: String },
}

impl Credential {
    fn login(&self) -> v1::Login {
        match self {
            Credential::Token { user_id, token } => v1::Login {
                account: Some(v1::login::Account::UserId(*user_id)),
                credential: Some(v1::login::Credential::Token(token.clone())),
                device_id: "bench".into(),
                platform: v1::Platform::Desktop as i32,
                ..Default::default()
            },
            Credential::Password { username, password } => {
                crate::client::password_login(username, password, "bench")
            }
        }
    }
}

/// What one load thread's storm clients saw.
#[derive(Debug)]
pub struct Tally {
    /// Server answers that said "later" (`retry_after_ms` > 0), by error code.
    pub refusals: BTreeMap<String, u64>,
    /// Connections that failed or went before the login was answered, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Attempts after the first.
    pub retries: u64,
    pub logged_in: u64,
    /// Clients that never logged in, by why.
    pub failures: BTreeMap<String, u64>,
    /// From a client's first connect to its `LoginOk`, retries included, µs.
    pub login_latency_us: Histogram<u64>,
    /// When the last login of this thread completed, since the run's start.
    pub last_login: Option<Duration>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            refusals: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            retries: 0,
            logged_in: 0,
            failures: BTreeMap::new(),
            login_latency_us: crate::scenario::phases::latency_histogram(),
            last_login: None,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        for (into, from) in [
            (&mut self.refusals, &other.refusals),
            (&mut self.disconnects, &other.disconnects),
            (&mut self.failures, &other.failures),
        ] {
            for (k, n) in from {
                *into.entry(k.clone()).or_default() += n;
            }
        }
        self.retries += other.retries;
        self.logged_in += other.logged_in;
        self.login_latency_us
            .add(&other.login_latency_us)
            .expect("same bounds");
        self.last_login = self.last_login.max(other.last_login);
    }
}

/// Why one attempt did not end logged in.
enum Outcome {
    /// The server said "later": retry after its `retry_after_ms`.
    Refused { code: String, after: Duration },
    /// The connection failed or went before the login was answered: retry after a backoff.
    Disconnected(&'static str),
    /// Not something to retry.
    Failed(String),
}

impl From<Verdict> for Outcome {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Later { code, after } => Outcome::Refused {
                code: code.as_str_name().to_owned(),
                after,
            },
            Verdict::Failed(why) => Outcome::Failed(why),
        }
    }
}

/// Where a storm client is and what it shares with its thread.
pub struct Storm {
    pub addr: SocketAddr,
    pub start: Instant,
    pub deadline: Instant,
    pub limit: Rc<tokio::sync::Semaphore>,
    pub tally: Rc<RefCell<Tally>>,
    /// Logged-in connections the server closed before the end of the run.
    pub dropped: Rc<Cell<u64>>,
    pub progress: std::sync::Arc<crate::scenario::Progress>,
}

impl Storm {
    /// Logs client `index` in (retrying within the deadline) and returns its connection and
    /// heartbeat interval, or `None` when it gave up (counted in the tally).
    pub async fn log_in(
        &self,
        index: usize,
        source: Option<IpAddr>,
        cred: &Credential,
    ) -> Option<(Client, Duration)> {
        let mut first: Option<Instant> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut seed = index as u64;
        loop {
            let attempt = {
                let _permit = self.limit.acquire().await.expect("open semaphore");
                first.get_or_insert_with(Instant::now);
                tokio::time::timeout_at(self.deadline.into(), attempt(self.addr, source, cred))
                    .await
                    .unwrap_or_else(|_| Err(Outcome::Failed("timeout".into())))
            };
            let wait = match attempt {
                Ok((client, heartbeat)) => {
                    let now = Instant::now();
                    let mut t = self.tally.borrow_mut();
                    let took = now - first.unwrap_or(now);
                    t.login_latency_us
                        .record(clamp_us(took))
                        .expect("clamped into bounds");
                    t.logged_in += 1;
                    t.last_login = t.last_login.max(Some(now - self.start));
                    self.progress
                        .done
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Some((client, heartbeat));
                }
                Err(Outcome::Failed(why)) => return self.fail(why),
                Err(Outcome::Refused { code, after }) => {
                    *self.tally.borrow_mut().refusals.entry(code).or_default() += 1;
                    after
                }
                Err(Outcome::Disconnected(reason)) => {
                    *self
                        .tally
                        .borrow_mut()
                        .disconnects
                        .entry(reason.to_owned())
                        .or_default() += 1;
                    seed = splitmix(seed);
                    let jittered = backoff.mul_f64(0.5 + 0.5 * unit(seed));
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    jittered
                }
            };
            if Instant::now() + wait >= self.deadline {
                return self.fail("still refused at --storm-timeout".into());
            }
            self.tally.borrow_mut().retries += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn fail(&self, why: String) -> Option<(Client, Duration)> {
        *self.tally.borrow_mut().failures.entry(why).or_default() += 1;
        self.progress
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }

    /// Keeps a logged-in connection open: reads and drops what the server sends, pings at the
    /// heartbeat interval. Returns (and counts) when the server closes it; the caller aborts it
    /// at the end of the run.
    pub async fn hold(&self, client: Client, heartbeat: Duration) {
        let (stream, _) = client.into_parts();
        let (mut read, mut write) = stream.into_split();
        let mut buf = BytesMut::with_capacity(HOLD_READ_BYTES);
        let heartbeat = heartbeat.max(Duration::from_millis(100));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let mut scratch = BytesMut::new();
        let mut request_id = 1_000u64;
        loop {
            tokio::select! {
                got = read.read_buf(&mut buf) => {
                    if !matches!(got, Ok(n) if n > 0) {
                        break;
                    }
                    buf.clear();
                }
                _ = ping.tick() => {
                    request_id += 1;
                    scratch.clear();
                    let frame = Frame {
                        request_id,
                        body: Some(Body::Ping(v1::Ping { client_time_ms: 1 })),
                    };
                    ringchat_proto::encode(&frame, &mut scratch);
                    if write.write_all(&scratch).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.dropped.set(self.dropped.get() + 1);
    }
}

/// One connection: connect, hello, login. `Ok` with the heartbeat interval when logged in.
async fn attempt(
    addr: SocketAddr,
    source: Option<IpAddr>,
    cred: &Credential,
) -> Result<(Client, Duration), Outcome> {
    let mut client = match Client::connect_from(addr, source).await {
        Ok(c) => c,
        Err(e) => {
            return Err(Outcome::Disconnected(match io_kind(&e) {
                Some(std::io::ErrorKind::ConnectionRefused) => "connect_refused",
                Some(std::io::ErrorKind::ConnectionReset) => "connect_reset",
                _ => "connect_error",
            }));
        }
    };
    let mut answered = false;
    let hello = Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "ringchat-bench storm".into(),
    });
    let heartbeat = match ask(&mut client, hello, &mut answered).await? {
        Body::HelloOk(ok) => Duration::from_millis(u64::from(ok.heartbeat_interval_ms)),
        other => return Err(refusal_or_failure("Hello", other).into()),
    };
    match ask(&mut client, Body::Login(cred.login()), &mut answered).await? {
        Body::LoginOk(_) => Ok((client, heartbeat)),
        other => Err(refusal_or_failure("Login", other).into()),
    }
}

/// [`signup::ask`], its failures named for the tally.
async fn ask(c: &mut Client, body: Body, answered: &mut bool) -> Result<Body, Outcome> {
    signup::ask(c, body, answered).await.map_err(|e| match e {
        NoAnswer::Closed => Outcome::Disconnected(if *answered {
            "closed_before_login"
        } else {
            "closed_before_reply"
        }),
        NoAnswer::Broken(e) => gone(&e, *answered),
    })
}

/// A read or write failed: reset (before any reply, or after one), or something else.
fn gone(e: &anyhow::Error, answered: bool) -> Outcome {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match io_kind(e) {
        Some(ConnectionReset | BrokenPipe | ConnectionAborted) if !answered => {
            Outcome::Disconnected("reset_before_reply")
        }
        Some(ConnectionReset | BrokenPipe | ConnectionAborted) => {
            Outcome::Disconnected("closed_before_login")
        }
        _ => Outcome::Failed(format!("{e:#}")),
    }
}

fn io_kind(e: &anyhow::Error) -> Option<std::io::ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

/// Signs up (or logs in) each storm user by password, `concurrency` at a time, and returns
/// what the storm logs in with (the connections are closed).
pub async fn prepare(
    addr: SocketAddr,
    names: Vec<(usize, String)>,
    password: &str,
    token: bool,
    concurrency: usize,
    refusals: &Refusals,
) -> anyhow::Result<Vec<(usize, Credential)>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(names.len());
    for (index, name) in names {
        let (limit, password) = (Rc::clone(&limit), password.to_owned());
        let refusals = refusals.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await.expect("open semaphore");
            let who = Identity::bench(&name, &password);
            let (_, ok) = signup::sign_up_tcp(addr, None, &who, &refusals)
                .await
                .with_context(|| format!("storm user {name}"))?;
            let cred = if token {
                Credential::Token {
                    user_id: ok.user_id,
                    token: ok.token,
                }
            } else {
                Credential::Password {
                    username: name,
                    password,
                }
            };
            anyhow::Ok((index, cred))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn clamp_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, crate::stats::LATENCY_US_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let mut x = 7;
        for _ in 0..1000 {
            x = splitmix(x);
            assert!((0.0..1.0).contains(&unit(x)));
        }
    }
}

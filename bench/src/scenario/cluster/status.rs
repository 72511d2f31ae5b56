//! Reaching a node through the status service: `GET /assign` on any node's WebSocket listener
//! (or a `--role status` node) names the least-loaded live node; the client connects there and
//! logs in. Failures are retried with exponential backoff and jitter, within a deadline.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::signup::Identity;
use crate::signup::{Refusals, Target, sign_up};
use crate::transport::{Link, Transport};

/// Largest `GET /assign` answer read (head and JSON body).
const ASSIGN_RESPONSE_BYTES_MAX: usize = 16 * 1024;

/// How a client retries reaching a node.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts (ask the status service, connect, log in) before giving up.
    pub attempts_max: u32,
    /// The first pause between attempts; doubles each attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// No attempt starts after this long.
    pub deadline: Duration,
    /// Each step (status request, connect and log in) is abandoned after this long.
    pub step_timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts_max: 40,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
            step_timeout: Duration::from_secs(5),
        }
    }
}

/// The status service's answer: a node and the WebSocket address to reach it on.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub node_id: String,
    pub addr: SocketAddr,
}

/// A `http://HOST:PORT/PATH` URL as (host:port, path).
fn split_http_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("status URL {url:?}: only http:// is supported"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/assign"),
    })
}

/// `ws://HOST:PORT/ws` (a node's advertised client address) as a socket address.
fn ws_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        anyhow!("client address {url:?} is not ws:// (wss:// is not supported by the bench)")
    })?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {host_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{host_port} resolves to nothing"))
}

/// Checks a status URL's form before the run.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    split_http_url(url).map(|_| ())
}

/// One `GET /assign`.
pub async fn assign(url: &str) -> anyhow::Result<Assignment> {
    let (host, path) = split_http_url(url)?;
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to the status service {host}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        if buf.len() + n > ASSIGN_RESPONSE_BYTES_MAX {
            bail!("{url}: answer over {ASSIGN_RESPONSE_BYTES_MAX} bytes");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: no HTTP head in the answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{url}: {status}: {}", body.trim());
    }
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).with_context(|| format!("{url}: JSON body"))?;
    let node_id = v["node_id"]
        .as_str()
        .ok_or_else(|| anyhow!("{url}: no node_id in {body}"))?
        .to_owned();
    let first_ws = v["client_addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with("ws://"))
        .ok_or_else(|| anyhow!("{url}: node {node_id} advertises no ws:// address"))?;
    Ok(Assignment {
        node_id,
        addr: ws_addr(first_ws)?,
    })
}

/// A logged-in WebSocket connection to a node.
pub struct Session {
    pub node_id: String,
    pub addr: SocketAddr,
    pub link: Link,
    pub user_id: u64,
}

/// Connects to `addr` and logs in (registering the name if it is new), coming back after
/// the node's `retry_after_ms` while it says "later" (counted in `refusals`), all within
/// `timeout`.
pub async fn log_in(
    node_id: String,
    addr: SocketAddr,
    who: &Identity<'_>,
    timeout: Duration,
    refusals: &Refusals,
) -> anyhow::Result<Session> {
    let to = Target {
        transport: Transport::Ws,
        addr,
        source: None,
    };
    let (link, ok) = tokio::time::timeout(timeout, sign_up(to, who, refusals))
        .await
        .map_err(|_| anyhow!("logging in at {addr} took over {timeout:?}"))??;
    Ok(Session {
        node_id,
        addr,
        link,
        user_id: ok.user_id,
    })
}

/// Asks the status services (starting at `first`, going round) for a node, connects and logs
/// in; with `avoid`, a node of that id is asked past while other answers may come (at most one
/// round of the URLs), for cross-node placement. A node's "later" is waited out at that node
/// (see [`log_in`]).
pub async fn connect(
    urls: &[String],
    first: usize,
    who: &Identity<'_>,
    retry: &Retry,
    avoid: Option<&str>,
    jitter_seed: u64,
    refusals: &Refusals,
) -> anyhow::Result<(Session, u32)> {
    let started = Instant::now();
    let mut last_error = anyhow!("no attempt made");
    let mut avoided = 0usize;
    let mut attempt = 0u32;
    while attempt < retry.attempts_max && started.elapsed() < retry.deadline {
        let url = &urls[(first + attempt as usize + avoided) % urls.len()];
        let step = async {
            let assigned = tokio::time::timeout(retry.step_timeout, assign(url))
                .await
                .map_err(|_| anyhow!("{url}: no answer within {:?}", retry.step_timeout))??;
            anyhow::Ok(assigned)
        };
        match step.await {
            Ok(a) if avoid == Some(a.node_id.as_str()) && avoided < urls.len() * 2 => {
                avoided += 1;
                continue;
            }
            Ok(a) => match log_in(a.node_id, a.addr, who, retry.step_timeout, refusals).await {
                Ok(session) => return Ok((session, attempt)),
                Err(e) => last_error = e,
            },
            Err(e) => last_error = e,
        }
        tokio::time::sleep(backoff(retry, attempt, jitter_seed)).await;
        attempt += 1;
    }
    Err(last_error.context(format!(
        "{}: no node reached after {attempt} attempts in {:?}",
        who.username,
        started.elapsed()
    )))
}

/// Exponential backoff with "equal jitter": half the step fixed, half spread, so that clients
/// dropped together do not come back together.
pub fn backoff(retry: &Retry, attempt: u32, seed: u64) -> Duration {
    let step = retry
        .backoff_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(retry.backoff_max);
    let half = step / 2;
    half + half.mul_f64(unit_random(seed ^ u64::from(attempt)))
}

/// A number in [0, 1) from a seed: enough spread for jitter.
fn unit_random(seed: u64) -> f64 {
    crate::scenario::unit(crate::scenario::splitmix(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_refuse_what_is_not_http() {
        assert_eq!(
            split_http_url("http://127.0.0.1:9/assign").unwrap(),
            ("127.0.0.1:9", "/assign")
        );
        assert_eq!(split_http_url("http://h:1").unwrap(), ("h:1", "/assign"));
        assert!(split_http_url("https://h:1/assign").is_err());
        assert_eq!(
            ws_addr("ws://127.0.0.1:7001/ws").unwrap(),
            "127.0.0.1:7001".parse().unwrap()
        );
        assert!(ws_addr("wss://127.0.0.1:7001/ws").is_err());
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_inside_the_step() {
        let r = Retry::default();
        for attempt in 0..30 {
            for seed in 0..20 {
                let d = backoff(&r, attempt, seed);
                let step = r
                    .backoff_min
                    .saturating_mul(1 << attempt.min(16))
                    .min(r.backoff_max);
                assert!(d >= step / 2 && d <= step, "{attempt} {seed}: {d:?}");
            }
        }
        assert_ne!(backoff(&r, 3, 1), backoff(&r, 3, 2));
    }
}

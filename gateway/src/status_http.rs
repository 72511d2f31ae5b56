//! A status-only node's HTTP listener (`serve --role status`: `GET /assign`, `GET /readyz` and
//! the chat page on `gateway.ws_listen`). Strangers reach it, and the process's descriptors are
//! shared with the gRPC listener and the Redis connections, so it is built here rather than by
//! `axum::serve` (no connection cap, and hyper's timer off: a silent socket held for ever):
//! - at most `gateway.status_http.conns_max` connections, a place taken at accept before
//!   anything is read, and `conns_per_ip_max` per client / `conns_per_network_max` per IPv6
//!   /48 (`per_address.rs`, the file connections' rule); past either a new one is closed;
//! - a request head must arrive within `header_read_timeout_ms` of the accept or of the end of
//!   the previous response (hyper's timer: also a kept-alive connection's idle limit), and a
//!   response must keep moving (`write_stall_timeout_ms`); bodies are never read;
//! - as on the shards' listeners: a `gateway.proxy_protocol_from` balancer's connection must
//!   open with a PROXY header (read within the head's timeout), whose source is then the
//!   client, and the `[security]` lists are applied to the client's address.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::get;
use hyper_util::service::TowerToHyperService;
use ringchat_backend::admin::write_stall::WriteStall;
use ringchat_backend::cluster::Cluster;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::config::{Config, StatusHttpConfig};
use crate::per_address::PerAddress;
use crate::proxy_protocol::{self, HEADER_BYTES_MAX, Scan, TrustedPeers};
use crate::security::IpRules;

/// A failed accept (out of descriptors or memory) is retried after this, not in a spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What every connection is checked against, shared by the connections' tasks.
struct Gate {
    limits: StatusHttpConfig,
    per_address: Arc<PerAddress>,
    trusted: TrustedPeers,
    rules: IpRules,
}

/// Serves the status node's HTTP on `listener` until `stop`.
pub(crate) async fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    config: &Config,
    stop: oneshot::Receiver<()>,
) {
    let limits = config.gateway.status_http.clone();
    let places = Arc::new(Semaphore::new(limits.conns_max.min(Semaphore::MAX_PERMITS)));
    let gate = Arc::new(Gate {
        per_address: PerAddress::new(limits.conns_per_ip_max, limits.conns_per_network_max),
        trusted: TrustedPeers::new(&config.gateway.proxy_protocol_from),
        rules: config.security.rules(),
        limits,
    });
    let app = router(cluster);
    // Connections hold a receiver: told to finish their request in flight and close.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "status HTTP listener: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Taken before anything is read: a silent socket counts.
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            tracing::debug!(%peer, "status HTTP: gateway.status_http.conns_max open; closed");
            continue;
        };
        let gate = Arc::clone(&gate);
        let app = app.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _place = place;
            let mut tcp = tcp;
            let Some(client) = gate.client(&mut tcp, peer).await else {
                return;
            };
            let Some(_from) = gate.per_address.take(client) else {
                tracing::debug!(
                    %client,
                    "status HTTP: gateway.status_http.conns_per_ip_max (or per_network_max) open from this client; closed"
                );
                return;
            };
            serve_conn(tcp, peer, app, &gate.limits, stop).await;
        });
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
}

impl Gate {
    /// The client's address (a trusted balancer's PROXY header's, read within the head's
    /// timeout), or `None`: the connection is to be closed (no usable header, or the
    /// `[security]` lists refuse the client).
    async fn client(&self, tcp: &mut TcpStream, peer: SocketAddr) -> Option<IpAddr> {
        let mut client = peer.ip();
        if self.trusted.contains(client) {
            let timeout = Duration::from_millis(self.limits.header_read_timeout_ms);
            match tokio::time::timeout(timeout, read_proxy_header(tcp)).await {
                Ok(Ok(source)) => client = source.unwrap_or(client),
                Ok(Err(why)) => {
                    tracing::debug!(%peer, reason = why.label(), "status HTTP: no usable PROXY header from a gateway.proxy_protocol_from peer; closed");
                    return None;
                }
                Err(_elapsed) => {
                    tracing::debug!(%peer, "status HTTP: no PROXY header within gateway.status_http.header_read_timeout_ms; closed");
                    return None;
                }
            }
        }
        if let Err(why) = self.rules.check(client) {
            tracing::debug!(%client, ?why, "status HTTP: refused by [security]; closed");
            return None;
        }
        Some(client)
    }
}

/// A trusted balancer's PROXY header, taken off `tcp` and nothing behind it (the request's
/// head stays for hyper): its source address (`None`: it names none, the balancer's stands).
async fn read_proxy_header(tcp: &mut TcpStream) -> Result<Option<IpAddr>, proxy_protocol::Refused> {
    use proxy_protocol::Refused;
    let mut header = [0u8; HEADER_BYTES_MAX];
    // Bytes at the start of `header` already taken off the socket: all of them header.
    let mut taken = 0;
    loop {
        if taken >= HEADER_BYTES_MAX {
            return Err(Refused::TooLarge);
        }
        let seen = match tcp.peek(&mut header[taken..]).await {
            Ok(0) | Err(_) => return Err(Refused::Closed),
            Ok(n) => taken + n,
        };
        let (take, source) = match proxy_protocol::scan(&header[..seen])? {
            Scan::Complete { len, source } => (len, Some(source)),
            // Every byte seen is header: taken, so that the next peek waits for more.
            Scan::Incomplete => (seen, None),
        };
        if tcp
            .read_exact(&mut header[taken..take.max(taken)])
            .await
            .is_err()
        {
            return Err(Refused::Closed);
        }
        taken = take.max(taken);
        if let Some(source) = source {
            return Ok(source);
        }
    }
}

/// One connection, until it closes, a limit closes it, or (after `stop`) its request in flight
/// is answered.
async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    limits: &StatusHttpConfig,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let io = WriteStall::named(
        tcp,
        Duration::from_millis(limits.write_stall_timeout_ms),
        "gateway.status_http.write_stall_timeout_ms",
        None,
    );
    let service = TowerToHyperService::new(app);
    ringchat_backend::admin::http1::serve(
        io,
        service,
        Duration::from_millis(limits.header_read_timeout_ms),
        stop,
        peer,
        "status HTTP",
    )
    .await;
}

/// `GET /assign`, `GET /readyz` and the chat page.
fn router(cluster: Arc<Cluster>) -> axum::Router {
    let assign = {
        let cluster = Arc::clone(&cluster);
        move || {
            let answer = cluster.assign_http();
            async move {
                let mut response = crate::shard::ws::http::assign_axum_response(Some(answer));
                // The page served here learns that this origin has no `/files`.
                response.headers_mut().insert(
                    axum::http::HeaderName::from_static("x-ringchat-role"),
                    axum::http::HeaderValue::from_static("status"),
                );
                response
            }
        }
    };
    let ready = move || {
        let joined = cluster.joined();
        async move {
            if joined {
                (StatusCode::OK, "ready\n")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: Redis not reached yet\n",
                )
            }
        }
    };
    // The chat page too: a browser opened on the status node asks it `/assign` and connects
    // to the node it names.
    let page = |uri: axum::http::Uri| async move {
        crate::shard::ws::http::asset_response(uri.path())
            .unwrap_or_else(|| (StatusCode::NOT_FOUND, "not found\n").into_response())
    };
    axum::Router::new()
        .route("/assign", get(assign))
        .route("/readyz", get(ready))
        .fallback(get(page))
}

//! The admin listener's connections, plain or TLS: hyper's HTTP/1 server on each (the admin
//! application speaks HTTP/1.1 only), built here rather than by `axum::serve` so that:
//! - a request that may change state starts as its own task the moment hyper hands it over
//!   (`detached.rs`): a client that goes away mid-request cannot stop a change halfway;
//! - a stranger cannot hold descriptors (the process's limit is shared with the chat
//!   listeners): at most `admin.conns_max` connections, TLS handshakes included, a new one past
//!   it closed at once; a request head must arrive within `admin.header_read_timeout_ms` (also
//!   the kept-alive connection's idle limit: hyper's timer, which `axum::serve` leaves off),
//!   its body within `admin.body_read_timeout_ms` (`body_deadline.rs`), and an answer's writes
//!   must make progress within `admin.write_stall_timeout_ms` (`write_stall.rs`: a client that
//!   stops reading a log export or a live tail lets go of what the body holds);
//! - the peer address reaches the handlers as `ConnectInfo`;
//! - on shutdown the accept loop stops, every connection finishes its request in flight and
//!   closes, and `serve` returns once all have. Changes stop earlier, before the final audit
//!   flush (`Admin::finish_changes`): refused from the shutdown's start, waited for after.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::detached::Changes;
use super::write_stall::WriteStall;
use super::{body_deadline, detached};
use crate::config::AdminConfig;

/// A failed accept (out of descriptors or memory) is retried after this, not in a spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What every connection is held to (`[admin]`).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    body_read: Duration,
    write_stall: Duration,
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` resolves; changes are
/// admitted by `changes` (`detached.rs`).
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    changes: Arc<Changes>,
    config: &AdminConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Limits {
        header_read: config.header_read_timeout(),
        body_read: config.body_read_timeout(),
        write_stall: config.write_stall_timeout(),
    };
    let conns = Arc::new(Semaphore::new(config.conns_max));
    // Connections hold a receiver: `closed()` below waits for the last one to end.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "admin listener: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Taken before anything is read: a handshake counts as a connection.
        let Ok(place) = Arc::clone(&conns).try_acquire_owned() else {
            metrics::counter!("ringchat_admin_conns_refused_total").increment(1);
            tracing::debug!(%peer, "admin listener: admin.conns_max connections open; closed");
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        let changes = Arc::clone(&changes);
        tokio::spawn(async move {
            let _place = place;
            match tls {
                None => serve_conn(tcp, peer, app, changes, limits, stop).await,
                Some(acceptor) => {
                    if let Some(stream) = super::tls::handshake(&acceptor, tcp, peer).await {
                        serve_conn(stream, peer, app, changes, limits, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

/// One connection, until it closes or (after `stop`) its request in flight is answered.
async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    changes: Arc<Changes>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|body| body_deadline::limit(body, limits.body_read));
        req.extensions_mut().insert(ConnectInfo(peer));
        let detach = detached::changes_state(req.method());
        detached::handle(detach, &changes, hyper::service::Service::call(&app, req))
    });
    let io = WriteStall::new(io, limits.write_stall);
    super::http1::serve(io, service, limits.header_read, stop, peer, "admin").await;
}

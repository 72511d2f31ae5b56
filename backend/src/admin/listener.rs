//! The admin listener's connections, plain or TLS: hyper's HTTP/1 server on each (the admin
//! application speaks HTTP/1.1 only), built here rather than by `axum::serve` so that:
//! - a request that may change state starts as its own task the moment hyper hands it over
//!   (`detached.rs`): a client that goes away mid-request cannot stop a change halfway;
//! - the peer address reaches the handlers as `ConnectInfo`;
//! - on shutdown the accept loop stops, every connection finishes its request in flight and
//!   closes, and `serve` returns once all have.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::detached;

/// A failed accept (out of descriptors or memory) is retried after this, not in a spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` resolves.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connections hold a receiver: `closed()` below waits for the last one to end.
    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(super::tls::HANDSHAKES_MAX));
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
        let app = app.clone();
        let stop = stop_rx.clone();
        match &tls {
            None => {
                tokio::spawn(serve_conn(tcp, peer, app, stop));
            }
            Some(acceptor) => {
                // A handshake waits for a place among `HANDSHAKES_MAX` in its own task, so a
                // client that stalls its handshake holds neither this loop nor other clients.
                let acceptor = acceptor.clone();
                let handshakes = Arc::clone(&handshakes);
                tokio::spawn(async move {
                    let Ok(permit) = handshakes.acquire_owned().await else {
                        return;
                    };
                    let stream = super::tls::handshake(&acceptor, tcp, peer).await;
                    drop(permit);
                    if let Some(stream) = stream {
                        serve_conn(stream, peer, app, stop).await;
                    }
                });
            }
        }
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

/// One connection, until it closes or (after `stop`) its request in flight is answered.
async fn serve_conn<I>(io: I, peer: SocketAddr, app: Router, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let detach = detached::changes_state(req.method());
        detached::handle(detach, hyper::service::Service::call(&app, req))
    });
    let builder = hyper::server::conn::http1::Builder::new();
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%err, %peer, "admin connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                let _: Result<(), _> = changed;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

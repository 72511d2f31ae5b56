//! TLS on the admin listener (`[admin.tls]`): the same rustls server configuration the gateway
//! loads for `[gateway.tls]`, handed in by the binary. Handshakes run in their own tasks, each
//! bounded by `HANDSHAKE_TIMEOUT` and at most `HANDSHAKES_MAX` at once, so a client that stalls
//! its handshake holds neither the accept loop nor other clients.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Admin;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const HANDSHAKES_MAX: usize = 256;
/// Finished handshakes waiting for the HTTP server to take them.
const READY_MAX: usize = 64;

/// Connections that finished their TLS handshake.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (its listener failed): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves the admin application over TLS until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(READY_MAX);
    let acceptor = TlsAcceptor::from(tls);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, tx));
    tokio::spawn(super::import_cli_audit(Arc::clone(&admin)));
    let app = super::app(admin);
    // `tap_io` makes axum hand the peer address to `ConnectInfo`.
    let listener = TlsListener { ready, local }.tap_io(|_| ());
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    accepting.abort();
    served
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(%err, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(%err, %peer, "admin listener: TLS handshake failed")
                }
                Err(_) => tracing::debug!(%peer, "admin listener: TLS handshake timed out"),
            }
        });
    }
}

//! TLS on the admin listener (`[admin.tls]`): the same rustls server configuration the gateway
//! loads for `[gateway.tls]`, handed in by the binary. Handshakes run in their connections'
//! own tasks (`listener.rs`), each bounded by `HANDSHAKE_TIMEOUT` and counted among
//! `admin.conns_max`, so a client that stalls its handshake holds neither the accept loop nor
//! other clients.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Admin;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin application over TLS until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::run(listener, Some(TlsAcceptor::from(tls)), admin, shutdown).await
}

/// The TLS handshake of an accepted connection; `None` when it fails or takes too long.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(%err, %peer, "admin listener: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "admin listener: TLS handshake timed out");
            None
        }
    }
}

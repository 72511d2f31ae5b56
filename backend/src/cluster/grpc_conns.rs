//! The connections of the gRPC listener (`cluster.grpc_listen`). Strangers reach it (the
//! status service takes clients without a certificate), so none may hold a descriptor for
//! nothing: at most `grpc_conns_max` connections at once (a place taken at accept, before any
//! handshake; past it a new connection is closed at once), TCP keepalive on each (a peer that
//! vanished is found), and a connection whose client has not started its handshake (the TLS
//! ClientHello, or without TLS the HTTP/2 preface) within `grpc_handshake_timeout_ms` is
//! closed: neither the TLS acceptor nor hyper's HTTP/2 server waits with a deadline there (the
//! TLS handshake itself is bounded by `ServerTlsConfig::timeout`, HTTP/2 keepalive pings take
//! over once the connection is up).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// The HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), in bytes; a TLS
/// ClientHello is longer. Once this many bytes came, the handshake has started.
const HANDSHAKE_BYTES: usize = 24;
/// TCP keepalive: idle time before the first probe, the time between probes, and the probes
/// unanswered before the kernel closes the connection (a vanished peer goes in about 1 min).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// An accepted connection holding its place under the cap.
pub(crate) struct Conn {
    tcp: TcpStream,
    _place: OwnedSemaphorePermit,
    /// The handshake's deadline, until `HANDSHAKE_BYTES` bytes came.
    handshake: Option<Pin<Box<Sleep>>>,
    read: usize,
}

/// The accepted connections of `listener`, capped at `conns_max` at once, each closed unless
/// its handshake starts within `handshake`.
pub(crate) fn incoming(
    listener: TcpListener,
    conns_max: usize,
    handshake: Duration,
) -> impl Stream<Item = io::Result<Conn>> + Send {
    let places = Arc::new(Semaphore::new(conns_max.min(Semaphore::MAX_PERMITS)));
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE_IDLE))
        .with_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .with_keepalive_retries(Some(KEEPALIVE_RETRIES))
        .filter_map(move |accepted| {
            let conn = match accepted {
                Err(e) => Some(Err(e)),
                Ok(tcp) => match Arc::clone(&places).try_acquire_owned() {
                    Ok(place) => {
                        metrics::gauge!("ringchat_cluster_grpc_conns").increment(1.0);
                        Some(Ok(Conn {
                            tcp,
                            _place: place,
                            handshake: Some(Box::pin(tokio::time::sleep(handshake))),
                            read: 0,
                        }))
                    }
                    // Closed here, at once: the client sees the connection end.
                    Err(_) => {
                        metrics::counter!("ringchat_cluster_grpc_conns_refused_total").increment(1);
                        None
                    }
                },
            };
            std::future::ready(conn)
        })
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::gauge!("ringchat_cluster_grpc_conns").decrement(1.0);
    }
}

impl Connected for Conn {
    // As tonic's own TCP listener: `Request::peer_certs` and `remote_addr` look for it.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        let Some(deadline) = &mut this.handshake else {
            return polled;
        };
        if let Poll::Ready(Ok(())) = polled {
            this.read += buf.filled().len() - before;
            if this.read >= HANDSHAKE_BYTES {
                this.handshake = None;
                return polled;
            }
        }
        // Polled with the read, so that the deadline wakes the reader.
        if deadline.as_mut().poll(cx).is_ready() {
            metrics::counter!("ringchat_cluster_grpc_handshake_timeouts_total").increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no handshake within cluster.grpc_handshake_timeout_ms",
            )));
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "grpc_conns_tests.rs"]
mod tests;

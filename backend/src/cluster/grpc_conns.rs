//! The connections of the gRPC listener (`cluster.grpc_listen`). Strangers reach it (the
//! status service takes clients without a certificate), so none may hold a descriptor for
//! nothing: at most `grpc_conns_max` connections at once (a place taken at accept, before any
//! handshake; past it a new connection is closed at once), TCP keepalive on each (a peer that
//! vanished is found), and a connection whose client has not started its handshake (the TLS
//! ClientHello, or without TLS the HTTP/2 preface) within `grpc_handshake_timeout_ms` is
//! closed: neither the TLS acceptor nor hyper's HTTP/2 server waits with a deadline there (the
//! TLS handshake itself is bounded by `ServerTlsConfig::timeout`, HTTP/2 keepalive pings take
//! over once the connection is up).
//!
//! Nor may a stranger keep a place by sending nothing after the handshake: a connection that
//! served no request for `grpc_idle_timeout_ms` is closed. The services mark what they serve
//! on their connection (`Conns::serving`): each status call while it runs, a peer's `Link`
//! stream for its life once its proof checked. So a place is held for long only by a linked
//! peer, or by a client that keeps calling; a refused `Link` stream marks nothing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// The HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), in bytes; a TLS
/// ClientHello is longer. Once this many bytes came, the handshake has started.
const HANDSHAKE_BYTES: usize = 24;
/// TCP keepalive: idle time before the first probe, the time between probes, and the probes
/// unanswered before the kernel closes the connection (a vanished peer goes in about 1 min).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// The open connections of one listener, by the client's address (one connection each): the
/// services find theirs by `Request::remote_addr`. At most `grpc_conns_max` entries.
#[derive(Clone, Default)]
pub(crate) struct Conns(Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>);

/// What a connection serves: requests now, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    accepted: Instant,
    serving: AtomicUsize,
    /// When the last request ended, in milliseconds after `accepted` (0: none yet).
    ended_ms: AtomicU64,
}

/// A request served on a connection (`Conns::serving`): it is not idle while this lives.
pub(crate) struct Serving(Option<Arc<Activity>>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            let ms = a.accepted.elapsed().as_millis();
            a.ended_ms
                .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
            a.serving.fetch_sub(1, Relaxed);
        }
    }
}

impl Conns {
    /// Marks a request served on the connection from `remote` until the guard drops (no
    /// address, or no such connection: a listener not made by `incoming`, marks nothing).
    pub(crate) fn serving(&self, remote: Option<SocketAddr>) -> Serving {
        let activity = remote.and_then(|r| {
            let conns = self.0.lock().unwrap_or_else(|p| p.into_inner());
            conns.get(&r).cloned()
        });
        if let Some(a) = &activity {
            a.serving.fetch_add(1, Relaxed);
        }
        Serving(activity)
    }
}

/// An accepted connection holding its place under the cap.
pub(crate) struct Conn {
    tcp: TcpStream,
    _place: OwnedSemaphorePermit,
    /// The handshake's deadline, until `HANDSHAKE_BYTES` bytes came.
    handshake: Option<Pin<Box<Sleep>>>,
    read: usize,
    /// Its entry in `conns` (removed when it closes), and the idle deadline checked against it.
    remote: Option<SocketAddr>,
    activity: Arc<Activity>,
    conns: Conns,
    idle_for: Duration,
    idle: Pin<Box<Sleep>>,
}

/// The accepted connections of `listener`, capped at `conns_max` at once, each closed unless
/// its handshake starts within `handshake`, or once it served nothing for `idle` (what they
/// serve is marked in `conns`).
pub(crate) fn incoming(
    listener: TcpListener,
    conns_max: usize,
    handshake: Duration,
    idle: Duration,
    conns: Conns,
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
                        let remote = tcp.peer_addr().ok();
                        let activity = Arc::new(Activity {
                            accepted: Instant::now(),
                            serving: AtomicUsize::new(0),
                            ended_ms: AtomicU64::new(0),
                        });
                        if let Some(r) = remote {
                            let mut map = conns.0.lock().unwrap_or_else(|p| p.into_inner());
                            map.insert(r, Arc::clone(&activity));
                        }
                        Some(Ok(Conn {
                            tcp,
                            _place: place,
                            handshake: Some(Box::pin(tokio::time::sleep(handshake))),
                            read: 0,
                            remote,
                            idle: Box::pin(tokio::time::sleep_until(activity.accepted + idle)),
                            activity,
                            conns: conns.clone(),
                            idle_for: idle,
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
        if let Some(r) = self.remote {
            let mut map = self.conns.0.lock().unwrap_or_else(|p| p.into_inner());
            // Only this connection's entry (a later one from the same address has its own).
            if map.get(&r).is_some_and(|a| Arc::ptr_eq(a, &self.activity)) {
                map.remove(&r);
            }
        }
    }
}

impl Conn {
    /// Whether the connection has served nothing for `idle_for`; else the deadline moves to
    /// `idle_for` after its last request (or from now, while one is served).
    fn idle_over(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let a = &self.activity;
            let next = if a.serving.load(Relaxed) > 0 {
                Instant::now() + self.idle_for
            } else {
                a.accepted + Duration::from_millis(a.ended_ms.load(Relaxed)) + self.idle_for
            };
            if next <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(next);
        }
        false
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
            // Polled with a read that waits, so that the deadline wakes the reader.
            if polled.is_pending() && this.idle_over(cx) {
                metrics::counter!("ringchat_cluster_grpc_idle_closed_total").increment(1);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request served within cluster.grpc_idle_timeout_ms",
                )));
            }
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

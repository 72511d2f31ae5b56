//! One plain HTTP/1 connection served until it closes, with a header-read timeout (which also
//! ends an idle keep-alive connection) and a graceful end once the listener stops: the one rule
//! for the admin listener and the status-only node's listener (gateway `status_http.rs`).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Serves `io` until the client closes it, a limit ends it, or (once `stop` turns true) the
/// request in flight is answered. `what` names the listener in the debug log of an error.
pub async fn serve<I, S>(
    io: I,
    service: S,
    header_read: Duration,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
    what: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%err, %peer, "{what} connection ended with an error");
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

//! The backend's end of the files path (issue 15). A shard that reads a request head under
//! `/files` on a WebSocket listener hands the connection's plaintext to the backend over a
//! bounded in-process pipe (`tokio::io::duplex`, whose halves work from any executor: the
//! shard's monoio loop on one side, the backend's tokio runtime on the other). On the backend's
//! side hyper serves HTTP/1.1 (keep-alive included) with the files service's axum router. The
//! shard only moves bytes: nothing about files runs on its thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::DuplexStream;

use crate::config::FilesPipeConfig;

/// What the shards share to serve `/files`: the router, the runtime it runs on, and the count
/// of file connections open on every shard together and from each address.
pub struct FilesGate {
    router: axum::Router,
    runtime: tokio::runtime::Handle,
    config: FilesPipeConfig,
    open: AtomicUsize,
    /// Open file connections per client address (an entry only while it has one): taken once
    /// per file connection, never per request.
    open_from: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the open file connections of all shards and of its address, given back when
/// dropped.
pub struct Admitted {
    gate: Arc<FilesGate>,
    from: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        let mut open_from = self.gate.open_from();
        if let Some(n) = open_from.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                open_from.remove(&self.from);
            }
        }
    }
}

/// Why a file connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `conns_max` file connections are open.
    Full,
    /// `conns_per_ip_max` are open from this address.
    FullForAddress,
}

impl FilesGate {
    pub fn new(
        router: axum::Router,
        runtime: tokio::runtime::Handle,
        config: FilesPipeConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            router: router.fallback(page_or_close),
            runtime,
            config,
            open: AtomicUsize::new(0),
            open_from: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &FilesPipeConfig {
        &self.config
    }

    fn open_from(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A count map has no invariant a panic could break half-way.
        self.open_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place among `conns_max` and among `conns_per_ip_max` of `from`.
    pub fn admit(self: &Arc<Self>, from: IpAddr) -> Result<Admitted, Refusal> {
        let max = self.config.conns_max;
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Full)?;
        let mut open_from = self.open_from();
        let n = open_from.entry(from).or_default();
        if *n >= self.config.conns_per_ip_max {
            if *n == 0 {
                open_from.remove(&from);
            }
            drop(open_from);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::FullForAddress);
        }
        *n += 1;
        Ok(Admitted {
            gate: Arc::clone(self),
            from,
        })
    }

    /// Starts serving one connection: returns the shard's end of its pipe; hyper runs on the
    /// other end on the backend's runtime until either side closes.
    pub fn connect(&self) -> DuplexStream {
        let (shard_end, backend_end) = tokio::io::duplex(self.config.pipe_bytes);
        let service = TowerToHyperService::new(self.router.clone());
        let header_read_timeout = Duration::from_millis(self.config.header_read_timeout_ms);
        self.runtime.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(backend_end), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%err, "files connection ended with an error");
            }
        });
        shard_end
    }
}

/// Anything but `/files` on a file connection. A browser sends its next request to the origin
/// on any idle kept-alive connection, this one included (a reload's `GET /` after an upload):
/// the chat page's files are served here as the shard serves them; anything else is a 404
/// that closes the connection, so that the next request reaches the shard's own routing.
async fn page_or_close(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse as _;
    if (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && let Some(page) = crate::shard::ws::http::asset_response(uri.path())
    {
        return page;
    }
    let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

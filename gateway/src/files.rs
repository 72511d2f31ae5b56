//! The backend's end of the files path (issue 15). A shard that reads a request head under
//! `/files` on a WebSocket listener hands the connection's plaintext to the backend over a
//! bounded in-process pipe (`tokio::io::duplex`, whose halves work from any executor: the
//! shard's monoio loop on one side, the backend's tokio runtime on the other). On the backend's
//! side hyper serves HTTP/1.1 (keep-alive included) with the files service's axum router. The
//! shard only moves bytes: nothing about files runs on its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::DuplexStream;

use crate::config::FilesPipeConfig;

/// What the shards share to serve `/files`: the router, the runtime it runs on, and the count
/// of file connections open on every shard together.
pub struct FilesGate {
    router: axum::Router,
    runtime: tokio::runtime::Handle,
    config: FilesPipeConfig,
    open: AtomicUsize,
}

/// A place among the open file connections of all shards, given back when dropped.
pub struct Admitted(Arc<FilesGate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
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
        })
    }

    pub fn config(&self) -> &FilesPipeConfig {
        &self.config
    }

    /// Takes a place among `conns_max`; `None` when all are taken.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let max = self.config.conns_max;
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(Arc::clone(self)))
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

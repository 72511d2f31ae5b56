//! The backend's end of the files path (issue 15). A shard that reads a request head under
//! `/files` on a WebSocket listener hands the connection's plaintext to the backend over a
//! bounded in-process pipe (`tokio::io::duplex`, whose halves work from any executor: the
//! shard's monoio loop on one side, the backend's tokio runtime on the other). On the backend's
//! side hyper serves HTTP/1.1 (keep-alive included) with the files service's axum router. The
//! shard only moves bytes: nothing about files runs on its thread.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ringchat_backend::files::http::{Authenticated, ClientAddr};
use tokio::io::DuplexStream;

use crate::config::FilesPipeConfig;
use crate::per_address::{AddressPlace, PerAddress};
use crate::shard::AssignFn;

/// What the shards share to serve `/files`: the router, the runtime it runs on, and the count
/// of file connections open on every shard together and from each address.
pub struct FilesGate {
    router: axum::Router,
    runtime: tokio::runtime::Handle,
    config: FilesPipeConfig,
    open: AtomicUsize,
    /// Open file connections per client and per IPv6 client network (`per_address.rs`):
    /// taken once per file connection, never per request.
    open_from: Arc<PerAddress>,
}

/// A place among the open file connections of all shards, of its client and of its IPv6
/// network, given back when dropped.
pub struct Admitted {
    gate: Arc<FilesGate>,
    _from: AddressPlace,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a file connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `conns_max` file connections are open.
    Full,
    /// `conns_per_ip_max` are open from this address, or `conns_per_network_max` from its IPv6
    /// network.
    FullForAddress,
}

impl FilesGate {
    pub fn new(
        router: axum::Router,
        runtime: tokio::runtime::Handle,
        config: FilesPipeConfig,
        assign: Option<AssignFn>,
    ) -> Arc<Self> {
        let fallback = move |method, uri| page_or_close(assign.clone(), method, uri);
        Arc::new(Self {
            router: router
                .fallback(fallback)
                .layer(axum::middleware::map_response(close_unless_authenticated)),
            runtime,
            open: AtomicUsize::new(0),
            open_from: PerAddress::new(config.conns_per_ip_max, config.conns_per_network_max),
            config,
        })
    }

    pub fn config(&self) -> &FilesPipeConfig {
        &self.config
    }

    /// Takes a place among `conns_max`, among `conns_per_ip_max` of `peer`'s client key and,
    /// for an IPv6 client, among `conns_per_network_max` of its /48.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let max = self.config.conns_max;
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Full)?;
        let Some(from) = self.open_from.take(peer) else {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::FullForAddress);
        };
        Ok(Admitted {
            gate: Arc::clone(self),
            _from: from,
        })
    }

    /// Starts serving one connection from `client`: returns the shard's end of its pipe; hyper
    /// runs on the other end on the backend's runtime until either side closes.
    pub fn connect(&self, client: IpAddr) -> DuplexStream {
        let (shard_end, backend_end) = tokio::io::duplex(self.config.pipe_bytes);
        // Unknown tokens are charged to the client's address.
        let router = TowerToHyperService::new(self.router.clone());
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(client));
                hyper::service::Service::call(&router, request)
            },
        );
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
/// on any idle kept-alive connection, this one included (a reload's `GET /` after an upload,
/// the page's `fetch('/assign')` before it reconnects): the chat page's files and `/assign` are
/// answered here as the shard answers them (`assign`: the shard's, `None` on one box); anything
/// else is a 404. Either way the connection closes after it (`close_unless_authenticated`): the
/// next request reaches the shard's own routing.
async fn page_or_close(
    assign: Option<AssignFn>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if uri.path() == "/assign" {
        return crate::shard::ws::http::assign_axum_response(assign.map(|a| a()));
    }
    crate::shard::ws::http::asset_response(uri.path())
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "not found\n").into_response())
}

/// The one rule for keeping a file connection: only after an answer to a request whose token
/// was accepted (`Authenticated`). Every other answer ends its connection: a 401, a 429 or a
/// 503 of the token check, the page or a 404 of the fallback, whatever a later route might
/// answer before checking a token. A file connection counts against its client's and the
/// node's limits, and only a signed-in client may keep one.
async fn close_unless_authenticated(
    mut response: axum::response::Response,
) -> axum::response::Response {
    if response.extensions().get::<Authenticated>().is_none() {
        set_close(&mut response);
    }
    response
}

/// `Connection: close`: hyper ends the connection once this response is written.
fn set_close(response: &mut axum::response::Response) {
    use axum::http::{HeaderValue, header};
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

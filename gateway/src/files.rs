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
use ringchat_backend::files::http::{Authenticated, ClientAddr};
use tokio::io::DuplexStream;

use crate::config::FilesPipeConfig;

/// What the shards share to serve `/files`: the router, the runtime it runs on, and the count
/// of file connections open on every shard together and from each address.
pub struct FilesGate {
    router: axum::Router,
    runtime: tokio::runtime::Handle,
    config: FilesPipeConfig,
    open: AtomicUsize,
    /// Open file connections per client (`ringchat_backend::client_key`: an IPv6 client by its
    /// /64, which it has every address of) and per IPv6 client network (its /48,
    /// `ringchat_backend::share_key`); an entry only while it has one: taken once per file
    /// connection, never per request.
    open_from: Mutex<OpenFrom>,
}

#[derive(Default)]
struct OpenFrom {
    clients: HashMap<IpAddr, usize>,
    networks: HashMap<IpAddr, usize>,
}

/// A place among the open file connections of all shards, of its client and of its IPv6
/// network, given back when dropped.
pub struct Admitted {
    gate: Arc<FilesGate>,
    from: IpAddr,
    /// The IPv6 client's /48; `None` for an IPv4 client (its network is its address).
    network: Option<IpAddr>,
}

/// Gives back one place of `key`, dropping its entry at zero.
fn give_back(counts: &mut HashMap<IpAddr, usize>, key: &IpAddr) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        let mut open_from = self.gate.open_from();
        give_back(&mut open_from.clients, &self.from);
        if let Some(net) = &self.network {
            give_back(&mut open_from.networks, net);
        }
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
    ) -> Arc<Self> {
        Arc::new(Self {
            router: router
                .fallback(page_or_close)
                .layer(axum::middleware::map_response(close_unless_authenticated)),
            runtime,
            config,
            open: AtomicUsize::new(0),
            open_from: Mutex::new(OpenFrom::default()),
        })
    }

    pub fn config(&self) -> &FilesPipeConfig {
        &self.config
    }

    fn open_from(&self) -> std::sync::MutexGuard<'_, OpenFrom> {
        // A count map has no invariant a panic could break half-way.
        self.open_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place among `conns_max`, among `conns_per_ip_max` of `peer`'s client key and,
    /// for an IPv6 client, among `conns_per_network_max` of its /48.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let from = ringchat_backend::client_key(peer);
        let network = match ringchat_backend::share_key(peer) {
            net @ IpAddr::V6(_) => Some(net),
            IpAddr::V4(_) => None,
        };
        let max = self.config.conns_max;
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Full)?;
        let mut open_from = self.open_from();
        // Looked up before an entry is made: a refused client leaves none behind.
        let full = |counts: &HashMap<IpAddr, usize>, key: &IpAddr, max: usize| {
            counts.get(key).is_some_and(|n| *n >= max)
        };
        if full(&open_from.clients, &from, self.config.conns_per_ip_max)
            || network.is_some_and(|net| {
                full(&open_from.networks, &net, self.config.conns_per_network_max)
            })
        {
            drop(open_from);
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::FullForAddress);
        }
        *open_from.clients.entry(from).or_default() += 1;
        if let Some(net) = network {
            *open_from.networks.entry(net).or_default() += 1;
        }
        Ok(Admitted {
            gate: Arc::clone(self),
            from,
            network,
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
/// on any idle kept-alive connection, this one included (a reload's `GET /` after an upload):
/// the chat page's files are served here as the shard serves them; anything else is a 404.
/// Either way the connection closes after it (`close_unless_authenticated`): the next request
/// reaches the shard's own routing.
async fn page_or_close(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    if (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && let Some(page) = crate::shard::ws::http::asset_response(uri.path())
    {
        page
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A gate with `config` (and the runtime it would serve on, kept alive by the caller).
    fn gate(config: FilesPipeConfig) -> (tokio::runtime::Runtime, Arc<FilesGate>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let gate = FilesGate::new(axum::Router::new(), runtime.handle().clone(), config);
        (runtime, gate)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv6 host has its whole /64 to connect from: its file connections are counted
    /// together, as the backend counts its registrations and code requests.
    #[test]
    fn file_connections_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let (_runtime, gate) = gate(FilesPipeConfig {
            conns_per_ip_max: 1,
            ..FilesPipeConfig::default()
        });
        let held = gate.admit(ip("2001:db8:1:2::1")).expect("the first");
        assert_eq!(
            gate.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::FullForAddress),
            "another address of the same /64"
        );
        let other = gate.admit(ip("2001:db8:1:3::1")).expect("another /64");
        let v4 = gate.admit(ip("192.0.2.7")).expect("an IPv4 client");
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.7")).err(),
            Some(Refusal::FullForAddress),
            "the same IPv4 client, mapped"
        );
        drop(held);
        let again = gate.admit(ip("2001:db8:1:2:ffff::9")).expect("freed");
        drop((again, other, v4));
        assert!(gate.open_from().clients.is_empty());
        assert!(gate.open_from().networks.is_empty());
    }

    /// An IPv6 client's /48 is counted as a whole too: its other /64s are refused once it holds
    /// `conns_per_network_max`, while another /48 and IPv4 clients get in.
    #[test]
    fn file_connections_of_an_ipv6_48_are_counted_together() {
        let (_runtime, gate) = gate(FilesPipeConfig {
            conns_per_ip_max: 1,
            conns_per_network_max: 2,
            ..FilesPipeConfig::default()
        });
        let first = gate.admit(ip("2001:db8:1:1::1")).expect("the first /64");
        let second = gate.admit(ip("2001:db8:1:2::1")).expect("the second /64");
        assert_eq!(
            gate.admit(ip("2001:db8:1:3::1")).err(),
            Some(Refusal::FullForAddress),
            "a third /64 of the same /48"
        );
        let other = gate.admit(ip("2001:db8:2:1::1")).expect("another /48");
        let v4: Vec<_> = ["192.0.2.7", "192.0.2.8", "192.0.2.9"]
            .into_iter()
            .map(|a| gate.admit(ip(a)).expect("IPv4: per address only"))
            .collect();
        assert_eq!(
            gate.open.load(Ordering::Relaxed),
            6,
            "the refused one gave its place back"
        );
        drop(first);
        let again = gate.admit(ip("2001:db8:1:3::1")).expect("given back");
        drop((second, other, v4, again));
        assert!(gate.open_from().clients.is_empty());
        assert!(gate.open_from().networks.is_empty());
    }
}

//! The node's gRPC listener (`cluster.grpc_listen`): the status service now
//! (`ringchat.v1.Status`: `Assign`, `Ping`); the later cluster parts add their node-to-node
//! services to the same server in `serve`. Bounded: connections at once (`grpc_conns_max`),
//! the time to start a handshake (`grpc_handshake_timeout_ms`), a connection's time serving
//! nothing (`grpc_idle_timeout_ms`; all three in `grpc_conns.rs`) and
//! to finish a TLS one, requests at once per connection (`grpc_concurrency_per_connection`,
//! load shed past it), a deadline per request (`grpc_timeout_ms`) and the size of a request:
//! `STATUS_REQUEST_BYTES_MAX` for the status service, whose requests are empty (anyone who
//! reaches the listener may call it), the links' own for `Node`.

use std::sync::Arc;
use std::time::Duration;

use ringchat_proto::v1::status_server::{Status as StatusService, StatusServer};
use ringchat_proto::v1::{AssignReply, AssignRequest, PingReply, PingRequest};
use tonic::{Request, Response, Status};

use super::Cluster;

/// The largest status request taken, in bytes (encoded): `AssignRequest` and `PingRequest`
/// have no fields, so anything near this is not a client of ours; past it, OUT_OF_RANGE (tonic's
/// code for a message over the limit).
/// Without it tonic's default (4 MiB) let a stranger hold up to 4 MiB per request in memory.
const STATUS_REQUEST_BYTES_MAX: usize = 1024;

struct StatusImpl {
    cluster: Arc<Cluster>,
    /// Each call keeps its connection from being idle while it runs.
    conns: super::grpc_conns::Conns,
}

#[tonic::async_trait]
impl StatusService for StatusImpl {
    async fn assign(&self, r: Request<AssignRequest>) -> Result<Response<AssignReply>, Status> {
        let _serving = self.conns.serving(r.remote_addr());
        let view = self.cluster.view();
        let node = view
            .assign()
            .ok_or_else(|| Status::unavailable("no live node known yet; retry shortly"))?;
        Ok(Response::new(AssignReply {
            node_id: node.node_id.clone(),
            client_addrs: node.client_addrs.clone(),
            fresh: view.fresh,
        }))
    }

    async fn ping(&self, r: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let _serving = self.conns.serving(r.remote_addr());
        let view = self.cluster.view();
        Ok(Response::new(PingReply {
            node_id: self.cluster.node_id().to_owned(),
            live_nodes: u32::try_from(view.nodes.len()).unwrap_or(u32::MAX),
            fresh: view.fresh,
        }))
    }
}

/// Serves the node's gRPC services on `listener` until `stop` completes; `node`: the
/// node-to-node `Node` service (`link/`), absent on a status-only node; `tls`: `[cluster.tls]`.
pub async fn serve(
    cluster: Arc<Cluster>,
    node: Option<super::link::NodeService>,
    listener: tokio::net::TcpListener,
    tls: Option<&super::tls::NodeTls>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let c = &cluster.config;
    let handshake = Duration::from_millis(c.grpc_handshake_timeout_ms);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.server().timeout(handshake))?;
    }
    let conns = super::grpc_conns::Conns::default();
    let incoming = super::grpc_conns::incoming(
        listener,
        c.grpc_conns_max,
        handshake,
        Duration::from_millis(c.grpc_idle_timeout_ms),
        conns.clone(),
    );
    server
        .concurrency_limit_per_connection(c.grpc_concurrency_per_connection)
        .load_shed(true)
        .timeout(Duration::from_millis(c.grpc_timeout_ms))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            StatusServer::new(StatusImpl {
                cluster: Arc::clone(&cluster),
                conns: conns.clone(),
            })
            .max_decoding_message_size(STATUS_REQUEST_BYTES_MAX),
        )
        .add_optional_service(node.map(|n| n.with_conns(conns).into_server()))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}

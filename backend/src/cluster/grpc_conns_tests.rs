//! The real gRPC listener (`grpc::serve` on port 0, plain and with `[cluster.tls]`) against
//! raw sockets that never start, or never finish, a handshake, and against a real client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringchat_proto::v1::PingRequest;
use ringchat_proto::v1::status_client::StatusClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::cluster::tls::{ClusterTlsConfig, NodeTls};
use crate::cluster::{Cluster, ClusterConfig};

const CONNS_MAX: usize = 16;
const HANDSHAKE: Duration = Duration::from_millis(300);
/// Far more than the handshake deadline: how long a test waits for a connection to close.
const WAIT: Duration = Duration::from_secs(10);

fn config() -> ClusterConfig {
    ClusterConfig {
        enabled: true,
        node_id: "n1".into(),
        redis_url: "redis://127.0.0.1:1".into(),
        nodes_max: CONNS_MAX,
        grpc_conns_max: CONNS_MAX,
        grpc_handshake_timeout_ms: HANDSHAKE.as_millis() as u64,
        ..ClusterConfig::default()
    }
}

/// A status-only node's listener on port 0; stops when the sender is dropped.
async fn listen(tls: Option<NodeTls>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    listen_with(config(), tls).await
}

async fn listen_with(
    config: ClusterConfig,
    tls: Option<NodeTls>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let cluster = Cluster::new(&config, None).expect("a cluster");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        crate::cluster::serve_grpc(cluster, None, listener, tls.as_ref(), stop)
            .await
            .expect("serves");
    });
    (addr, stop)
}

/// Whether the server closed `s` within `within` (what it sent meanwhile is read and dropped).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn ping(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    StatusClient::new(channel)
        .ping(PingRequest::default())
        .await
        .map(|_| ())
}

/// Without TLS: a connection that sends nothing, or less than the HTTP/2 preface, is closed
/// after the handshake deadline; past `grpc_conns_max` a new connection is closed at once;
/// a real client's connection is served and outlives the deadline; places come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_capped_while_clients_are_served() {
    let (addr, _stop) = listen(None).await;
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("url");
    let client = endpoint.connect().await.expect("connects");
    ping(client.clone()).await.expect("served");

    let opened = Instant::now();
    let mut silent = Vec::new();
    for i in 0..CONNS_MAX - 1 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            // Half a preface, then nothing.
            s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        }
        silent.push(s);
    }
    let mut over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut over, HANDSHAKE / 2).await,
        "past grpc_conns_max a connection is closed at once"
    );
    for s in &mut silent {
        assert!(
            closed_within(s, WAIT).await,
            "a silent connection is closed"
        );
    }
    assert!(
        opened.elapsed() >= HANDSHAKE,
        "not before the deadline: {:?}",
        opened.elapsed()
    );

    // The client's connection made its handshake: still served, past the deadline.
    ping(client).await.expect("still served");
    // The silent ones' places are free again.
    let again = endpoint.connect().await.expect("connects again");
    ping(again).await.expect("served");
}

/// `grpc_conns_max` connections that made their HTTP/2 handshake (the preface and SETTINGS)
/// and then ask nothing hold no place for good: each is closed once it served nothing for
/// `grpc_idle_timeout_ms`, and a client (a peer re-dialling) finds a place again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_free_their_places() {
    // Long enough that the places are all still taken when the one over them connects, on
    // a busy machine too.
    const IDLE: Duration = Duration::from_secs(2);
    let (addr, _stop) = listen_with(
        ClusterConfig {
            grpc_idle_timeout_ms: IDLE.as_millis() as u64,
            ..config()
        },
        None,
    )
    .await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..CONNS_MAX {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .expect("settings");
        idle.push(s);
    }
    let mut over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut over, IDLE / 2).await,
        "every place is taken"
    );
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("url");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(channel) = endpoint.connect().await
            && ping(channel).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no place came free for a client within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened.elapsed() >= IDLE, "not before the idle deadline");
    for s in &mut idle {
        assert!(closed_within(s, WAIT).await, "an idle connection is closed");
    }
}

/// A status request with a field the real ones lack: encoded, an `AssignRequest` carrying
/// `pad` as unknown bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Padded {
    #[prost(bytes = "vec", tag = "15")]
    pad: Vec<u8>,
}

/// `Assign` with `pad_bytes` of unknown fields, over a real client connection.
async fn assign_padded(
    channel: tonic::transport::Channel,
    pad_bytes: usize,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Padded, ringchat_proto::v1::AssignReply>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/ringchat.v1.Status/Assign");
    let request = tonic::Request::new(Padded {
        pad: vec![7; pad_bytes],
    });
    grpc.unary(request, path, codec).await.map(|_| ())
}

/// The status service's requests are empty: a 3 MiB one (unknown fields, under tonic's
/// default 4 MiB) is refused (OUT_OF_RANGE, tonic's code for it) before it is decoded; a small one is read as
/// usual (this status-only node knows no live node: UNAVAILABLE), and the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_request_past_its_size_limit_is_refused() {
    let (addr, _stop) = listen(None).await;
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("url");
    let client = endpoint.connect().await.expect("connects");
    let big = assign_padded(client.clone(), 3 << 20)
        .await
        .expect_err("refused");
    // tonic's code for a message past the decoding limit.
    assert_eq!(big.code(), tonic::Code::OutOfRange, "{big:?}");
    assert!(big.message().contains("1024"), "{big:?}");
    let small = assign_padded(client.clone(), 16)
        .await
        .expect_err("no node known");
    assert_eq!(small.code(), tonic::Code::Unavailable, "{small:?}");
    ping(client).await.expect("still served");
}

/// A cluster CA and a certificate for 127.0.0.1 it signed, written to `dir`.
fn tls_files(dir: &std::path::Path) -> (ClusterTlsConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let issuer: &rcgen::Issuer<'static, KeyPair> = &ca;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, issuer)
        .expect("signed");
    let path = |f: &str| dir.join(f).display().to_string();
    std::fs::write(path("cert.pem"), cert.pem()).expect("write");
    std::fs::write(path("key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    let config = ClusterTlsConfig {
        cert_path: path("cert.pem"),
        key_path: path("key.pem"),
        ca_path: path("ca.pem"),
    };
    (config, ca.pem())
}

/// With TLS: a connection that sends nothing, and one that starts a ClientHello and never
/// finishes it, are closed after the handshake deadline; a real client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_a_stalled_handshake_is_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let (tls, ca_pem) = tls_files(dir.path());
    let tls = NodeTls::load(&tls).expect("loads").expect("on");
    let (addr, _stop) = listen(Some(tls)).await;
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .expect("tls");
    ping(endpoint.connect().await.expect("connects"))
        .await
        .expect("served");

    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    // A handshake record announcing 512 bytes, of which 32 come.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.resize(37, 0);
    stalled.write_all(&hello).await.expect("write");
    for s in [&mut silent, &mut stalled] {
        assert!(
            closed_within(s, WAIT).await,
            "a stalled handshake is closed"
        );
    }
    assert!(opened.elapsed() >= HANDSHAKE, "{:?}", opened.elapsed());
}

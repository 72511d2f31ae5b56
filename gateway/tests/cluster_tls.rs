//! Cluster mode with `[cluster.tls]`: mutual TLS between nodes. Certificates are made here
//! (rcgen): a cluster CA, one certificate per node (for 127.0.0.1, the nodes' advertise
//! host), and an impostor's from another CA. Two real `ringchat` nodes deliver a message across
//! the TLS link; a client presenting the impostor's certificate, or none, cannot open a
//! `Node/Link` stream even with the right `peer_secret`. Needs the servers `scripts/test.sh`
//! starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{NodeEnv, PEER_SECRET, acked, direct, metric_sum, pushed, redis_url, unique};
use common::{TestServer, wait_until};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ringchat_proto::v1::{NodeBatch, node_client::NodeClient};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA: its certificate (PEM) and what signs with it.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A node's certificate and key (PEM), for 127.0.0.1 and localhost, signed by `ca`.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let issuer: &rcgen::Issuer<'static, KeyPair> = ca;
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a node's files; returns its `[cluster.tls]` as environment variables.
fn files(
    dir: &Path,
    name: &str,
    ca_pem: &str,
    (cert, key): &(String, String),
) -> Vec<(String, String)> {
    let path = |f: &str| dir.join(format!("{name}-{f}")).display().to_string();
    std::fs::write(path("cert.pem"), cert).unwrap();
    std::fs::write(path("key.pem"), key).unwrap();
    std::fs::write(path("ca.pem"), ca_pem).unwrap();
    vec![
        ("CLUSTER__TLS__CERT_PATH".into(), path("cert.pem")),
        ("CLUSTER__TLS__KEY_PATH".into(), path("key.pem")),
        ("CLUSTER__TLS__CA_PATH".into(), path("ca.pem")),
    ]
}

/// Opens a `Node/Link` stream to `grpc` as a peer would (with the right secret), over TLS
/// trusting `ca_pem` and presenting `identity`; the status of the first answer.
async fn link_as(
    grpc: &str,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<(), tonic::Status> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{grpc}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    let mut request = tonic::Request::new(futures_util::stream::pending::<NodeBatch>());
    request
        .metadata_mut()
        .insert("x-ringchat-peer-secret", PEER_SECRET.parse().unwrap());
    let mut client = NodeClient::new(channel);
    let call = client.link(request);
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))?
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_over_mutual_tls_and_refuse_a_peer_without_the_cas_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = ca("ringchat test cluster CA");
    let ca_pem = cluster_ca.pem();
    let db = common::store::fresh_database();
    let prefix = format!("rc_tls_{}", unique());
    let redis = redis_url();
    let mut grpcs = Vec::new();
    let nodes: Vec<TestServer> = ["n1", "n2"]
        .iter()
        .map(|id| {
            let mut env = NodeEnv::new(&db, &redis, &prefix, id);
            env.vars
                .extend(files(dir.path(), id, &ca_pem, &leaf(&cluster_ca)));
            grpcs.push(env.grpc());
            TestServer::start(&env.pairs())
        })
        .collect();
    wait_until("both nodes see 2 nodes", || {
        nodes
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == 2.0)
    });
    // A message each way between users on different nodes: forwarded to the conversation's
    // owner and pushed to the other node, over the TLS links.
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;
    acked(&mut alice, direct(b.user_id, "hello over tls")).await;
    pushed(&mut bob, "hello over tls").await;
    acked(&mut bob, direct(a.user_id, "and back")).await;
    pushed(&mut alice, "and back").await;
    for n in &nodes {
        assert!(metric_sum(n, "ringchat_cluster_peer_links_up_total") >= 1.0);
    }
    let refused_before = nodes[0].metric("ringchat_cluster_peer_refused_total");

    // An impostor: a certificate from another CA, with the right secret. The handshake fails.
    let impostor = leaf(&ca("not the cluster's CA"));
    let err = link_as(&grpcs[0], &ca_pem, Some(&impostor))
        .await
        .expect_err("a certificate the cluster's CA did not sign is refused");
    assert_ne!(err.code(), tonic::Code::Ok);
    // No certificate at all, with the right secret: the TLS handshake lets it through (the
    // status service takes such clients) but the link refuses it.
    let err = link_as(&grpcs[0], &ca_pem, None)
        .await
        .expect_err("a peer without a certificate is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");
    assert!(nodes[0].metric("ringchat_cluster_peer_refused_total") > refused_before);
    // The cluster's own certificate opens a link (what the refusals above lack is the cert).
    let member = leaf(&cluster_ca);
    link_as(&grpcs[0], &ca_pem, Some(&member))
        .await
        .expect("a certificate of the cluster's CA with the secret is a peer");
    // Plain HTTP/2 to a TLS listener gets nowhere.
    let plain = Endpoint::from_shared(format!("http://{}", grpcs[0])).unwrap();
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(channel) => {
            let mut request = tonic::Request::new(futures_util::stream::pending::<NodeBatch>());
            request
                .metadata_mut()
                .insert("x-ringchat-peer-secret", PEER_SECRET.parse().unwrap());
            let mut client = NodeClient::new(channel);
            let call = client.link(request);
            !matches!(
                tokio::time::timeout(Duration::from_secs(10), call).await,
                Ok(Ok(_))
            )
        }
    };
    assert!(refused, "plain text is not served on a TLS listener");
}

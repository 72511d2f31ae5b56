//! Cluster mode with `[observe.otlp]`: a message's path across nodes is one trace. Three real
//! `ringchat` nodes export their spans over OTLP/gRPC to a real collector in this test (a tonic
//! server of the OTLP trace service, `opentelemetry-proto`'s generated types, on loopback).
//! A message sent on one node, for a conversation another node owns, to a user on the third:
//! the sender's node (forward, answer), the owner (commit) and the destination (fan-out) each
//! export a span of the same trace, joined through the `traceparent` the link carries. Needs
//! the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::cluster::{NodeEnv, acked, direct, pushed, redis_url, unique};
use common::{TestServer, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use ringchat_backend::cluster::rendezvous::{node_number, owner_index};

const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// One exported span, as the collector saw it.
#[derive(Debug, Clone)]
struct Got {
    /// The exporting node: `service.instance.id`.
    node: String,
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let attr = |key: &str| {
                rs.resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                    .and_then(|a| a.value.as_ref()?.value.clone())
                    .map(|v| match v {
                        Value::StringValue(s) => s,
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default()
            };
            let (node, service) = (attr("service.instance.id"), attr("service.name"));
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    got.push(Got {
                        node: node.clone(),
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves the collector on loopback on a runtime of its own (the test's `wait_until` blocks
/// its thread); returns its address.
fn start_collector(collector: Collector) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_node_message_is_one_trace_over_three_nodes() {
    let collector = Collector::default();
    let spans = Arc::clone(&collector.spans);
    let endpoint = format!("http://{}", start_collector(collector));
    let db = common::store::fresh_database();
    let prefix = format!("rc_trace_{}", unique());
    let redis = redis_url();
    let nodes: Vec<TestServer> = IDS
        .iter()
        .map(|id| {
            let mut env = NodeEnv::new(&db, &redis, &prefix, id);
            for (k, v) in [
                ("OBSERVE__OTLP__ENDPOINT", endpoint.as_str()),
                ("OBSERVE__OTLP__SERVICE_NAME", "ringchat-test"),
                ("OBSERVE__OTLP__SAMPLE_RATIO", "1"),
                ("OBSERVE__OTLP__EXPORT_INTERVAL_MS", "50"),
            ] {
                env.vars.push((k.to_owned(), v.to_owned()));
            }
            TestServer::start(&env.pairs())
        })
        .collect();
    wait_until("every node sees 3 nodes", || {
        nodes
            .iter()
            .all(|s| s.metric("ringchat_cluster_nodes") == 3.0)
    });
    // The conversation's id (and so its owner) is known once it has a message.
    let (mut alice, _) = nodes[0].user("alice").await;
    let (_bob, b) = nodes[1].user("bob").await;
    let conv = acked(&mut alice, direct(b.user_id, "first"))
        .await
        .conversation_id;
    let numbers: Vec<u64> = IDS.iter().map(|id| node_number(id)).collect();
    let owner = owner_index(conv, &numbers).expect("nodes");
    // The sender on a node that is not the owner, the recipient on the third.
    let from = (owner + 1) % 3;
    let to = (owner + 2) % 3;
    let (mut sender, _) = nodes[from].device("alice", "alice-traced").await;
    let (mut recipient, _) = nodes[to].device("bob", "bob-traced").await;
    // Routes reach the other nodes within cluster.routes.flush_ms; until then pushes go to
    // every node, so the recipient's node gets this one either way.
    acked(&mut sender, direct(b.user_id, "traced")).await;
    pushed(&mut recipient, "traced").await;

    let (from_id, owner_id, to_id) = (IDS[from], IDS[owner], IDS[to]);
    let mut found = None;
    wait_until("one trace with spans from all three nodes", || {
        let got = spans.lock().unwrap();
        let mut by_trace: HashMap<&[u8], Vec<&Got>> = HashMap::new();
        for s in got.iter() {
            by_trace.entry(s.trace_id.as_slice()).or_default().push(s);
        }
        found = by_trace.into_values().find_map(|t| {
            let has = |node: &str, name: &str| t.iter().any(|s| s.node == node && s.name == name);
            (has(from_id, "ringchat.forward")
                && has(owner_id, "ringchat.commit")
                && has(to_id, "ringchat.fanout")
                && has(from_id, "ringchat.answer"))
            .then(|| t.iter().map(|s| (*s).clone()).collect::<Vec<Got>>())
        });
        found.is_some()
    });
    let trace = found.unwrap();
    let one = |node: &str, name: &str| {
        trace
            .iter()
            .find(|s| s.node == node && s.name == name)
            .unwrap()
            .clone()
    };
    let forward = one(from_id, "ringchat.forward");
    let commit = one(owner_id, "ringchat.commit");
    let fanout = one(to_id, "ringchat.fanout");
    let answer = one(from_id, "ringchat.answer");
    assert!(
        forward.parent_span_id.is_empty(),
        "the trace starts on the sender's node"
    );
    assert_eq!(
        commit.parent_span_id, forward.span_id,
        "owner's span under the forward"
    );
    assert_eq!(
        fanout.parent_span_id, commit.span_id,
        "fan-out under the owner's commit"
    );
    assert_eq!(
        answer.parent_span_id, commit.span_id,
        "the answer under the commit"
    );
    assert_eq!(forward.trace_id.len(), 16);
    assert!(trace.iter().all(|s| s.service == "ringchat-test"));
}

//! `deploy/grafana/ringchat.json` and `deploy/prometheus/alerts.yml` parse, and every metric
//! they name is one the server's `/metrics` exports: a renamed or dropped family fails here,
//! not in an operator's empty panel or silent alert. Every `ringchat_…` family the prose names
//! (README, ARCHITECTURE, docs/, tuning/, deploy/, the example config) is one the code spells.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use common::transport::{AnyClient, Kind};
use ringchat_proto::Body;
use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metric names in a PromQL expression: identifiers of our families (`ringchat_…`,
/// `process_…`); label names and values, functions and `up` are not ours.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("ringchat_") || word.starts_with("process_") {
            out.push(word.clone());
        }
        word.clear();
    }
    out
}

/// Every `expr` in a Grafana dashboard (targets, templating queries).
fn grafana_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => grafana_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| grafana_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn grafana_and_alert_rules_use_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&deploy("grafana/ringchat.json"))
        .expect("grafana/ringchat.json is JSON");
    assert_eq!(dashboard["uid"], "ringchat-overview");
    let mut exprs = Vec::new();
    grafana_exprs(&dashboard["panels"], &mut exprs);
    grafana_exprs(&dashboard["templating"], &mut exprs);
    assert!(
        exprs.len() >= 15,
        "the dashboard has {} queries",
        exprs.len()
    );

    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&deploy("prometheus/alerts.yml"))
        .expect("prometheus/alerts.yml is YAML");
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name");
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: no summary"
            );
            alerts.insert(name.to_owned());
            exprs.push(expr.to_owned());
        }
    }
    for wanted in [
        "RingchatDown",
        "RingchatWritesRefused",
        "RingchatNotReady",
        "RingchatSendAckP99High",
        "RingchatSlowConsumerKicksRising",
        "RingchatDiskFilling",
        "RingchatBackupFailed",
        "RingchatBackupStale",
    ] {
        assert!(alerts.contains(wanted), "alert {wanted} missing");
    }

    // A server that did a bit of everything, so that the families that appear on first use
    // (login failures, errors) are there.
    let server = TestServer::start(&[]);
    let (mut a, _) = AnyClient::user(&server, Kind::Tcp, "ops").await;
    let (_b, peer) = AnyClient::user(&server, Kind::Tcp, "peer").await;
    let sent = a
        .request(ringchat_bench::client::text_message(
            peer.user_id,
            "m1",
            "x",
        ))
        .await;
    assert!(matches!(sent, Body::SendAck(_)), "{sent:?}");
    let refused = a
        .request(ringchat_bench::client::text_message(0, "m2", "x"))
        .await;
    assert!(matches!(refused, Body::Error(_)), "{refused:?}");
    let mut wrong = AnyClient::connect(&server, Kind::Tcp).await;
    wrong.hello().await;
    let login = ringchat_bench::client::password_login("ops", "not the password", "d");
    assert!(matches!(
        wrong.request(Body::Login(login)).await,
        Body::Error(_)
    ));

    let end = Instant::now() + Duration::from_secs(20);
    let types = loop {
        let page = common::http_get(server.admin, "/metrics");
        let types: HashMap<String, String> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect();
        if types.contains_key("ringchat_login_failures_total")
            && page.contains("ringchat_send_ack_seconds_count 1")
        {
            break types;
        }
        assert!(
            Instant::now() < end,
            "/metrics never showed the test's activity"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let exported = |name: &str| {
        types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| types.get(base).is_some_and(|t| t == "histogram"))
            })
    };
    // Valid PromQL (Grafana's `label_values(..)` template queries are not PromQL).
    for expr in exprs.iter().filter(|e| !e.starts_with("label_values(")) {
        if let Err(err) = promql_parser::parser::parse(expr) {
            panic!("not valid PromQL: {err}: {expr}");
        }
    }
    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 20, "only {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n)).collect();
    assert!(missing.is_empty(), "not exported by /metrics: {missing:?}");
}

#[test]
fn names_are_found_in_expressions() {
    assert_eq!(
        metric_names(r#"sum by (le) (rate(ringchat_x_bucket{job="ringchat_not"}[5m])) / up"#),
        ["ringchat_x_bucket"]
    );
}

/// Names in the prose that are not metric families: a crate, an nftables table, a database.
const NOT_FAMILIES: [&str; 3] = ["ringchat_bench", "ringchat_raw", "ringchat_try"];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// The `ringchat_…` names in a text: `ringchat_push_{sent,failed}_total` is two, a brace after
/// a whole name is its labels (`ringchat_x_total{shard}`), and one ending in `_` is a prefix
/// (`ringchat_push_…`), no name.
fn named_families(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let name_end = |from: usize| {
        (from..bytes.len())
            .find(|&i| !is_name_byte(bytes[i]))
            .unwrap_or(bytes.len())
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("ringchat_").map(|i| i + from) {
        let mut end = name_end(at + "ringchat_".len());
        from = end;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let stem = &text[at..end];
        let open = end;
        let mut names = vec![stem.to_owned()];
        if stem.ends_with('_')
            && text[open..].starts_with('{')
            && let Some(close) = text[open..].find('}').map(|i| i + open)
            && text[open + 1..close]
                .bytes()
                .all(|b| is_name_byte(b) || b == b',')
        {
            end = name_end(close + 1);
            let tail = &text[close + 1..end];
            names = text[open + 1..close]
                .split(',')
                .map(|alt| format!("{stem}{alt}{tail}"))
                .collect();
            from = end;
        }
        out.extend(names.into_iter().filter(|n| !n.ends_with('_')));
    }
    out
}

/// Every file under `dir`.
fn files_under(dir: PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A family the docs name and no code publishes (renamed, or never written) sends an operator
/// looking for what is not there.
#[test]
fn every_family_the_docs_name_is_one_the_code_spells() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut spelled = BTreeSet::new();
    for dir in ["backend/src", "gateway/src"] {
        for file in files_under(root.join(dir)) {
            // A test may name a family the server never publishes.
            let path = file.to_string_lossy();
            if path.ends_with(".rs") && !path.contains("test") {
                spelled.extend(named_families(&std::fs::read_to_string(&file).unwrap()));
            }
        }
    }
    let mut docs: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "ringchat.example.toml"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    for dir in ["docs", "tuning", "deploy"] {
        docs.extend(files_under(root.join(dir)));
    }
    let known = |name: &str| {
        spelled.contains(name)
            || NOT_FAMILIES.contains(&name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| spelled.contains(f)))
    };
    let mut named = BTreeSet::new();
    let mut missing = Vec::new();
    for doc in &docs {
        let Ok(text) = std::fs::read_to_string(doc) else {
            continue;
        };
        for name in named_families(&text) {
            if !known(&name) {
                missing.push(format!(
                    "{}: {name}",
                    doc.strip_prefix(&root).unwrap().display()
                ));
            }
            named.insert(name);
        }
    }
    assert!(named.len() >= 100, "only {} names found", named.len());
    assert!(
        missing.is_empty(),
        "named, but no code publishes them:\n{}",
        missing.join("\n")
    );
}

#[test]
fn families_are_found_in_prose() {
    assert_eq!(
        named_families(
            "`ringchat_push_{sent,failed}_total`, ringchat_x_total{shard=\"0\"}, \
             ringchat_y{peer}, my_ringchat_no, `ringchat_push_…`, ringchat_z_{a,b}."
        ),
        [
            "ringchat_push_sent_total",
            "ringchat_push_failed_total",
            "ringchat_x_total",
            "ringchat_y",
            "ringchat_z_a",
            "ringchat_z_b",
        ]
    );
}

//! The cluster deployment files (`deploy/cluster/`, `deploy/k8s/`, `deploy/Dockerfile`) hold
//! configurations no test runs otherwise (there is no container runtime here): each ringchat
//! node they define must pass `ringchat check-config` with exactly the environment the file
//! gives it, and the files must agree with each other (one config, unique node ids and ports,
//! probes on the paths the server serves).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy_path(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, with `<<` merge keys applied (compose's `x-` anchors).
fn yaml_docs(file: &str) -> Vec<Value> {
    let text = read(file);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            v.apply_merge().unwrap_or_else(|e| panic!("{file}: {e}"));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not text in {v:?}"))
}

/// Runs `ringchat check-config FILE` with only `env` set; panics with its report unless ok.
fn check_config(label: &str, config: &Path, env: &BTreeMap<String, String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .arg("check-config")
        .arg(config)
        .env_clear()
        .envs(env)
        .output()
        .expect("run ringchat check-config");
    assert!(
        out.status.success(),
        "{label}: check-config refused {} with {env:?}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ringchat services of a compose file: name → environment.
fn compose_nodes(file: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let docs = yaml_docs(file);
    let services = docs[0]["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{file}: no services"));
    let mut nodes = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().expect("service name").to_owned();
        if service["image"].as_str() != Some("ringchat:latest") {
            continue;
        }
        let env: BTreeMap<String, String> = service["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{file} {name}: no environment"))
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().expect("variable name").to_owned(), v)
            })
            .collect();
        let volumes: Vec<&str> = service["volumes"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{file} {name}: no volumes"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            volumes.contains(&"./ringchat.toml:/etc/ringchat/ringchat.toml:ro"),
            "{file} {name}: the node must run on deploy/cluster/ringchat.toml: {volumes:?}"
        );
        let health = serde_yaml_ng::to_string(&service["healthcheck"]["test"]).unwrap();
        assert!(
            health.contains("/readyz"),
            "{file} {name}: health check {health}"
        );
        let nofile = service["ulimits"]["nofile"]["soft"].as_u64().unwrap_or(0);
        assert!(nofile >= 100_000, "{file} {name}: nofile {nofile}");
        nodes.insert(name, env);
    }
    assert_eq!(nodes.len(), 3, "{file}: three ringchat nodes");
    nodes
}

#[test]
fn every_compose_node_passes_check_config_with_its_own_id_and_ports() {
    let config = deploy_path("cluster/ringchat.toml");
    for file in ["cluster/compose.postgres.yml", "cluster/compose.scylla.yml"] {
        let nodes = compose_nodes(file);
        let mut ids = BTreeSet::new();
        let mut client_addrs = BTreeSet::new();
        for (name, env) in &nodes {
            check_config(&format!("{file} {name}"), &config, env);
            let id = &env["RINGCHAT_CLUSTER__NODE_ID"];
            assert_eq!(id, name, "{file}: node id = service name (what peers dial)");
            assert!(ids.insert(id.clone()), "{file}: node id {id} twice");
            assert_eq!(
                env["RINGCHAT_CLUSTER__ADVERTISE_ADDR"],
                format!("{name}:7100")
            );
            let addrs: toml::Value =
                toml::from_str(&format!("v = {}", env["RINGCHAT_CLUSTER__CLIENT_ADDRS"]))
                    .unwrap_or_else(|e| panic!("{file} {name}: client_addrs: {e}"));
            for a in addrs["v"].as_array().expect("a list") {
                let a = a.as_str().expect("text").to_owned();
                assert!(
                    client_addrs.insert(a.clone()),
                    "{file}: {a} advertised twice"
                );
            }
        }
    }
}

#[test]
fn the_kubernetes_statefulset_passes_check_config_and_matches_the_compose_config() {
    let docs = yaml_docs("k8s/ringchat.yaml");
    let kind = |k: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == k).collect() };
    for k in [
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(!kind(k).is_empty(), "k8s/ringchat.yaml: no {k}");
    }

    // One configuration: the ConfigMap's file is deploy/cluster/ringchat.toml, key for key.
    let in_map: toml::Table =
        toml::from_str(str_at(kind("ConfigMap")[0], &["data", "ringchat.toml"])).unwrap();
    let in_compose: toml::Table = toml::from_str(&read("cluster/ringchat.toml")).unwrap();
    assert_eq!(
        in_map, in_compose,
        "ConfigMap and deploy/cluster/ringchat.toml differ"
    );

    let set = kind("StatefulSet")[0];
    let headless = str_at(set, &["spec", "serviceName"]);
    assert!(
        kind("Service")
            .iter()
            .any(|s| s["metadata"]["name"] == headless && s["spec"]["clusterIP"] == "None"),
        "serviceName {headless} must be a headless Service"
    );
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/readyz"
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/healthz"
    );

    // The environment of pod ringchat-0 as the kubelet builds it: $(VAR) from earlier
    // variables, secrets from their example values.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = str_at(var, &["name"]).to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            let mut v = v.to_owned();
            for (k, known) in &env {
                v = v.replace(&format!("$({k})"), known);
            }
            assert!(!v.contains("$("), "{name}: {v} names an undefined variable");
            v
        } else if !var["valueFrom"]["secretKeyRef"].is_null() {
            match str_at(&var["valueFrom"], &["secretKeyRef", "key"]) {
                "postgres-url" => "postgres://ringchat:x@postgres:5432/ringchat".to_owned(),
                "redis-url" => "redis://redis:6379".to_owned(),
                "peer-secret" => "0123456789abcdef0123456789abcdef".to_owned(),
                key => panic!("{name}: unexpected secret key {key}"),
            }
        } else {
            match str_at(&var["valueFrom"], &["fieldRef", "fieldPath"]) {
                "metadata.name" => "ringchat-0".to_owned(),
                "metadata.namespace" => "chat".to_owned(),
                path => panic!("{name}: unexpected fieldRef {path}"),
            }
        };
        env.insert(name, value);
    }
    assert_eq!(env["RINGCHAT_CLUSTER__NODE_ID"], "ringchat-0");
    assert_eq!(
        env["RINGCHAT_CLUSTER__ADVERTISE_ADDR"],
        format!("ringchat-0.{headless}.chat.svc:7100")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringchat.toml");
    std::fs::write(
        &config,
        str_at(kind("ConfigMap")[0], &["data", "ringchat.toml"]),
    )
    .unwrap();
    check_config("k8s ringchat-0", &config, &env);
}

#[test]
fn the_image_runs_as_a_user_and_exposes_the_configured_ports() {
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    let exposed: BTreeSet<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    let config: toml::Table = toml::from_str(&read("cluster/ringchat.toml")).unwrap();
    for (section, key) in [
        ("gateway", "tcp_listen"),
        ("gateway", "ws_listen"),
        ("admin", "listen"),
        ("cluster", "grpc_listen"),
    ] {
        let addr = config[section][key].as_str().unwrap();
        let port = addr.rsplit(':').next().unwrap();
        assert!(
            exposed.contains(port),
            "{section}.{key} {addr}: port not exposed"
        );
    }
}

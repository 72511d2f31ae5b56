//! The container deployment files (`deploy/compose.yml`, `deploy/cluster/`, `deploy/k8s/`,
//! `deploy/Dockerfile`, `deploy/docker/`) hold configurations no test runs otherwise (there is
//! no container runtime here): each ringchat node they define must pass `ringchat check-config`
//! with exactly the environment the file gives it, and the files must agree with each other and
//! with the server (one config, unique node ids and ports, probes on the paths the server
//! serves, stop grace periods longer than its graceful stop, the io_uring seccomp profile).
//! Every `ringchat …` command the READMEs and deploy/ tell an operator to run must parse with
//! the binary's own command line, and name `--config` where the data dir comes from it.
//! The systemd unit and the .deb: `deploy_host.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringchat_gateway::config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The container seccomp profile that allows io_uring.
const SECCOMP: &str = "docker/seccomp-io_uring.json";

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

/// The ringchat services of a compose file: name → environment, each checked by
/// [`check_ringchat_service`].
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
        let env = check_ringchat_service(&format!("{file} {name}"), file, service);
        nodes.insert(name, env);
    }
    nodes
}

/// What every ringchat service of a compose file must have (the config mounted from beside the
/// file, readiness health check, file limit, the io_uring seccomp profile, a stop grace longer
/// than the server's graceful stop); returns its environment.
fn check_ringchat_service(label: &str, file: &str, service: &Value) -> BTreeMap<String, String> {
    let env: BTreeMap<String, String> = service["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{label}: no environment"))
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
        .unwrap_or_else(|| panic!("{label}: no volumes"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        volumes.contains(&"./ringchat.toml:/etc/ringchat/ringchat.toml:ro"),
        "{label}: the node must run on the ringchat.toml beside {file}: {volumes:?}"
    );
    let health = serde_yaml_ng::to_string(&service["healthcheck"]["test"]).unwrap();
    assert!(health.contains("/readyz"), "{label}: health check {health}");
    let nofile = service["ulimits"]["nofile"]["soft"].as_u64().unwrap_or(0);
    assert!(nofile >= 100_000, "{label}: nofile {nofile}");
    // Compose reads the profile relative to the compose file.
    let seccomp = service["security_opt"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|o| o.strip_prefix("seccomp="))
        .unwrap_or_else(|| panic!("{label}: no seccomp= security_opt (io_uring)"));
    let compose_dir = deploy_path(file).parent().unwrap().to_owned();
    assert_eq!(
        compose_dir.join(seccomp).canonicalize().ok(),
        deploy_path(SECCOMP).canonicalize().ok(),
        "{label}: seccomp={seccomp}"
    );
    let grace = humantime_secs(str_at(service, &["stop_grace_period"]));
    let stop = graceful_stop_max(&compose_dir.join("ringchat.toml"), &env);
    assert!(
        Duration::from_secs(grace) > stop,
        "{label}: stop_grace_period {grace} s, a graceful stop may take {stop:?}"
    );
    env
}

/// Compose durations as written here: whole seconds, `30s`.
fn humantime_secs(text: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}: expected whole seconds like 30s"))
}

/// The configuration a node runs on: `config` with the environment `env`.
fn load(config: &Path, env: &BTreeMap<String, String>) -> Config {
    Config::load(Some(config), env.clone())
        .unwrap_or_else(|e| panic!("{}: {e:?}", config.display()))
}

/// Room a supervisor's grace must leave after `server::graceful_stop_max` for the store's
/// final flush, which comes after it and has no bound of its own.
const FLUSH_MARGIN: Duration = Duration::from_secs(10);

/// How long a server with this configuration may take to stop on SIGTERM, and the last flush:
/// with `[observe.otlp]` on (the README recommends it on a cluster), whose export deadline the
/// stop waits for too, whatever the file says.
fn graceful_stop_max(config: &Path, env: &BTreeMap<String, String>) -> Duration {
    let mut env = env.clone();
    env.insert(
        "RINGCHAT_OBSERVE__OTLP__ENDPOINT".to_owned(),
        "http://otel-collector.internal:4317".to_owned(),
    );
    let config = load(config, &env);
    assert!(config.observe.otlp.enabled());
    ringchat_gateway::server::graceful_stop_max(&config) + FLUSH_MARGIN
}

#[test]
fn every_compose_node_passes_check_config_with_its_own_id_and_ports() {
    let config = deploy_path("cluster/ringchat.toml");
    for file in ["cluster/compose.postgres.yml", "cluster/compose.scylla.yml"] {
        let nodes = compose_nodes(file);
        assert_eq!(nodes.len(), 3, "{file}: three ringchat nodes");
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
    // Migrations at start come before the admin listener: the liveness probe waits for them.
    assert_eq!(
        str_at(container, &["startupProbe", "httpGet", "path"]),
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

    let pod = &set["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace period");
    let stop = graceful_stop_max(&config, &env);
    assert!(
        Duration::from_secs(grace) > stop,
        "terminationGracePeriodSeconds {grace}, a graceful stop may take {stop:?}"
    );
    // Whole CPUs, requests = limits: Guaranteed QoS, so the static CPU manager can pin them.
    let resources = &container["resources"];
    assert_eq!(resources["requests"], resources["limits"]);
    let cpus = str_at(resources, &["limits", "cpu"]);
    assert!(cpus.parse::<u32>().is_ok(), "cpu {cpus}: whole CPUs");
    // The root file system is read-only: the log files need a volume.
    let log_dir = load(&config, &env).log.dir;
    assert!(
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"].as_str() == Some(log_dir.as_str())),
        "no volume at log.dir {log_dir}"
    );
}

#[test]
fn the_image_runs_as_a_user_and_exposes_the_configured_ports() {
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    // Numeric, so that Kubernetes' runAsNonRoot can check it; not root.
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {user}: not numeric"))
        })
        .collect();
    assert!(ids.iter().all(|&id| id != 0), "USER {user}");

    // Its own configuration runs: the data dir is the volume, the log dir is made for the user.
    let own = deploy_path("ringchat.toml");
    check_config("image", &own, &BTreeMap::new());
    let config = load(&own, &BTreeMap::new());
    let data_dir = config.storage.data_dir.display().to_string();
    assert!(
        dockerfile.contains(&format!("VOLUME {data_dir}")),
        "VOLUME {data_dir}"
    );
    assert!(dockerfile.contains("COPY deploy/ringchat.toml /etc/ringchat/ringchat.toml"));
    assert!(
        dockerfile.contains(&format!("chown 10001:10001 {data_dir} {}", config.log.dir)),
        "the image makes {data_dir} and {} for its user",
        config.log.dir
    );
    let health = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("CMD [\"curl\""))
        .expect("a HEALTHCHECK with curl");
    assert!(
        health.contains(&format!("{}/healthz", config.admin.listen)),
        "{health}"
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

#[test]
fn the_seccomp_profile_allows_io_uring_and_is_what_its_script_makes() {
    let text = read(SECCOMP);
    let profile: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        profile["defaultAction"], "SCMP_ACT_ERRNO",
        "deny by default"
    );
    let allowed: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().expect("names"))
        .map(|n| n.as_str().expect("a name"))
        .collect();
    // io_uring, and what the server needs beyond it: the epoll fallback, pinning, fsync, exec.
    for call in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "epoll_wait",
        "accept4",
        "sched_setaffinity",
        "fdatasync",
        "execve",
    ] {
        assert!(allowed.contains(call), "{SECCOMP}: {call} not allowed");
    }
    let out = Command::new("bash")
        .arg(deploy_path("docker/make-seccomp.sh"))
        .output()
        .expect("run make-seccomp.sh");
    assert!(
        out.status.success(),
        "make-seccomp.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        text,
        "{SECCOMP} is stale: bash deploy/docker/make-seccomp.sh > deploy/{SECCOMP}"
    );
}

#[test]
fn the_one_node_compose_file_passes_check_config() {
    let file = "compose.yml";
    let nodes = compose_nodes(file);
    assert_eq!(nodes.len(), 1, "{file}: one ringchat node");
    for (name, env) in &nodes {
        check_config(
            &format!("{file} {name}"),
            &deploy_path("ringchat.toml"),
            env,
        );
    }
    let docs = yaml_docs(file);
    let service = &docs[0]["services"]["ringchat"];
    assert_eq!(
        str_at(service, &["build", "dockerfile"]),
        "deploy/Dockerfile"
    );
}

/// The `ringchat` command lines of a text (a README, a deployment file's comments): inline code
/// spans (which may run over a line break) and lines of shell blocks that start with
/// `ringchat`, and anywhere a `ringchat` run by `sudo -u USER`, after a pipe or by
/// `docker compose … exec SERVICE`. Each is its arguments, cut at a comment, a pipe or `…` (a
/// placeholder inside an argument, `postgres:…`, becomes `x`); `ringchat ready …` is the
/// server's own output line, not a command.
fn ringchat_commands(text: &str) -> Vec<Vec<String>> {
    // (text, whether a `ringchat` at its start is a command)
    let mut candidates: Vec<(String, bool)> = Vec::new();
    let mut prose = String::new();
    let mut fenced: Option<bool> = None;
    for line in text.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            fenced = match fenced {
                Some(_) => None,
                None => Some(matches!(lang, "sh" | "bash" | "shell")),
            };
            continue;
        }
        candidates.push((line.to_owned(), fenced == Some(true)));
        if fenced.is_none() {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    candidates.extend(
        prose
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|span| (span.to_owned(), true)),
    );
    let mut out = Vec::new();
    for (text, at_start) in &candidates {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        for (i, _) in tokens.iter().enumerate().filter(|(_, t)| **t == "ringchat") {
            let before = &tokens[..i];
            let command = (i == 0 && *at_start)
                || before.last() == Some(&"|")
                || before.len() >= 2 && before[before.len() - 2] == "exec"
                || before.len() >= 3
                    && before[before.len() - 3..before.len() - 1] == ["sudo", "-u"];
            if !command {
                continue;
            }
            let mut args = Vec::new();
            for t in &tokens[i + 1..] {
                if ["|", "&&", ";", "…", "..."].contains(t) || t.starts_with('#') {
                    break;
                }
                args.push(t.replace('…', "x"));
            }
            if !args.is_empty() && args[0] != "ready" && !out.contains(&args) {
                out.push(args);
            }
        }
    }
    out
}

/// Commands that read `storage.data_dir` from the configuration: without `--config` they use
/// `./ringchat-data` of the directory they run in (in the image: /var/lib/ringchat/ringchat-data),
/// not the server's data dir.
fn needs_config(args: &[String]) -> bool {
    match args[0].as_str() {
        "admin" => args.len() > 1,
        "backup" => true,
        "restore" => !args.iter().any(|a| a == "--data-dir"),
        _ => false,
    }
}

/// Every `ringchat …` command the READMEs and the deployment files tell an operator to run
/// exists and parses with the binary's own command line (`--help` after it: clap checks the
/// subcommands and options up to there, and no command runs), and the ones that take the data
/// dir from the configuration name it.
#[test]
fn every_documented_ringchat_command_parses_and_names_its_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md"), root.join("tuning/README.md")];
    let mut dirs = vec![root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut checked = 0;
    let mut admin_in = BTreeSet::new();
    let mut problems = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for args in ringchat_commands(&text) {
            let label = format!("{}: ringchat {}", file.display(), args.join(" "));
            let out = Command::new(env!("CARGO_BIN_EXE_ringchat"))
                .args(&args)
                .arg("--help")
                .env_clear()
                .output()
                .expect("run ringchat");
            if !out.status.success() {
                problems.push(format!(
                    "{label}: not a ringchat command line: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            if needs_config(&args) && !args.iter().any(|a| a == "--config" || a == "-c") {
                problems.push(format!(
                    "{label}: without --config it works on ./ringchat-data, not the server's data dir"
                ));
            }
            if args[0] == "admin" && args.len() > 1 {
                admin_in.insert(file.file_name().unwrap().to_string_lossy().into_owned());
            }
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} command lines found");
    // Where operators are told how to make the first operator.
    for file in [
        "README.md",
        "compose.yml",
        "compose.postgres.yml",
        "postinst",
    ] {
        assert!(
            admin_in.contains(file),
            "no admin command found in {file}: {admin_in:?}"
        );
    }
}

#[test]
fn command_lines_are_found_where_operators_read_them() {
    let text = "# operator with: docker compose -f x.yml exec ringchat ringchat admin add-user a --role admin …\n\
                prose about ringchat serve, and `ringchat tune check --json` in a span\n\
                `sudo -u ringchat ringchat admin … --config f`, `ringchat ready tcp=x`, `ringchat\n\
                check-config FILE` over a line break\n\
                ```sh\n\
                echo \"$P\" | ringchat admin add-key k --role viewer -c f   # prints it\n\
                ringchat migrate --to postgres:…\n\
                ```\n\
                ringchat at the start of prose\n";
    let found: Vec<String> = ringchat_commands(text)
        .iter()
        .map(|a| a.join(" "))
        .collect();
    assert_eq!(
        found,
        [
            "admin add-user a --role admin",
            "admin add-key k --role viewer -c f",
            "migrate --to postgres:x",
            "tune check --json",
            "admin",
            "check-config FILE",
        ]
    );
}

/// The budget the stop timeouts above are checked against counts every bounded wait of a stop:
/// leaving the cluster, the drain, and the backend's finish (devices' last-seen times, the
/// audit log, the commit thread, the activity counts), not only the drain.
#[test]
fn the_stop_budget_counts_leaving_the_cluster_and_the_backends_finish() {
    let mut config = Config::default();
    let single = ringchat_gateway::server::graceful_stop_max(&config);
    let drain = Duration::from_millis(config.gateway.shutdown_timeout_ms);
    assert!(
        single >= drain + ringchat_backend::Backend::FINISH_MAX,
        "{single:?}"
    );
    assert!(
        ringchat_backend::Backend::FINISH_MAX >= Duration::from_secs(20),
        "the audit flush and the commit thread may take 10 s each"
    );
    config.cluster.enabled = true;
    assert_eq!(
        ringchat_gateway::server::graceful_stop_max(&config),
        single + ringchat_gateway::cluster::LEAVE_MAX
    );
}

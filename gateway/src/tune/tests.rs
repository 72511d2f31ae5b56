//! `tune` against recorded `/proc` and `/sys` trees of other machines
//! (`gateway/tests/fixtures/hosts/`): a 2-vCPU VM, a two-socket 64-thread host, a 16-core
//! host whose NIC interrupts are pinned by hand.

use std::path::PathBuf;

use super::check::{self, Status};
use super::host::Host;
use super::plan;
use crate::config::{Config, Driver};

fn host(name: &str) -> Host {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name);
    Host::read(&root).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn status(report: &check::Report, name: &str) -> Status {
    report
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#?}"))
        .status
}

/// The plan's snippet is a valid configuration for that host (its cores, not this machine's).
fn planned_config(h: &Host, p: &plan::Plan) -> Config {
    use crate::config::load;
    let layers = load::Layers {
        file: Some(load::TextLayer {
            path: "plan.toml".to_owned(),
            text: p.toml(),
        }),
        env: Vec::new(),
        overrides: None,
        host: Some(h.cpus()),
    };
    match load::load(&layers) {
        Ok(loaded) => loaded.config,
        Err(problems) => panic!("{problems:?}\n{}", p.toml()),
    }
}

/// Shards, backend and interrupt cores never share a core, and use only online ones.
fn assert_disjoint(h: &Host, p: &plan::Plan) {
    let mut all: Vec<usize> = p
        .shards
        .iter()
        .chain(&p.backend)
        .chain(&p.irq)
        .copied()
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a core has two roles: {p:?}");
    assert!(all.iter().all(|c| h.online.contains(c)), "{p:?}");
}

#[test]
fn vm_2core_reads_and_gets_the_simple_layout() {
    let h = host("vm-2core");
    assert_eq!(h.online, vec![0, 1]);
    assert_eq!(h.nodes.len(), 1);
    let irqs: Vec<&str> = h.nic_irqs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(irqs, vec!["virtio1-input.0", "virtio1-output.0"]);
    assert_eq!(h.kernel_version(), Some((6, 8)));
    assert_eq!(h.seccomp, Some(0));
    assert!(h.governors.is_empty());

    let report = check::run(&h, &Config::default());
    assert!(!report.critical(), "{}", report.text());
    // No cpufreq in a VM: explained, not an alarm.
    assert_eq!(status(&report, "cpu.governor"), Status::Ok);
    assert!(
        report
            .get("cpu.governor")
            .unwrap()
            .why
            .contains("virtual machine")
    );
    // Two cores: the NIC shares them whatever the affinity, pinning buys little.
    assert_eq!(status(&report, "pinning.irq"), Status::Ok);
    assert_eq!(status(&report, "pinning.cores"), Status::Ok);
    // Kernel 6.8: rings are charged to the memory cgroup.
    assert_eq!(status(&report, "rlimit.memlock"), Status::Ok);
    assert!(report.get("rlimit.memlock").unwrap().why.contains("5.12"));
    // 512, but syncookies are on: each listener's SYN queue is its backlog, cookies past it.
    assert_eq!(status(&report, "net.ipv4.tcp_max_syn_backlog"), Status::Ok);
    assert_eq!(status(&report, "net.core.somaxconn"), Status::Ok);
    // The kernel's default port range holds none of the default listen ports; no conntrack.
    assert_eq!(
        status(&report, "net.ipv4.ip_local_reserved_ports"),
        Status::Ok
    );
    assert_eq!(
        status(&report, "net.netfilter.nf_conntrack_max"),
        Status::Ok
    );
    assert_eq!(status(&report, "kernel.io_uring_disabled"), Status::Ok);
    assert_eq!(status(&report, "transparent_hugepage"), Status::Ok);
    // 500,000 connections per shard by default, against a hard limit of 524,288.
    assert_eq!(status(&report, "rlimit.nofile"), Status::Warn);

    let p = plan::plan(&h, &Config::default());
    assert!(p.small());
    assert!(p.irq_moves.is_empty());
    assert!(p.text().contains("pinning buys little"), "{}", p.text());
    assert!(p.toml().contains("cores = \"auto\""));
    assert!(p.text().contains("CPUAffinity=0-1"));
    planned_config(&h, &p);
}

#[test]
fn bare_64core_2numa_plan_keeps_roles_apart_per_node() {
    let h = host("bare-64core-2numa");
    assert_eq!(h.online.len(), 64);
    assert_eq!(h.nodes.len(), 2);
    assert_eq!(
        h.nodes[0].cpus[16], 32,
        "node 0 holds the hyperthreads 32-47"
    );
    // 32 completion queues; the async queue, the NVMe queues and the timer are not the NIC's.
    assert_eq!(h.nic_irqs.len(), 32);
    assert!(
        h.nic_irqs
            .iter()
            .all(|i| i.name.starts_with("mlx5_comp") && i.node == Some(0))
    );

    let p = plan::plan(&h, &Config::default());
    assert_disjoint(&h, &p);
    assert_eq!(p.irq, vec![0, 16], "the first core of each node");
    assert_eq!(p.backend.len(), plan::BACKEND_CORES_MAX);
    assert!(p.backend.iter().all(|&c| h.node_of(c) == Some(0)), "{p:?}");
    for node in &h.nodes {
        assert!(
            p.shards.iter().any(|c| node.cpus.contains(c)),
            "shards on node {}",
            node.id
        );
    }
    assert_eq!(p.shards.len() + p.backend.len() + p.irq.len(), 64);
    // The NIC sits on node 0: its queues go to node 0's interrupt core (the first one is
    // there already).
    assert_eq!(p.irq_moves.len(), 31);
    assert!(p.irq_moves.iter().all(|m| m.cores == vec![0]));
    let text = p.text();
    assert!(
        text.contains("echo 0 > /proc/irq/101/smp_affinity_list"),
        "{text}"
    );
    assert!(!text.contains("/proc/irq/100/"), "{text}");
    assert!(text.contains("CPUAffinity=1-15,17-63"), "{text}");
    assert!(text.contains("# check-config --host-cores 0-63"), "{text}");

    // Today's defaults on this host: everything wrong that can be.
    let report = check::run(&h, &Config::default());
    assert!(report.critical(), "{}", report.text());
    assert_eq!(status(&report, "rlimit.nofile"), Status::Critical);
    assert_eq!(status(&report, "pinning.cores"), Status::Warn);
    assert_eq!(status(&report, "pinning.irq"), Status::Warn);
    assert_eq!(status(&report, "cpu.governor"), Status::Warn);
    assert_eq!(status(&report, "transparent_hugepage"), Status::Warn);
    // Kernel 5.10 with 64 KiB of locked memory: under "auto" the shards fall back to epoll,
    // under "io_uring" they fail.
    assert_eq!(status(&report, "rlimit.memlock"), Status::Warn);
    let mut strict = Config::default();
    strict.gateway.driver = Driver::IoUring;
    assert_eq!(
        status(&check::run(&h, &strict), "rlimit.memlock"),
        Status::Critical
    );
    assert_eq!(
        status(&report, "kernel.io_uring_disabled"),
        Status::Ok,
        "absent before 6.6"
    );

    // With the plan applied (interrupts not moved yet): pinning is right, the IRQs are not.
    let planned = planned_config(&h, &p);
    let report = check::run(&h, &planned);
    assert_eq!(status(&report, "pinning.cores"), Status::Ok);
    assert_eq!(status(&report, "pinning.overlap"), Status::Ok);
    assert_eq!(status(&report, "pinning.numa"), Status::Ok);
    assert_eq!(status(&report, "pinning.irq"), Status::Warn);

    // Backend threads spread over both nodes are called out.
    let mut spread = planned.clone();
    spread.backend.cores = vec![1, 17];
    assert_eq!(
        status(&check::run(&h, &spread), "pinning.numa"),
        Status::Warn
    );
    // A shard on a core this host does not have.
    let mut offline = planned;
    offline.gateway.cores = crate::config::Cores::List(vec![70]);
    assert_eq!(
        status(&check::run(&h, &offline), "pinning.cores"),
        Status::Critical
    );
}

#[test]
fn pinned_irqs_16core_is_clean_with_its_plan() {
    let h = host("pinned-irqs-16core");
    assert_eq!(
        h.nic_irqs.len(),
        8,
        "eth0-TxRx-0..7, not the link interrupt `eth0`"
    );
    assert!(h.nic_irqs.iter().all(|i| i.affinity == vec![0]));

    let p = plan::plan(&h, &Config::default());
    assert_disjoint(&h, &p);
    assert_eq!(p.irq, vec![0]);
    assert_eq!(p.backend, vec![1, 2, 3, 4, 5]);
    assert_eq!(p.shards, (6..16).collect::<Vec<_>>());
    assert!(p.irq_moves.is_empty(), "already on core 0");
    assert!(p.text().contains("nothing to move"));

    // 10 shards within a hard limit of 2,000,000 descriptors.
    assert_eq!(p.conns_per_shard_max, Some(190_000));
    let mut config = planned_config(&h, &p);
    let report = check::run(&h, &config);
    let not_ok: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");

    // Shards on the interrupt core and sharing the backend's cores.
    config.gateway.cores = crate::config::Cores::List(vec![0, 1, 6, 7]);
    let report = check::run(&h, &config);
    assert_eq!(status(&report, "pinning.irq"), Status::Warn);
    assert_eq!(status(&report, "pinning.overlap"), Status::Warn);
    assert!(!report.critical());
}

#[test]
fn json_has_the_documented_shape() {
    let report = check::run(&host("vm-2core"), &Config::default());
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.len() >= 15);
    for c in checks {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "{c}");
        for k in ["name", "value", "recommended", "why"] {
            assert!(c[k].is_string(), "{k} in {c}");
        }
        assert!(["ok", "warn", "critical"].contains(&c["status"].as_str().unwrap()));
    }
}

#[test]
fn a_host_without_its_online_file_is_an_error() {
    let err = Host::read(std::path::Path::new("/nonexistent-root")).unwrap_err();
    assert!(err.to_string().contains("online"), "{err}");
}

/// A host of `nodes` (each a CPU list) with LimitNOFILE=1048576, as the guide assumes.
fn synthetic(nodes: &[&str]) -> Host {
    use super::host::{Limit, Node};
    let nodes: Vec<Node> = nodes
        .iter()
        .enumerate()
        .map(|(id, list)| Node {
            id,
            cpus: super::cpus::parse(list).unwrap(),
        })
        .collect();
    let mut online: Vec<usize> = nodes.iter().flat_map(|n| n.cpus.clone()).collect();
    online.sort_unstable();
    Host {
        online,
        nodes,
        nofile: Some(Limit {
            soft: Some(1_048_576),
            hard: Some(1_048_576),
        }),
        ..Host::default()
    }
}

/// tuning/README.md's worked layouts are what `tune plan` prints for those hosts.
#[test]
fn the_guides_layouts_are_the_plans() {
    let guide = include_str!("../../../tuning/README.md");
    let blocks: Vec<&str> = guide
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    let hosts = [
        synthetic(&["0-7"]),
        synthetic(&["0-15"]),
        synthetic(&["0-63"]),
        synthetic(&["0-31", "32-63"]),
    ];
    assert_eq!(blocks.len(), hosts.len());
    for (block, h) in blocks.iter().zip(&hosts) {
        let p = plan::plan(h, &Config::default());
        assert_disjoint(h, &p);
        assert_eq!(
            *block,
            p.toml(),
            "the guide's layout for {} cores",
            h.online.len()
        );
    }
}

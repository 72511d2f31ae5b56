//! `ringchat tune check`: the host against the configuration, one finding per knob, each with
//! its current value, the recommended one and why.

use serde::Serialize;

use super::cpus;
use super::host::Host;
use crate::config::{Config, Cores, Driver};
use crate::fd_budget;

/// Below this many descriptors the server can barely serve anyone.
pub const NOFILE_CRITICAL_BELOW: u64 = 4096;
/// Hosts up to this many cores: the shards, the backend and the kernel share every core
/// whatever the layout, so pinning and interrupt placement buy little.
pub const SMALL_HOST_CORES_MAX: usize = 2;
const PAGE_BYTES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Critical,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub value: String,
    pub recommended: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn critical(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Critical)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// One block per check, for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Critical => "CRITICAL",
            };
            out.push_str(&format!(
                "{status:<8} {}: {}\n         recommended: {}\n         {}\n",
                c.name, c.value, c.recommended, c.why
            ));
        }
        out
    }
}

pub(super) fn check(
    name: &str,
    status: Status,
    value: impl Into<String>,
    recommended: impl Into<String>,
    why: impl Into<String>,
) -> Check {
    Check {
        name: name.to_owned(),
        status,
        value: value.into(),
        recommended: recommended.into(),
        why: why.into(),
    }
}

/// What the configuration asks of the host, resolved on it.
pub(super) struct Wants {
    pub(super) shards: Vec<usize>,
    /// `false`: the CPU quota set the shards' number and they are not pinned (`ShardPlan`).
    pub(super) shards_pinned: bool,
    pub(super) backend: Vec<usize>,
    /// Descriptors for the configured connection limits.
    pub(super) nofile: u64,
    /// Descriptors kept for everything but client connections.
    pub(super) reserve: u64,
    /// Connections the host can hold at once: the configured limit, capped by descriptors.
    pub(super) connections: u64,
}

pub fn run(host: &Host, config: &Config) -> Report {
    let plan = config.shard_plan_on(&host.cpus());
    let (shards, shards_pinned) = (plan.cores, plan.pinned);
    let backend = config.backend.cores.clone();
    let gw = &config.gateway;
    let client = (gw.conns_per_shard_max as u64).saturating_mul(shards.len() as u64);
    let fds = host.nofile.map_or(u64::MAX, |l| l.hard.unwrap_or(u64::MAX));
    let wants = Wants {
        connections: client.min(
            fd_budget::conns_per_shard_within(fds, config, shards.len())
                .saturating_mul(shards.len() as u64),
        ),
        nofile: fd_budget::need(config, shards.len()),
        reserve: fd_budget::reserve(config, shards.len()),
        shards,
        shards_pinned,
        backend,
    };
    let mut checks = vec![cores(host)];
    checks.extend(pinning(host, config, &wants));
    checks.push(nofile_check(host, &wants));
    checks.push(memlock(host, config, &wants));
    checks.extend(super::sysctls::checks(host, config, &wants));
    checks.push(thp(host));
    checks.push(governor(host, &wants));
    checks.extend(io_uring(host, gw.driver));
    Report { checks }
}

fn cores(host: &Host) -> Check {
    let nodes = host.nodes_or_one();
    let per_node: Vec<String> = nodes
        .iter()
        .map(|n| format!("node{}: {}", n.id, cpus::format(&n.cpus)))
        .collect();
    check(
        "cores",
        Status::Ok,
        format!(
            "{} online ({}), {} NUMA node(s) ({})",
            host.online.len(),
            cpus::format(&host.online),
            nodes.len(),
            per_node.join("; ")
        ),
        "-",
        "One shard per core given to gateway.cores; `ringchat tune plan` proposes a layout for these cores.",
    )
}

fn pinning(host: &Host, config: &Config, w: &Wants) -> Vec<Check> {
    let small = host.online.len() <= SMALL_HOST_CORES_MAX;
    let mut out = Vec::new();
    let configured = match &config.gateway.cores {
        Cores::List(_) => "gateway.cores",
        Cores::Named(_) => "gateway.cores = \"auto\"",
    };
    let offline: Vec<usize> = w
        .shards
        .iter()
        .chain(&w.backend)
        .copied()
        .filter(|c| !host.online.contains(c))
        .collect();
    let shards = if w.shards_pinned {
        format!("shards on {}", cpus::format(&w.shards))
    } else {
        format!(
            "{} shards, not pinned (the CPU quota allows no more)",
            w.shards.len()
        )
    };
    let value = format!(
        "{configured} → {shards}; backend.cores = [{}]",
        cpus::format(&w.backend)
    );
    out.push(if !offline.is_empty() {
        check(
            "pinning.cores",
            Status::Critical,
            value,
            "cores that are online on this host",
            format!(
                "Cores {} are not online here: the server refuses to start.",
                cpus::format(&offline)
            ),
        )
    } else if small {
        check(
            "pinning.cores",
            Status::Ok,
            value,
            "gateway.cores = \"auto\", backend.cores = []",
            "On 2 cores or fewer every thread shares every core whatever the layout: pinning buys little.",
        )
    } else if w.backend.is_empty() {
        check(
            "pinning.cores",
            Status::Warn,
            value,
            "backend.cores of their own (see `ringchat tune plan`)",
            "The backend, the commit thread and the storage workers are not pinned: they float over the shards' cores and take turns with them. In the benchmarks the commit thread and the storage workers spend most of the server's CPU (docs/BENCHMARKS.md).",
        )
    } else {
        check(
            "pinning.cores",
            Status::Ok,
            value,
            "-",
            "Shards and backend have cores of their own.",
        )
    });
    let both: Vec<usize> = w
        .shards
        .iter()
        .copied()
        .filter(|c| w.backend.contains(c))
        .collect();
    out.push(if both.is_empty() {
        check(
            "pinning.overlap",
            Status::Ok,
            "none",
            "none",
            "No core runs both a shard and a backend thread.",
        )
    } else {
        check(
            "pinning.overlap",
            if small { Status::Ok } else { Status::Warn },
            format!("cores {} run a shard and backend threads", cpus::format(&both)),
            "none: take these cores out of gateway.cores",
            "A shard's event loop and a backend thread on one core take turns: each waits for the other's time slice, which shows in p99.",
        )
    });
    let nodes = host.nodes_or_one();
    let backend_nodes: Vec<usize> = nodes
        .iter()
        .filter(|n| w.backend.iter().any(|c| n.cpus.contains(c)))
        .map(|n| n.id)
        .collect();
    out.push(if nodes.len() < 2 {
        check(
            "pinning.numa",
            Status::Ok,
            "one NUMA node",
            "-",
            "All memory is equally near every core.",
        )
    } else if backend_nodes.len() > 1 {
        check(
            "pinning.numa",
            Status::Warn,
            format!("backend cores on nodes {backend_nodes:?}"),
            "backend.cores on one node",
            "The sequencer and the backend share queues and the store's memory: spread over nodes, every hand-off crosses the interconnect.",
        )
    } else {
        check(
            "pinning.numa",
            Status::Ok,
            format!("{} nodes; backend on node {:?}", nodes.len(), backend_nodes),
            "-",
            "The backend sits on one node; shards on every node serve the clients whose interrupts land there.",
        )
    });
    out.push(irq_check(host, w, small));
    out
}

fn irq_check(host: &Host, w: &Wants, small: bool) -> Check {
    if host.nic_irqs.is_empty() {
        return check(
            "pinning.irq",
            Status::Ok,
            "no NIC queue interrupts found in /proc/interrupts",
            "-",
            "Nothing to place (loopback only, or a driver whose queue names are not recognised).",
        );
    }
    let on_shards: Vec<String> = host
        .nic_irqs
        .iter()
        .filter(|i| i.affinity.iter().any(|c| w.shards.contains(c)))
        .map(|i| format!("{} ({})", i.number, i.name))
        .collect();
    let irq_cores: Vec<usize> = host
        .nic_irqs
        .iter()
        .flat_map(|i| i.affinity.iter().copied())
        .collect();
    let value = format!(
        "{} NIC queue interrupt(s) on cores {}; {} of them may run on shard cores",
        host.nic_irqs.len(),
        cpus::format(&irq_cores),
        on_shards.len()
    );
    if on_shards.is_empty() {
        check(
            "pinning.irq",
            Status::Ok,
            value,
            "-",
            "The NIC's interrupts stay off the shards' cores.",
        )
    } else if small {
        check(
            "pinning.irq",
            Status::Ok,
            value,
            "-",
            "On 2 cores or fewer interrupts share the shards' cores whatever their affinity.",
        )
    } else {
        check(
            "pinning.irq",
            Status::Warn,
            value,
            "NIC interrupts on cores of their own (the `echo … > /proc/irq/N/smp_affinity_list` lines of `ringchat tune plan`; ban those cores in irqbalance)",
            format!(
                "Softirq work of the network stack preempts the shard on that core: {}.",
                on_shards
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }
}

fn nofile_check(host: &Host, w: &Wants) -> Check {
    let recommended = format!(
        "hard limit ≥ {} (gateway.conns_per_shard_max × {} shards + {} for the store, logs, listeners, admin and file connections)",
        w.nofile,
        w.shards.len(),
        w.reserve
    );
    let Some(limit) = host.nofile else {
        return check(
            "rlimit.nofile",
            Status::Warn,
            "unknown (/proc/self/limits unreadable)",
            recommended,
            "Each connection is a file descriptor.",
        );
    };
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
    let value = format!("soft {}, hard {}", show(limit.soft), show(limit.hard));
    let hard = limit.hard.unwrap_or(u64::MAX);
    let why = "Each connection is a file descriptor; `ringchat serve` raises its soft limit to the hard one at start, so the hard limit counts (LimitNOFILE= in systemd, `ulimit -Hn`, limits.conf).";
    // No room for a client past the reserve: `serve` refuses to start (fd_budget::ConnsCap).
    let refused = w.connections == 0;
    let status = if hard < NOFILE_CRITICAL_BELOW || refused {
        Status::Critical
    } else if hard < w.nofile {
        Status::Warn
    } else {
        Status::Ok
    };
    let why = match status {
        Status::Ok => why.to_owned(),
        _ if refused => format!(
            "{why} This limit does not even hold the {} descriptors the server keeps for itself: `ringchat serve` refuses to start (\"no room for clients\").",
            w.reserve
        ),
        _ => format!(
            "{why} With this limit the server lowers gateway.conns_per_shard_max so that the shards hold at most {} clients together (the rest are told SERVER_FULL).",
            w.connections
        ),
    };
    check("rlimit.nofile", status, value, recommended, why)
}

/// Locked memory one io_uring ring of `entries` takes: 64-byte submission entries, twice as
/// many 16-byte completion entries, the submission index array, each rounded up to pages.
pub fn ring_bytes(entries: u32) -> u64 {
    let e = u64::from(entries);
    let pages = |b: u64| b.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    pages(64 * e) + pages(2 * 16 * e + 64) + pages(4 * e + 64)
}

fn memlock(host: &Host, config: &Config, w: &Wants) -> Check {
    let entries = config.gateway.io_uring_entries;
    let need = ring_bytes(entries) * w.shards.len() as u64;
    let recommended = format!(
        "≥ {} KiB ({} shards × {} KiB for gateway.io_uring_entries = {entries}), or unlimited",
        need.div_ceil(1024),
        w.shards.len(),
        ring_bytes(entries) / 1024
    );
    let value = match host.memlock {
        Some(l) => l
            .soft
            .map_or("unlimited".to_owned(), |b| format!("{} KiB", b / 1024)),
        None => "unknown".to_owned(),
    };
    if config.gateway.driver == Driver::Epoll {
        return check(
            "rlimit.memlock",
            Status::Ok,
            value,
            "-",
            "gateway.driver = \"epoll\": no io_uring rings.",
        );
    }
    if let Some((major, minor)) = host.kernel_version()
        && (major, minor) >= (5, 12)
    {
        return check(
            "rlimit.memlock",
            Status::Ok,
            value,
            recommended,
            format!(
                "Kernel {major}.{minor}: since 5.12 io_uring rings are charged to the memory cgroup, not to RLIMIT_MEMLOCK."
            ),
        );
    }
    let soft = host.memlock.map(|l| l.soft.unwrap_or(u64::MAX));
    let short = soft.is_some_and(|s| s < need);
    let status = match (short, config.gateway.driver) {
        (false, _) => Status::Ok,
        (true, Driver::IoUring) => Status::Critical,
        (true, _) => Status::Warn,
    };
    let why = match status {
        Status::Ok => "Before kernel 5.12 io_uring rings count against RLIMIT_MEMLOCK (the server does not raise it)."
            .to_owned(),
        Status::Critical => "Before kernel 5.12 io_uring rings count against RLIMIT_MEMLOCK: with gateway.driver = \"io_uring\" the shards fail to start (LimitMEMLOCK= in systemd, `ulimit -l`).".to_owned(),
        Status::Warn => "Before kernel 5.12 io_uring rings count against RLIMIT_MEMLOCK: the shards that cannot create theirs fall back to epoll (LimitMEMLOCK= in systemd, `ulimit -l`).".to_owned(),
    };
    check("rlimit.memlock", status, value, recommended, why)
}

fn thp(host: &Host) -> Check {
    let selected = host.thp.as_deref().and_then(|t| {
        let start = t.find('[')?;
        let end = t[start..].find(']')? + start;
        Some(t[start + 1..end].to_owned())
    });
    let why = "ringchat turns THP off for its own process (prctl PR_SET_THP_DISABLE, unless MIMALLOC_ALLOW_THP is set): with it, idle connections measured up to 1.8 KiB each instead of 1.0 (docs/BENCHMARKS.md).";
    match selected.as_deref() {
        Some("always") => check(
            "transparent_hugepage",
            Status::Warn,
            "always",
            "madvise",
            format!(
                "{why} Other processes on the host still get huge pages, and khugepaged's compaction stalls on the shared cores."
            ),
        ),
        Some(v) => check("transparent_hugepage", Status::Ok, v, "madvise", why),
        None => check(
            "transparent_hugepage",
            Status::Ok,
            "not available",
            "madvise",
            "This kernel has no transparent huge pages.",
        ),
    }
}

fn governor(host: &Host, w: &Wants) -> Check {
    let mut ours: Vec<usize> = w.shards.iter().chain(&w.backend).copied().collect();
    ours.sort_unstable();
    ours.dedup();
    if host.governors.is_empty() {
        return check(
            "cpu.governor",
            Status::Ok,
            "no cpufreq",
            "performance, where the host controls frequency",
            "No frequency scaling is exposed: a virtual machine (the hypervisor decides) or firmware-controlled frequency.",
        );
    }
    let slow: Vec<usize> = ours
        .iter()
        .copied()
        .filter(|c| host.governors.get(c).is_some_and(|g| g != "performance"))
        .collect();
    let mut seen: Vec<&str> = host.governors.values().map(String::as_str).collect();
    seen.sort_unstable();
    seen.dedup();
    check(
        "cpu.governor",
        if slow.is_empty() {
            Status::Ok
        } else {
            Status::Warn
        },
        if slow.is_empty() {
            seen.join(", ")
        } else {
            format!("{} on cores {}", seen.join(", "), cpus::format(&slow))
        },
        "performance on the shard and backend cores",
        "Messages come in bursts: a core that slowed down between them takes a few milliseconds to speed up again, which lands in p99.",
    )
}

fn io_uring(host: &Host, driver: Driver) -> Vec<Check> {
    let mut out = Vec::new();
    let fallback = match driver {
        Driver::IoUring => Status::Critical,
        _ => Status::Warn,
    };
    let consequence = match driver {
        Driver::IoUring => "gateway.driver = \"io_uring\": the shards fail to start.",
        Driver::Auto => "gateway.driver = \"auto\": the shards fall back to epoll.",
        Driver::Epoll => "gateway.driver = \"epoll\": io_uring is not used anyway.",
    };
    let epoll = driver == Driver::Epoll;
    out.push(
        match host
            .sysctl_numbers("kernel.io_uring_disabled")
            .and_then(|v| v.first().copied())
        {
            None => check(
                "kernel.io_uring_disabled",
                Status::Ok,
                "absent",
                "0",
                "Kernels before 6.6 have no switch: io_uring is allowed.",
            ),
            Some(0) => check(
                "kernel.io_uring_disabled",
                Status::Ok,
                "0",
                "0",
                "io_uring is allowed for every process.",
            ),
            Some(v) => check(
                "kernel.io_uring_disabled",
                if epoll { Status::Ok } else { fallback },
                v.to_string(),
                "0 (or 1 with the server's group in kernel.io_uring_group)",
                format!(
                    "{} {consequence}",
                    if v == 1 {
                        "Only processes in kernel.io_uring_group (and root) may create rings."
                    } else {
                        "io_uring is disabled for every process."
                    }
                ),
            ),
        },
    );
    out.push(match host.seccomp {
        Some(0) => check(
            "seccomp",
            Status::Ok,
            "0 (none)",
            "0, or a filter that allows io_uring_setup, io_uring_enter, io_uring_register",
            "No system call filter on this process (a server started the same way gets the same).",
        ),
        Some(mode) => check(
            "seccomp",
            if epoll { Status::Ok } else { Status::Warn },
            format!("{mode} (filter)"),
            "a profile that allows io_uring_setup, io_uring_enter, io_uring_register",
            format!(
                "A system call filter applies to this process, as in most containers; Docker's default profile blocks io_uring. {consequence}"
            ),
        ),
        None => check(
            "seccomp",
            Status::Ok,
            "unknown",
            "-",
            "/proc/self/status has no Seccomp line (a kernel without seccomp).",
        ),
    });
    out
}

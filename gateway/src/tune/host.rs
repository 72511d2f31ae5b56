//! What `tune` knows of a host, read from `/proc` and `/sys` under a root directory: `/` for
//! this machine, or a tree recorded from another one (the tests' fixtures). Only reads.
//! A file that is missing or unreadable leaves its field empty: the check then says it could
//! not tell, it does not guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::cpus;

/// The sysctls the checks look at, by their dotted name (file under `proc/sys`).
pub const SYSCTLS: [&str; 13] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    // Present only while connection tracking is loaded.
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "fs.file-max",
    "fs.nr_open",
    "kernel.io_uring_disabled",
];

/// Interrupt lines read from `/proc/interrupts`, at most: a host with many NICs and queues
/// has a few thousand.
const IRQS_MAX: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: cannot read the online CPUs: {source}")]
    Online {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadCpuList { path: PathBuf, reason: String },
}

/// A NUMA node and its online CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: usize,
    pub cpus: Vec<usize>,
}

/// One NIC queue's interrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    pub number: u32,
    /// The action's name, e.g. `eth0-TxRx-3`, `mlx5_comp5@pci:0000:3b:00.0`, `virtio1-input.0`.
    pub name: String,
    /// CPUs it may be delivered to (`/proc/irq/N/smp_affinity_list`); empty if unreadable.
    pub affinity: Vec<usize>,
    /// The NUMA node of its device (`/proc/irq/N/node`), when the kernel knows it.
    pub node: Option<usize>,
}

/// A soft and hard resource limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Host {
    pub root: PathBuf,
    /// Online CPUs (`/sys/devices/system/cpu/online`), sorted.
    pub online: Vec<usize>,
    /// NUMA nodes with at least one online CPU; empty when the kernel shows none (no NUMA).
    pub nodes: Vec<Node>,
    /// NIC queue interrupts.
    pub nic_irqs: Vec<Irq>,
    /// Present sysctls of `SYSCTLS`, whitespace collapsed to single spaces (an empty one, such
    /// as no reserved ports, is present and empty).
    pub sysctl: BTreeMap<&'static str, String>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`, e.g. `always [madvise] never`.
    pub thp: Option<String>,
    /// Each CPU's cpufreq governor, where cpufreq exists.
    pub governors: BTreeMap<usize, String>,
    /// `Seccomp:` of `/proc/self/status`: 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    /// Of `/proc/self/limits`: what a server started the same way would get.
    pub nofile: Option<Limit>,
    pub memlock: Option<Limit>,
    /// `/proc/sys/kernel/osrelease`, e.g. `6.8.0-45-generic`.
    pub kernel: Option<String>,
    /// `MemTotal` of `/proc/meminfo`.
    pub mem_total_bytes: Option<u64>,
    /// CPUs the cgroup's quota allows (`cpu.max`, rounded up); `None`: no quota.
    pub cpu_quota: Option<usize>,
}

impl Host {
    pub fn read(root: &Path) -> Result<Host, HostError> {
        let online_path = root.join("sys/devices/system/cpu/online");
        let text = std::fs::read_to_string(&online_path).map_err(|source| HostError::Online {
            path: online_path.clone(),
            source,
        })?;
        let online = cpus::parse(&text).map_err(|reason| HostError::BadCpuList {
            path: online_path,
            reason,
        })?;
        let mut host = Host {
            root: root.to_owned(),
            nodes: read_nodes(root, &online),
            online,
            ..Host::default()
        };
        host.nic_irqs = read_nic_irqs(root);
        for key in SYSCTLS {
            if let Some(v) = read_trimmed(&root.join("proc/sys").join(key.replace('.', "/"))) {
                host.sysctl
                    .insert(key, v.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        host.thp = read_trimmed(&root.join("sys/kernel/mm/transparent_hugepage/enabled"));
        for &cpu in &host.online {
            let path = root.join(format!(
                "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            ));
            if let Some(g) = read_trimmed(&path) {
                host.governors.insert(cpu, g);
            }
        }
        if let Some(status) = read_trimmed(&root.join("proc/self/status")) {
            host.seccomp = status
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .and_then(|v| v.trim().parse().ok());
        }
        if let Some(limits) = read_trimmed(&root.join("proc/self/limits")) {
            host.nofile = parse_limit(&limits, "Max open files");
            host.memlock = parse_limit(&limits, "Max locked memory");
        }
        host.kernel = read_trimmed(&root.join("proc/sys/kernel/osrelease"));
        host.cpu_quota = crate::config::host::read_cpu_quota(root);
        host.mem_total_bytes = read_trimmed(&root.join("proc/meminfo")).and_then(|m| {
            let kib = m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
            let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        });
        Ok(host)
    }

    /// The CPUs the configuration is checked and resolved against.
    pub fn cpus(&self) -> crate::config::HostCpus {
        crate::config::HostCpus {
            online: self.online.clone(),
            quota: self.cpu_quota,
        }
    }

    /// A sysctl's value as numbers (`tcp_rmem` has three), if present and numeric.
    pub fn sysctl_numbers(&self, key: &str) -> Option<Vec<u64>> {
        self.sysctl
            .get(key)?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect()
    }

    /// The kernel's major and minor version, e.g. (6, 8).
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        let release = self.kernel.as_deref()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    /// The node `cpu` belongs to, if the host has NUMA nodes.
    pub fn node_of(&self, cpu: usize) -> Option<usize> {
        self.nodes
            .iter()
            .find(|n| n.cpus.contains(&cpu))
            .map(|n| n.id)
    }

    /// The NUMA nodes, or one node holding every online CPU when the kernel shows none.
    pub fn nodes_or_one(&self) -> Vec<Node> {
        if self.nodes.is_empty() {
            vec![Node {
                id: 0,
                cpus: self.online.clone(),
            }]
        } else {
            self.nodes.clone()
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_nodes(root: &Path, online: &[usize]) -> Vec<Node> {
    let Ok(dir) = std::fs::read_dir(root.join("sys/devices/system/node")) else {
        return Vec::new();
    };
    let mut nodes: Vec<Node> = dir
        .flatten()
        .filter_map(|e| {
            let id: usize = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let list = read_trimmed(&e.path().join("cpulist"))?;
            let cpus: Vec<usize> = cpus::parse(&list)
                .ok()?
                .into_iter()
                .filter(|c| online.contains(c))
                .collect();
            (!cpus.is_empty()).then_some(Node { id, cpus })
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    nodes
}

/// Whether an interrupt action's name is a network card's queue, by the drivers' naming:
/// `eth0-TxRx-3` (Intel: igb, ixgbe, i40e, ice), `mlx5_comp3@pci:…` (Mellanox),
/// `virtio1-input.0` (virtio-net; `virtio0-req.0` is a disk), `ens5-Tx-Rx-0` (ENA),
/// `enp3s0f0-rx-1`, `bnxt_en…`.
pub fn is_nic_queue(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let netdev = ["eth", "ens", "enp", "eno", "enx", "em", "bond"]
        .iter()
        .any(|p| lower.starts_with(p) && lower.contains('-'));
    netdev
        || lower.contains("txrx")
        || lower.contains("tx-rx")
        || lower.contains("-rx-")
        || lower.contains("-tx-")
        || lower.starts_with("mlx5_comp")
        || lower.starts_with("mlx4-")
        || lower.starts_with("bnxt")
        || lower.starts_with("ena-")
        || (lower.starts_with("virtio") && (lower.contains("-input") || lower.contains("-output")))
}

/// The NIC queue lines of `/proc/interrupts`: `  24:  0 0 … IR-PCI-MSI 524288-edge  eth0-TxRx-0`.
/// The action name is the last field; lines without a number (NMI, LOC…) are not devices.
pub fn parse_nic_irqs(interrupts: &str) -> Vec<(u32, String)> {
    interrupts
        .lines()
        .skip(1)
        .take(IRQS_MAX)
        .filter_map(|line| {
            let (number, rest) = line.trim_start().split_once(':')?;
            let number: u32 = number.parse().ok()?;
            let name = rest.split_whitespace().last()?;
            is_nic_queue(name).then(|| (number, name.to_owned()))
        })
        .collect()
}

fn read_nic_irqs(root: &Path) -> Vec<Irq> {
    let Some(text) = read_trimmed(&root.join("proc/interrupts")) else {
        return Vec::new();
    };
    parse_nic_irqs(&text)
        .into_iter()
        .map(|(number, name)| {
            let dir = root.join(format!("proc/irq/{number}"));
            Irq {
                affinity: read_trimmed(&dir.join("smp_affinity_list"))
                    .and_then(|l| cpus::parse(&l).ok())
                    .unwrap_or_default(),
                // -1: the device's node is unknown.
                node: read_trimmed(&dir.join("node")).and_then(|n| n.parse().ok()),
                number,
                name,
            }
        })
        .collect()
}

/// `Max open files  1024  524288  files` → soft and hard; `unlimited` is `None`.
fn parse_limit(limits: &str, what: &str) -> Option<Limit> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(what))?;
    let mut fields = rest.split_whitespace();
    let value = |f: &str| -> Option<Option<u64>> {
        if f == "unlimited" {
            Some(None)
        } else {
            f.parse().ok().map(Some)
        }
    };
    Some(Limit {
        soft: value(fields.next()?)?,
        hard: value(fields.next()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_queues_are_told_from_other_interrupts() {
        let text = "           CPU0       CPU1\n  \
            0:         22          0   IO-APIC   2-edge      timer\n \
            24:          0       1234   PCI-MSI 49153-edge      virtio1-input.0\n \
            25:          1          0   PCI-MSI 49154-edge      virtio1-output.0\n \
            26:          0         90   PCI-MSI 32769-edge      virtio0-req.0\n \
            40:          5          5   IR-PCI-MSI 524288-edge  eth0-TxRx-0\n \
            41:          5          5   IR-PCI-MSI 1572864-edge  mlx5_comp0@pci:0000:3b:00.0\n\
            NMI:          0          0   Non-maskable interrupts\n";
        let irqs: Vec<u32> = parse_nic_irqs(text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(irqs, vec![24, 25, 40, 41]);
    }

    #[test]
    fn limits_and_unlimited() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
            Max open files            1024                 524288               files\n\
            Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(
            parse_limit(text, "Max open files"),
            Some(Limit {
                soft: Some(1024),
                hard: Some(524_288)
            })
        );
        assert_eq!(
            parse_limit(text, "Max locked memory"),
            Some(Limit {
                soft: None,
                hard: None
            })
        );
    }
}

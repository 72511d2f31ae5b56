//! `ringchat tune plan`: a pinning layout for a host. The first core of each NUMA node is left
//! to the NIC's interrupts and the OS; the backend (its tokio workers, the commit thread, the
//! storage engine's workers) gets a third of the rest (at most `BACKEND_CORES_MAX`) from the first node on, where the store's
//! memory is; the shards get everything else, on every node. On 2 cores or fewer there is
//! nothing to separate and the plan says so.

use super::check::SMALL_HOST_CORES_MAX;
use super::cpus;
use super::host::Host;
use crate::config::Config;

/// Cores the backend is given at most: past this its tokio workers idle, and the sequencer
/// is one thread whatever the count.
pub const BACKEND_CORES_MAX: usize = 16;
/// A node needs this many cores before one of them is set aside for interrupts.
const IRQ_CORE_NODE_CORES_MIN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqMove {
    pub irq: u32,
    pub name: String,
    pub cores: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `gateway.cores`; empty: `"auto"` (the small-host layout).
    pub shards: Vec<usize>,
    /// `backend.cores` (and `backend.worker_threads`, one per core).
    pub backend: Vec<usize>,
    /// Cores left to interrupts and the OS.
    pub irq: Vec<usize>,
    /// NIC interrupts to move onto `irq` cores.
    pub irq_moves: Vec<IrqMove>,
    /// `gateway.conns_per_shard_max` that keeps all shards within the descriptor limit, when
    /// the configured one does not.
    pub conns_per_shard_max: Option<usize>,
    /// Online cores of the host, for `check-config --host-cores`.
    pub host_cores: Vec<usize>,
    pub nodes: usize,
}

/// A layout for `host`; `config` gives the connection limits to fit into RLIMIT_NOFILE.
pub fn plan(host: &Host, config: &Config) -> Plan {
    let nodes = host.nodes_or_one();
    let mut p = Plan {
        shards: Vec::new(),
        backend: Vec::new(),
        irq: Vec::new(),
        irq_moves: Vec::new(),
        conns_per_shard_max: None,
        host_cores: host.online.clone(),
        nodes: nodes.len(),
    };
    if host.online.len() <= SMALL_HOST_CORES_MAX {
        return p;
    }
    // Per node: the interrupt core first, then the rest in order.
    let mut rest: Vec<Vec<usize>> = Vec::new();
    for node in &nodes {
        let mut cores = node.cpus.clone();
        if cores.len() >= IRQ_CORE_NODE_CORES_MIN {
            p.irq.push(cores.remove(0));
        }
        rest.push(cores);
    }
    let usable: usize = rest.iter().map(Vec::len).sum();
    // The commit thread and the storage workers spent three quarters of the server's CPU in the
    // benchmarks (docs/BENCHMARKS.md), the shards the rest: a third is a starting point to measure.
    let backend = (usable / 3).clamp(1, BACKEND_CORES_MAX);
    // The backend fills the first node first; a node left without cores gets no shards.
    for cores in &mut rest {
        let take = (backend - p.backend.len()).min(cores.len());
        p.backend.extend(cores.drain(..take));
    }
    p.shards = rest.into_iter().flatten().collect();
    p.shards.sort_unstable();
    if p.shards.is_empty() {
        // 3 cores on one node: the interrupt core goes back to the shards.
        p.shards = std::mem::take(&mut p.irq);
    }
    p.conns_per_shard_max = fitting_conns(host, config, p.shards.len());
    for irq in &host.nic_irqs {
        // The interrupt cores of the device's node, else all of them.
        let near: Vec<usize> = p
            .irq
            .iter()
            .copied()
            .filter(|&c| irq.node.is_some() && host.node_of(c) == irq.node)
            .collect();
        let cores = if near.is_empty() { p.irq.clone() } else { near };
        if !cores.is_empty() && cores != irq.affinity {
            p.irq_moves.push(IrqMove {
                irq: irq.number,
                name: irq.name.clone(),
                cores,
            });
        }
    }
    p
}

/// The per-shard connection limit under which `shards` shards stay within the hard
/// RLIMIT_NOFILE (rounded down to two significant digits), if the configured one does not.
fn fitting_conns(host: &Host, config: &Config, shards: usize) -> Option<usize> {
    let hard = host.nofile?.hard?;
    let room = crate::fd_budget::conns_per_shard_within(hard, config, shards);
    if room == 0 || room >= config.gateway.conns_per_shard_max as u64 {
        return None;
    }
    let unit = 10u64.pow(room.ilog10().saturating_sub(1));
    Some((room / unit * unit) as usize)
}

impl Plan {
    pub fn small(&self) -> bool {
        self.shards.is_empty()
    }

    /// The configuration snippet; it passes `ringchat check-config --host-cores HOST`.
    pub fn toml(&self) -> String {
        let host = cpus::format(&self.host_cores);
        let mut out = format!(
            "# ringchat tune plan: {} cores ({host}), {} NUMA node(s)\n# check-config --host-cores {host}\n",
            self.host_cores.len(),
            self.nodes
        );
        if self.small() {
            out.push_str(
                "[gateway]\ncores = \"auto\"\n\n[backend]\ncores = []\nworker_threads = 1\n",
            );
            return out;
        }
        let list = |v: &[usize]| {
            v.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "[gateway]\n# One shard per core ({} shards).\ncores = [{}]\n",
            self.shards.len(),
            list(&self.shards),
        ));
        if let Some(conns) = self.conns_per_shard_max {
            out.push_str(&format!("conns_per_shard_max = {conns}\n"));
        }
        out.push_str(&format!(
            "\n[backend]\n# The commit thread runs on the first; one tokio worker per core.\ncores = [{}]\nworker_threads = {}\n",
            list(&self.backend),
            self.backend.len()
        ));
        out
    }

    /// The process's allowed cores, for systemd's `CPUAffinity=`: shards and backend.
    pub fn cpu_affinity(&self) -> String {
        if self.small() {
            return cpus::format(&self.host_cores);
        }
        let all: Vec<usize> = self.shards.iter().chain(&self.backend).copied().collect();
        cpus::format(&all)
    }

    /// The whole plan, for people: layout, snippet, interrupt commands, systemd line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.small() {
            out.push_str(&format!(
                "{} core(s): the shards, the backend, the commit thread and the kernel share every core whatever the layout, so pinning buys little. The simple layout: one shard per core, the backend unpinned.\n\n",
                self.host_cores.len()
            ));
        } else {
            out.push_str(&format!(
                "shards:  {} ({} shards)\nbackend: {} (commit thread, {} tokio worker(s), storage workers)\ninterrupts and OS: {}\n\n",
                cpus::format(&self.shards),
                self.shards.len(),
                cpus::format(&self.backend),
                self.backend.len(),
                if self.irq.is_empty() {
                    "-".to_owned()
                } else {
                    cpus::format(&self.irq)
                },
            ));
        }
        out.push_str("# Configuration (add to the config file; check it with the line below):\n");
        out.push_str(&self.toml());
        out.push('\n');
        if self.irq_moves.is_empty() {
            out.push_str("# NIC interrupts: nothing to move.\n");
        } else {
            out.push_str(&format!(
                "# NIC interrupts onto cores {} (as root; irqbalance would move them back: stop it, or set IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance):\n",
                cpus::format(&self.irq),
                self.cpu_affinity()
            ));
            for m in &self.irq_moves {
                out.push_str(&format!(
                    "echo {} > /proc/irq/{}/smp_affinity_list   # {}\n",
                    cpus::format(&m.cores),
                    m.irq,
                    m.name
                ));
            }
        }
        out.push_str(&format!(
            "\n# systemd unit ([Service]): the server's threads on these cores only.\nCPUAffinity={}\n",
            self.cpu_affinity()
        ));
        out
    }
}

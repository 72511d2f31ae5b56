//! What a reader needs to trust a report: when and where it ran, which load generator, and which
//! server build and settings it measured (read from the server's admin `/metrics`, whose
//! `ringchat_build_info` and `ringchat_config_info` gauges carry them as labels).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Time the admin listener gets to answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes of `/metrics` read at most.
const METRICS_BYTES_MAX: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Provenance {
    /// When the run ended, RFC 3339, UTC.
    pub date: String,
    pub bench_version: &'static str,
    pub machine: Machine,
    /// `ringchat_build_info` labels: version, commit. Empty when the admin listener was not
    /// reachable (then the report says so).
    pub server_build: BTreeMap<String, String>,
    /// `ringchat_config_info` labels: durability, shards, cores, driver.
    pub server_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_kib: u64,
}

impl Provenance {
    /// Collects everything; `admin` is the server's admin listener.
    pub fn collect(admin: Option<SocketAddr>) -> Self {
        let metrics = admin
            .and_then(|a| fetch_metrics(a).ok())
            .unwrap_or_default();
        Self {
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            bench_version: env!("CARGO_PKG_VERSION"),
            machine: Machine::here(),
            server_build: info_labels(&metrics, "ringchat_build_info"),
            server_config: info_labels(&metrics, "ringchat_config_info"),
        }
    }

    /// One line each, for the text report.
    pub fn lines(&self) -> String {
        let join = |m: &BTreeMap<String, String>| {
            if m.is_empty() {
                "unknown (admin listener not reachable: pass --admin)".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        format!(
            "  run                {} · ringchat-bench {}\n  machine            {} · {} × {} · {} MiB · Linux {}\n  server build       {}\n  server config      {}\n",
            self.date,
            self.bench_version,
            self.machine.hostname,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_kib / 1024,
            self.machine.kernel,
            join(&self.server_build),
            join(&self.server_config),
        )
    }
}

impl Machine {
    fn here() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(String::new, |(_, v)| v.trim().to_owned());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Self {
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_kib,
        }
    }
}

fn fetch_metrics(admin: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, ADMIN_TIMEOUT)?;
    s.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: ringchat\r\n\r\n")?;
    let mut out = String::new();
    s.take(METRICS_BYTES_MAX).read_to_string(&mut out)?;
    Ok(out)
}

/// The labels of an info gauge: `name{a="1",b="x"} 1` → {a: 1, b: x}.
fn info_labels(metrics: &str, name: &str) -> BTreeMap<String, String> {
    let prefix = format!("{name}{{");
    let Some(line) = metrics.lines().find(|l| l.starts_with(&prefix)) else {
        return BTreeMap::new();
    };
    let inner = line[prefix.len()..].rsplit_once('}').map_or("", |(l, _)| l);
    let mut out = BTreeMap::new();
    // Values are the server's own (versions, core lists, names): no escaped quotes in them.
    let mut rest = inner;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        out.insert(
            key.trim_start_matches(',').trim().to_owned(),
            value.to_owned(),
        );
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_labels_are_parsed() {
        let text = "# TYPE x gauge\nringchat_config_info{durability=\"none\",shards=\"2\",shard_cores=\"[0, 1]\"} 1\n";
        let labels = info_labels(text, "ringchat_config_info");
        assert_eq!(labels["durability"], "none");
        assert_eq!(labels["shards"], "2");
        assert_eq!(labels["shard_cores"], "[0, 1]");
        assert!(info_labels(text, "ringchat_build_info").is_empty());
    }
}

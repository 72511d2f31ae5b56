//! `tune check`'s sysctl findings: the listen queues, the ports of outgoing connections against
//! the server's own listen ports, connection tracking, socket memory and the file tables.
//! tuning/99-ringchat.conf is the profile these recommend.

use super::check::{Check, Status, Wants, check};
use super::host::Host;
use crate::config::Config;

/// Bytes of socket buffer a busy connection holds at least (a page each way).
const SOCKET_BYTES_MIN: u64 = 8 * 1024;
const PAGE_BYTES: u64 = 4096;
/// Ports the kernel's default `ip_local_port_range` offers outgoing connections; fewer limits a
/// load generator or a busy cluster link to that many connections per destination.
const LOCAL_PORTS_MIN: u64 = 28_000;
/// Conntrack entries wanted per client connection: a closed connection's entry lingers in
/// TIME_WAIT (2 minutes by default) while its client's reconnect makes a new one, so a
/// reconnect storm briefly needs two.
const CONNTRACK_ENTRIES_PER_CONN: u64 = 2;

pub(super) fn checks(host: &Host, config: &Config, w: &Wants) -> Vec<Check> {
    let mut out = listen_queues(host);
    out.extend(local_ports(host, config));
    out.push(conntrack(host, w));
    out.extend(socket_memory(host, w));
    out.extend(file_tables(host, w));
    out
}

fn number(host: &Host, key: &str) -> Option<u64> {
    host.sysctl_numbers(key).and_then(|v| v.first().copied())
}

/// The accept queue, and the SYN queue: with syncookies on (the default, and the profile's) a
/// listener's SYN queue is bounded by its own backlog and cookies answer past it;
/// `tcp_max_syn_backlog` only limits half-open connections when syncookies are off.
fn listen_queues(host: &Host) -> Vec<Check> {
    let backlog = crate::server::LISTEN_BACKLOG as u64;
    let mut out = Vec::new();
    let at_least = |key: &str, min: u64, why: &str| {
        let (status, value) = match number(host, key) {
            Some(v) if v >= min => (Status::Ok, v.to_string()),
            Some(v) => (Status::Warn, v.to_string()),
            None => (Status::Warn, "unknown".to_owned()),
        };
        check(key, status, value, format!("≥ {min}"), why)
    };
    out.push(at_least(
        "net.core.somaxconn",
        backlog,
        "The kernel caps each listener's accept queue (ringchat asks for 4096) at this: after a restart every client reconnects at once, and SYNs past the queue are dropped and retried a second later.",
    ));
    let cookies = number(host, "net.ipv4.tcp_syncookies");
    out.push(match cookies {
        Some(0) => check(
            "net.ipv4.tcp_syncookies",
            Status::Warn,
            "0",
            "1",
            "Off: a reconnect storm that fills a listener's SYN queue has its SYNs dropped (each client retries 1, 3, 7 s later) instead of answered with cookies.",
        ),
        Some(v) => check(
            "net.ipv4.tcp_syncookies",
            Status::Ok,
            v.to_string(),
            "1",
            "A listener whose SYN queue (its backlog) is full answers with cookies instead of dropping.",
        ),
        None => check(
            "net.ipv4.tcp_syncookies",
            Status::Warn,
            "unknown",
            "1",
            "Could not read this sysctl; without cookies a full SYN queue drops SYNs.",
        ),
    });
    const SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
    if matches!(cookies, Some(v) if v > 0) {
        out.push(check(
            SYN_BACKLOG,
            Status::Ok,
            number(host, SYN_BACKLOG).map_or("unknown".to_owned(), |v| v.to_string()),
            "-",
            "Not a limit with tcp_syncookies on: each listener's SYN queue is bounded by its backlog (4096, capped by net.core.somaxconn) and cookies answer past it. It counts only when syncookies are off.",
        ));
    } else {
        out.push(at_least(
            SYN_BACKLOG,
            backlog,
            "With tcp_syncookies off (or unknown), half-open connections per listener during a reconnect storm: below the accept queue it is the tighter bound, and SYNs past it are dropped.",
        ));
    }
    out
}

/// The configuration's listen ports: the client listeners that are on, the admin listener, and
/// the cluster's gRPC listener when clustered.
pub(super) fn listen_ports(config: &Config) -> Vec<(&'static str, u16)> {
    let mut out = Vec::new();
    if let Ok(addrs) = config.gateway.listen_addrs() {
        for (key, addr) in [
            ("gateway.tcp_listen", addrs.tcp),
            ("gateway.ws_listen", addrs.ws),
            ("gateway.tls_listen", addrs.tls),
            ("gateway.wss_listen", addrs.wss),
        ] {
            if let Some(addr) = addr {
                out.push((key, addr.port()));
            }
        }
    }
    if let Some(Ok(addr)) = config.admin.listen_addr() {
        out.push(("admin.listen", addr.port()));
    }
    if config.cluster.enabled
        && let Ok(addr) = config.cluster.grpc_listen.parse::<std::net::SocketAddr>()
    {
        out.push(("cluster.grpc_listen", addr.port()));
    }
    out.retain(|&(_, port)| port != 0);
    out
}

/// `ip_local_reserved_ports`: `7000-7001,7100,8080`, or empty.
pub(super) fn parse_port_list(text: &str) -> Option<Vec<(u16, u16)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let p = part.parse().ok()?;
                Some((p, p))
            }
        })
        .collect()
}

/// The range of ports outgoing connections get, and whether it holds a listen port of the
/// server that is not reserved: an outgoing connection (to PostgreSQL, Redis, a peer) that
/// holds port 7000 when the server (re)starts makes it fail with "port 7000 is already in use",
/// and under a supervisor that restarts it, fail again until that connection ends.
fn local_ports(host: &Host, config: &Config) -> Vec<Check> {
    const RANGE: &str = "net.ipv4.ip_local_port_range";
    const RESERVED: &str = "net.ipv4.ip_local_reserved_ports";
    let mut out = Vec::new();
    let range = match host.sysctl_numbers(RANGE).as_deref() {
        Some(&[low, high]) if high > low => Some((low, high)),
        _ => None,
    };
    out.push(match range {
        Some((low, high)) => {
            let ports = high - low + 1;
            check(
                RANGE,
                if ports >= LOCAL_PORTS_MIN {
                    Status::Ok
                } else {
                    Status::Warn
                },
                format!("{low} {high} ({ports} ports)"),
                format!(
                    "≥ {LOCAL_PORTS_MIN} ports; 1024 65535 on a host that also runs ringchat-bench, with the listen ports in {RESERVED}"
                ),
                "Ports for outgoing connections: the server only accepts, but ringchat-bench on the same host, cluster links and store connections take one each per destination.",
            )
        }
        None => check(
            RANGE,
            Status::Warn,
            host.sysctl
                .get(RANGE)
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
            "1024 65535 with the listen ports reserved, or the default 32768 60999",
            "Ports for outgoing connections (ringchat-bench, cluster links).",
        ),
    });
    let Some((low, high)) = range else {
        return out;
    };
    let reserved_text = host.sysctl.get(RESERVED).cloned();
    let reserved = reserved_text.as_deref().map(parse_port_list);
    let is_reserved = |port: u16| matches!(&reserved, Some(Some(list)) if list.iter().any(|&(a, b)| (a..=b).contains(&port)));
    let exposed: Vec<(&str, u16)> = listen_ports(config)
        .into_iter()
        .filter(|&(_, port)| (low..=high).contains(&u64::from(port)) && !is_reserved(port))
        .collect();
    let value = match reserved_text.as_deref() {
        None => "unknown".to_owned(),
        Some("") => "none".to_owned(),
        Some(list) => list.to_owned(),
    };
    let mut ports: Vec<u16> = listen_ports(config).into_iter().map(|(_, p)| p).collect();
    ports.sort_unstable();
    ports.dedup();
    let all: Vec<String> = ports.iter().map(u16::to_string).collect();
    out.push(if exposed.is_empty() {
        check(
            RESERVED,
            Status::Ok,
            value,
            format!("the listen ports inside {low}-{high}, if any"),
            format!(
                "No listen port of this configuration ({}) can be handed to an outgoing connection.",
                all.join(", ")
            ),
        )
    } else {
        let named: Vec<String> = exposed
            .iter()
            .map(|(key, port)| format!("{key} {port}"))
            .collect();
        check(
            RESERVED,
            Status::Warn,
            value,
            format!(
                "{} (and the ports of PostgreSQL, Redis, ScyllaDB on this host: 5432, 6379, 9042)",
                all.join(",")
            ),
            format!(
                "{} lie in {RANGE} ({low}-{high}) and are not reserved: an outgoing connection can hold one, and the server then fails to start (\"port … is already in use\") until that connection ends.",
                named.join(", ")
            ),
        )
    });
    out
}

/// Connection tracking: with a stateful firewall rule or Docker's NAT every connection needs an
/// entry, and past `nf_conntrack_max` the kernel drops new SYNs without a word (the kernel log
/// says "nf_conntrack: table full, dropping packet").
fn conntrack(host: &Host, w: &Wants) -> Check {
    const MAX: &str = "net.netfilter.nf_conntrack_max";
    let need = w.connections.saturating_mul(CONNTRACK_ENTRIES_PER_CONN);
    let recommended = format!(
        "≥ {need} ({CONNTRACK_ENTRIES_PER_CONN} per connection for {} connections: a closed one lingers in TIME_WAIT while its client reconnects), or no tracking of the client ports (a NOTRACK / notrack rule)",
        w.connections
    );
    let Some(max) = number(host, MAX) else {
        return check(
            MAX,
            Status::Ok,
            "absent (conntrack not loaded)",
            recommended,
            "No connection tracking on this host now. A stateful firewall rule or Docker's NAT loads it: then check again.",
        );
    };
    let count = number(host, "net.netfilter.nf_conntrack_count");
    let value = match count {
        Some(c) => format!("{max} ({c} in use)"),
        None => max.to_string(),
    };
    check(
        MAX,
        if max < need { Status::Warn } else { Status::Ok },
        value,
        recommended,
        "With a stateful firewall or Docker's NAT each connection takes a tracking entry; past the table's size the kernel drops new SYNs silently (dmesg: \"nf_conntrack: table full, dropping packet\"): raise it, or exempt the client ports from tracking (tuning/README.md).",
    )
}

fn socket_memory(host: &Host, w: &Wants) -> Vec<Check> {
    let mut out = Vec::new();
    let mem = host.mem_total_bytes;
    for key in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
        out.push(match (host.sysctl_numbers(key).as_deref(), mem) {
            (Some([min, default, max]), Some(mem)) => {
                let full = default.saturating_mul(w.connections);
                check(
                    key,
                    if full > mem / 2 { Status::Warn } else { Status::Ok },
                    format!("{min} {default} {max}"),
                    format!(
                        "default (middle) × {} connections ≤ half of {} MiB, e.g. 4096 16384 {max}",
                        w.connections,
                        mem >> 20
                    ),
                    format!(
                        "Chat frames are small: buffers only fill for slow readers, but if every connection's did at once they would take {} MiB.",
                        full >> 20
                    ),
                )
            }
            _ => check(
                key,
                Status::Warn,
                host.sysctl.get(key).cloned().unwrap_or_else(|| "unknown".to_owned()),
                "min default max, e.g. 4096 16384 4194304",
                "Could not read this sysctl or the host's memory.",
            ),
        });
    }
    out.push(match host.sysctl_numbers("net.ipv4.tcp_mem").as_deref() {
        Some([low, pressure, high]) => {
            let need = w.connections.saturating_mul(SOCKET_BYTES_MIN) / PAGE_BYTES;
            check(
                "net.ipv4.tcp_mem",
                if *high < need { Status::Warn } else { Status::Ok },
                format!("{low} {pressure} {high} pages"),
                format!("high ≥ {need} pages (a page each way for {} connections)", w.connections),
                "All TCP sockets' memory, in pages: under pressure the kernel shrinks buffers, past high it drops incoming data.",
            )
        }
        _ => check(
            "net.ipv4.tcp_mem",
            Status::Warn,
            "unknown",
            "the kernel's default (sized from memory at boot)",
            "Could not read this sysctl.",
        ),
    });
    out
}

/// The host's file tables: only too low is a finding. systemd raises both at boot (file-max to
/// its maximum, nr_open to 1073741816), and a profile that sets them lowers them.
fn file_tables(host: &Host, w: &Wants) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, why) in [
        (
            "fs.file-max",
            "Open files of the whole host; ringchat's own need comes on top of everyone else's. Raise it only if it is below this (systemd already sets its maximum at boot).",
        ),
        (
            "fs.nr_open",
            "The highest RLIMIT_NOFILE a process may be given: LimitNOFILE= above it fails. Raise it only if it is below this (systemd already sets 1073741816 at boot).",
        ),
    ] {
        if let Some(max) = number(host, name) {
            out.push(check(
                name,
                if max < w.nofile {
                    Status::Warn
                } else {
                    Status::Ok
                },
                max.to_string(),
                format!("≥ {}", w.nofile),
                why,
            ));
        }
    }
    out
}

//! `tune check`'s sysctl findings on hosts made to differ in one sysctl.

use super::check::{self, Status};
use super::host::{Host, Limit};
use super::sysctls::parse_port_list;
use crate::config::Config;

/// One core, a million descriptors, 8 GiB, syncookies on, the kernel's port range: the
/// defaults of a recent kernel under systemd, with `sysctls` on top.
fn host(sysctls: &[(&'static str, &str)]) -> Host {
    let mut h = Host {
        online: vec![0],
        nofile: Some(Limit {
            soft: Some(1_048_576),
            hard: Some(1_048_576),
        }),
        mem_total_bytes: Some(8 << 30),
        ..Host::default()
    };
    for (k, v) in [
        ("net.core.somaxconn", "4096"),
        ("net.ipv4.tcp_max_syn_backlog", "512"),
        ("net.ipv4.tcp_syncookies", "1"),
        ("net.ipv4.ip_local_port_range", "32768 60999"),
        ("net.ipv4.ip_local_reserved_ports", ""),
    ]
    .into_iter()
    .chain(sysctls.iter().copied())
    {
        h.sysctl.insert(k, v.to_owned());
    }
    h
}

fn finding(h: &Host, config: &Config, name: &str) -> check::Check {
    check::run(h, config)
        .get(name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .clone()
}

#[test]
fn reserved_port_lists_parse_as_the_kernel_writes_them() {
    assert_eq!(parse_port_list(""), Some(vec![]));
    assert_eq!(
        parse_port_list("5432,7000-7001,8080"),
        Some(vec![(5432, 5432), (7000, 7001), (8080, 8080)])
    );
    assert_eq!(parse_port_list("7000-x"), None);
}

/// A port range that holds the listen ports warns unless they are reserved: an outgoing
/// connection holding 7000 made the server fail to start ("port 7000 is already in use").
#[test]
fn listen_ports_in_the_local_port_range_must_be_reserved() {
    let config = Config::default();
    let key = "net.ipv4.ip_local_reserved_ports";
    let wide = [("net.ipv4.ip_local_port_range", "1024 65535")];
    let c = finding(&host(&wide), &config, key);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    for named in [
        "gateway.tcp_listen 7000",
        "gateway.ws_listen 7001",
        "admin.listen 8080",
    ] {
        assert!(c.why.contains(named), "{named}: {c:?}");
    }
    // TLS is off without a certificate: its ports are not listened on.
    assert!(c.recommended.starts_with("7000,7001,8080 "), "{c:?}");

    // What tuning/99-ringchat.conf reserves.
    let profile = include_str!("../../../tuning/99-ringchat.conf");
    let reserved = profile
        .lines()
        .find_map(|l| l.strip_prefix("net.ipv4.ip_local_reserved_ports = "))
        .expect("the profile reserves ports");
    let mut tuned = wide.to_vec();
    tuned.push((key, reserved));
    let c = finding(&host(&tuned), &config, key);
    assert_eq!(c.status, Status::Ok, "{c:?}");

    // A cluster node's gRPC port counts too; the profile reserves it.
    let mut node = config.clone();
    node.cluster.enabled = true;
    let c = finding(&host(&wide), &node, key);
    assert!(c.why.contains("cluster.grpc_listen 7100"), "{c:?}");
    assert_eq!(finding(&host(&tuned), &node, key).status, Status::Ok);

    // Only 7001 left out of the reserved list.
    let partly = [
        ("net.ipv4.ip_local_port_range", "1024 65535"),
        (key, "7000,7443-7444,8080"),
    ];
    let c = finding(&host(&partly), &config, key);
    assert_eq!(c.status, Status::Warn);
    assert!(c.why.contains("7001") && !c.why.contains("7000"), "{c:?}");

    // The kernel's default range (32768-60999) holds none of the default ports.
    assert_eq!(finding(&host(&[]), &config, key).status, Status::Ok);
}

/// With connection tracking loaded, a table smaller than the connections the server may hold
/// (two entries each over a reconnect) drops new SYNs silently: a warning. Not loaded: nothing
/// to size.
#[test]
fn conntrack_is_sized_against_the_connections_when_loaded() {
    let key = "net.netfilter.nf_conntrack_max";
    let mut config = Config::default();
    config.gateway.conns_per_shard_max = 200_000;
    let absent = finding(&host(&[]), &config, key);
    assert_eq!(absent.status, Status::Ok);
    assert!(absent.value.contains("not loaded"), "{absent:?}");

    let small = finding(
        &host(&[
            (key, "262144"),
            ("net.netfilter.nf_conntrack_count", "1500"),
        ]),
        &config,
        key,
    );
    assert_eq!(small.status, Status::Warn, "{small:?}");
    assert_eq!(small.value, "262144 (1500 in use)");
    assert!(small.recommended.contains("≥ 400000"), "{small:?}");
    assert!(small.why.contains("table full"), "{small:?}");

    let big = finding(&host(&[(key, "400000")]), &config, key);
    assert_eq!(big.status, Status::Ok, "{big:?}");
}

/// tcp_max_syn_backlog bounds half-open connections only with syncookies off; with them on,
/// the listener's backlog does and cookies answer past it.
#[test]
fn the_syn_backlog_counts_only_with_syncookies_off() {
    let config = Config::default();
    let key = "net.ipv4.tcp_max_syn_backlog";
    let on = finding(&host(&[]), &config, key);
    assert_eq!(on.status, Status::Ok, "{on:?}");
    assert!(on.why.contains("Not a limit"), "{on:?}");

    let off = host(&[("net.ipv4.tcp_syncookies", "0")]);
    assert_eq!(finding(&off, &config, key).status, Status::Warn);
    assert_eq!(
        finding(&off, &config, "net.ipv4.tcp_syncookies").status,
        Status::Warn
    );
    let off_but_deep = host(&[
        ("net.ipv4.tcp_syncookies", "0"),
        ("net.ipv4.tcp_max_syn_backlog", "8192"),
    ]);
    assert_eq!(finding(&off_but_deep, &config, key).status, Status::Ok);
}

/// fs.file-max and fs.nr_open are findings only when too low: systemd raises both at boot, and
/// the profile no longer sets (lowers) them.
#[test]
fn file_tables_warn_only_when_too_low_and_the_profile_leaves_them_alone() {
    let config = Config::default();
    let high = host(&[
        ("fs.file-max", "9223372036854775807"),
        ("fs.nr_open", "1073741816"),
    ]);
    assert_eq!(finding(&high, &config, "fs.nr_open").status, Status::Ok);
    assert_eq!(finding(&high, &config, "fs.file-max").status, Status::Ok);
    let low = host(&[("fs.nr_open", "65536")]);
    assert_eq!(finding(&low, &config, "fs.nr_open").status, Status::Warn);

    let profile = include_str!("../../../tuning/99-ringchat.conf");
    for key in ["fs.file-max", "fs.nr_open"] {
        assert!(
            !profile
                .lines()
                .any(|l| l.trim_start_matches('-').starts_with(key)),
            "tuning/99-ringchat.conf sets {key}: it lowers what systemd raised"
        );
    }
}

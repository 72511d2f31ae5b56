//! `[storage.scylla]`: defaults, validation (`ringchat check-config`), and the password.

use std::net::ToSocketAddrs;

use crate::config::ScyllaConfig;

/// Longest keyspace name ScyllaDB takes.
const KEYSPACE_BYTES_MAX: usize = 48;

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            keyspace: "ringchat".into(),
            local_datacenter: String::new(),
            username: String::new(),
            password_file: None,
            password: String::new(),
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            connections_per_shard: 1,
            create_replication_factor: 3,
            tls: false,
            copy_requests_max: 64,
        }
    }
}

/// Most requests an import keeps in flight (each is a batch of up to 256 rows).
pub(crate) const COPY_REQUESTS_MAX: usize = 1024;

/// An unquoted CQL identifier: what a keyspace name must be here (no quoting games).
pub(super) fn is_keyspace_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= KEYSPACE_BYTES_MAX
}

impl ScyllaConfig {
    /// Every problem of the section, as `key: problem` lines (checked only when
    /// `storage.engine = "scylla"`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                out.push(msg);
            }
        };
        check(
            !self.hosts.is_empty(),
            "storage.scylla.hosts: name at least one node, as \"host:port\"".into(),
        );
        for host in &self.hosts {
            check(
                host.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)),
                format!("storage.scylla.hosts: {host:?} is not \"host:port\""),
            );
        }
        check(
            is_keyspace_name(&self.keyspace),
            format!(
                "storage.scylla.keyspace: {:?} must be a letter then letters, digits or _, at most {KEYSPACE_BYTES_MAX}",
                self.keyspace
            ),
        );
        check(
            !self.local_datacenter.trim().is_empty(),
            "storage.scylla.local_datacenter: name this node's data centre (LOCAL_QUORUM is counted there)".into(),
        );
        check(
            (1..=600_000).contains(&self.request_timeout_ms),
            "storage.scylla.request_timeout_ms: must be between 1 and 600000".into(),
        );
        check(
            (1..=600_000).contains(&self.connect_timeout_ms),
            "storage.scylla.connect_timeout_ms: must be between 1 and 600000".into(),
        );
        check(
            (1..=64).contains(&self.connections_per_shard),
            "storage.scylla.connections_per_shard: must be between 1 and 64".into(),
        );
        check(
            (1..=9).contains(&self.create_replication_factor),
            "storage.scylla.create_replication_factor: must be between 1 and 9".into(),
        );
        check(
            (1..=COPY_REQUESTS_MAX).contains(&self.copy_requests_max),
            format!("storage.scylla.copy_requests_max: must be between 1 and {COPY_REQUESTS_MAX}"),
        );
        check(
            !self.tls,
            "storage.scylla.tls: this server is built without TLS to ScyllaDB (README: ScyllaDB as the store)".into(),
        );
        if let Some(path) = &self.password_file {
            check(
                self.username.is_empty() || path.is_file(),
                format!(
                    "storage.scylla.password_file: {} is not a readable file",
                    path.display()
                ),
            );
        }
        check(
            self.username.is_empty() || self.password_file.is_some() || !self.password.is_empty(),
            "storage.scylla.username: set, but no password (password_file or RINGCHAT_STORAGE__SCYLLA__PASSWORD)".into(),
        );
        out
    }

    /// The password: the first line of `password_file`, else the one from the environment.
    pub(super) fn read_password(&self) -> std::io::Result<String> {
        match &self.password_file {
            Some(path) => Ok(std::fs::read_to_string(path)?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()),
            None => Ok(self.password.clone()),
        }
    }

    /// Whether every host resolves (at open: a clear error before the driver's own).
    pub(super) fn unresolved_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.to_socket_addrs().map_or(true, |mut a| a.next().is_none()))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ScyllaConfig {
        ScyllaConfig {
            hosts: vec!["10.0.0.1:9042".into(), "scylla-2.internal:9042".into()],
            local_datacenter: "dc1".into(),
            ..ScyllaConfig::default()
        }
    }

    #[test]
    fn a_complete_section_has_no_problems() {
        assert_eq!(valid().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_bad_key_is_named() {
        let bad = ScyllaConfig {
            hosts: vec!["nohost".into(), ":9042".into(), "h:0".into()],
            keyspace: "1bad-name".into(),
            local_datacenter: " ".into(),
            request_timeout_ms: 0,
            connect_timeout_ms: 700_000,
            connections_per_shard: 0,
            create_replication_factor: 0,
            tls: true,
            username: "ringchat".into(),
            ..ScyllaConfig::default()
        };
        let problems = bad.problems().join("\n");
        for key in [
            "\"nohost\"",
            "\":9042\"",
            "\"h:0\"",
            "keyspace",
            "local_datacenter",
            "request_timeout_ms",
            "connect_timeout_ms",
            "connections_per_shard",
            "create_replication_factor",
            "tls",
            "no password",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let empty = ScyllaConfig::default().problems().join("\n");
        assert!(empty.contains("at least one node"), "{empty}");
    }

    #[test]
    fn keyspace_names_are_plain_identifiers() {
        assert!(is_keyspace_name("ringchat"));
        assert!(is_keyspace_name("rc_test_01"));
        for bad in ["", "_x", "a-b", "a b", "ks;drop", &"k".repeat(49)] {
            assert!(!is_keyspace_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_password_comes_from_its_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        let cfg = ScyllaConfig {
            password_file: Some(path),
            password: "from-env".into(),
            ..valid()
        };
        assert_eq!(cfg.read_password().unwrap(), "s3cret");
        let env_only = ScyllaConfig {
            password: "from-env".into(),
            ..valid()
        };
        assert_eq!(env_only.read_password().unwrap(), "from-env");
    }
}

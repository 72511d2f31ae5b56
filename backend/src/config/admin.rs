//! `[admin]`: the private admin listener's settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[admin]`: the private HTTP listener: metrics, health, the admin API and the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Empty string switches the admin listener off.
    pub listen: String,
    /// Lifetime of a dashboard session from its login, in seconds.
    pub session_ttl_s: u64,
    /// Dashboard sessions held at once; past it the oldest session of the operator holding
    /// the most is ended.
    pub sessions_max: usize,
    /// Dashboard sessions one operator holds at once; past it a new login ends that
    /// operator's own oldest session.
    pub sessions_per_operator_max: usize,
    /// Largest request body the admin API reads, in bytes.
    pub body_bytes_max: usize,
    /// Most items one page of any admin list holds.
    pub page_items_max: usize,
    /// Audit entries older than this many days are pruned (0: kept forever).
    pub audit_retention_days: u64,
    /// A request's head must arrive whole within this, in milliseconds, counted from the
    /// connection's start (after its TLS handshake) or from the end of the previous answer:
    /// it is also how long an idle kept-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive whole within this, in milliseconds, from the end of its
    /// head; a slower one is answered 408 and its connection closed.
    pub body_read_timeout_ms: u64,
    /// An answer being sent must make progress within this, in milliseconds: a write (or
    /// flush) that the client lets wait this long, reading nothing, closes the connection. A
    /// log export or live tail whose client stopped reading so gives back its slot.
    pub write_stall_timeout_ms: u64,
    /// Connections open at once (TLS handshakes included); past it a new one is closed at
    /// once. The listener shares the process's file descriptors with the chat listeners.
    pub conns_max: usize,
    pub tls: AdminTlsConfig,
}

/// `[admin.tls]`: PEM files, as `[gateway.tls]`. Both empty: the admin listener speaks plain
/// HTTP (keep it on loopback then).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTlsConfig {
    /// Certificate chain, leaf first.
    pub cert_path: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
}

impl AdminTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() || !self.key_path.is_empty()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            session_ttl_s: 8 * 3600,
            sessions_max: 1_024,
            sessions_per_operator_max: 16,
            body_bytes_max: 64 * 1024,
            page_items_max: 200,
            audit_retention_days: 90,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            write_stall_timeout_ms: 30_000,
            conns_max: 256,
            tls: AdminTlsConfig::default(),
        }
    }
}

impl AdminConfig {
    pub fn listen_addr(&self) -> Option<Result<SocketAddr, std::net::AddrParseError>> {
        (!self.listen.is_empty()).then(|| self.listen.parse())
    }

    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Err(e)) = self.listen_addr() {
            out.push(format!(
                "admin.listen: {e}: expected IP:PORT such as 127.0.0.1:8080 (a host name is not accepted: give the address to bind), or \"\" to switch it off"
            ));
        }
        if !(1..=30 * 24 * 3600).contains(&self.session_ttl_s) {
            out.push("admin.session_ttl_s: must be between 1 and 2592000 (30 days)".into());
        }
        if !(1..=1_000_000).contains(&self.sessions_max) {
            out.push("admin.sessions_max: must be between 1 and 1000000".into());
        }
        if !(1..=1_000_000).contains(&self.sessions_per_operator_max) {
            out.push("admin.sessions_per_operator_max: must be between 1 and 1000000".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_bytes_max) {
            out.push("admin.body_bytes_max: must be between 1024 and 16777216".into());
        }
        if !(1..=crate::admin::page::LIMIT_MAX as usize).contains(&self.page_items_max) {
            out.push("admin.page_items_max: must be between 1 and 10000".into());
        }
        if self.audit_retention_days > 36_500 {
            out.push(
                "admin.audit_retention_days: must be at most 36500 (0 keeps entries forever)"
                    .into(),
            );
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            out.push(
                "admin.header_read_timeout_ms: must be between 100 and 600000 (10 minutes)".into(),
            );
        }
        if !(100..=3_600_000).contains(&self.body_read_timeout_ms) {
            out.push(
                "admin.body_read_timeout_ms: must be between 100 and 3600000 (an hour)".into(),
            );
        }
        if !(100..=600_000).contains(&self.write_stall_timeout_ms) {
            out.push(
                "admin.write_stall_timeout_ms: must be between 100 and 600000 (10 minutes)".into(),
            );
        }
        if !(1..=100_000).contains(&self.conns_max) {
            out.push("admin.conns_max: must be between 1 and 100000".into());
        }
        if self.tls.enabled() && (self.tls.cert_path.is_empty() || self.tls.key_path.is_empty()) {
            out.push("admin.tls: set both cert_path and key_path (or neither)".into());
        }
        out
    }
}

impl AdminConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_and_session_limits_are_checked() {
        assert!(AdminConfig::default().problems().is_empty());
        let bad = AdminConfig {
            header_read_timeout_ms: 0,
            body_read_timeout_ms: 50,
            write_stall_timeout_ms: 99,
            conns_max: 0,
            sessions_per_operator_max: 0,
            ..AdminConfig::default()
        };
        let problems = bad.problems().join("\n");
        for key in [
            "admin.header_read_timeout_ms",
            "admin.body_read_timeout_ms",
            "admin.write_stall_timeout_ms",
            "admin.conns_max",
            "admin.sessions_per_operator_max",
        ] {
            assert!(problems.contains(key), "{key}: {problems}");
        }
    }
}

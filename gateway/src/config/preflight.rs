//! What `serve` would refuse at start that no single value shows: two listeners on one port
//! (part of `Config::problems_on`), and TLS files that do not load (`Config::file_problems`,
//! run by `check-config` and by `serve` before its store opens). Without these, check-config
//! said "ok" to files serve refused, and a port clash surfaced only after the store opened,
//! as "in use by pid <its own pid>".

use std::net::SocketAddr;

use super::Config;

impl Config {
    /// Every listener that is on, by its key, with the address it binds (unparsable ones are
    /// left to their own problems).
    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = Vec::new();
        if let Ok(a) = self.gateway.listen_addrs() {
            for (key, addr) in [
                ("gateway.tcp_listen", a.tcp),
                ("gateway.ws_listen", a.ws),
                ("gateway.tls_listen", a.tls),
                ("gateway.wss_listen", a.wss),
            ] {
                out.extend(addr.map(|a| (key, a)));
            }
        }
        let mut parsed = |key: &'static str, value: &str| {
            if let Ok(a) = value.parse::<SocketAddr>() {
                out.push((key, a));
            }
        };
        parsed("admin.listen", &self.admin.listen);
        if self.cluster.enabled {
            parsed("cluster.grpc_listen", &self.cluster.grpc_listen);
        }
        out
    }

    /// Two listeners that would bind the same port on overlapping addresses.
    pub(super) fn listener_clashes(&self) -> Vec<String> {
        let listeners = self.listeners();
        let mut out = Vec::new();
        for (i, (key, addr)) in listeners.iter().enumerate() {
            for (other, other_addr) in &listeners[..i] {
                if clash(*addr, *other_addr) {
                    out.push(format!(
                        "{key} = \"{addr}\": the same port as {other} = \"{other_addr}\"; each listener needs its own port"
                    ));
                }
            }
        }
        out
    }

    /// The TLS files of `[gateway.tls]`, `[admin.tls]` and `[cluster.tls]` that are set:
    /// each must load, and each key match its certificate.
    pub fn file_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut pair = |section: &str, on: bool, cert: &str, key: &str| {
            if on
                && !cert.is_empty()
                && !key.is_empty()
                && let Err(e) = crate::tls::server_config(cert, key)
            {
                out.push(format!("{section}: {e}"));
            }
        };
        let g = &self.gateway.tls;
        pair("gateway.tls", g.enabled(), &g.cert_path, &g.key_path);
        let a = &self.admin.tls;
        pair("admin.tls", a.enabled(), &a.cert_path, &a.key_path);
        if self.cluster.enabled
            && let Err(e) = ringchat_backend::cluster::tls::NodeTls::load(&self.cluster.tls)
        {
            out.push(format!("cluster.tls: {e}"));
        }
        out
    }
}

/// Port 0 is any free port, never a clash; an unspecified address (0.0.0.0, [::], which on
/// Linux takes IPv4 too) overlaps every address.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::clash;

    #[test]
    fn one_port_clashes_on_overlapping_addresses_only() {
        let a = |s: &str| s.parse().unwrap();
        assert!(clash(a("0.0.0.0:7000"), a("0.0.0.0:7000")));
        assert!(clash(a("127.0.0.1:7000"), a("0.0.0.0:7000")));
        assert!(clash(a("[::]:7000"), a("10.0.0.1:7000")));
        assert!(!clash(a("127.0.0.1:7000"), a("10.0.0.1:7000")));
        assert!(!clash(a("0.0.0.0:7000"), a("0.0.0.0:7001")));
        assert!(!clash(a("0.0.0.0:0"), a("0.0.0.0:0")));
    }
}

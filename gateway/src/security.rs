//! `[security]`: who may connect to the client listeners. An IP allow list and deny list
//! (addresses and CIDR ranges, IPv4 and IPv6) checked on the shard right after accept, against
//! the shard's own snapshot of the rules (no lock, no allocation): a refused peer is closed
//! before a byte is read and counted per reason. A `gateway.proxy_protocol_from` balancer's
//! connection is checked right after its PROXY header instead, on the client's address in it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Largest `security.rules_max`: a typo guard.
const RULES_MAX_MAX: usize = 65_536;

/// `[security]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Addresses or CIDR ranges that may connect; empty: everyone not denied.
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused at accept; a deny wins over an allow.
    pub deny: Vec<String>,
    /// Entries each list may hold, at most (each costs a comparison per accepted connection).
    pub rules_max: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            rules_max: 1_024,
        }
    }
}

impl SecurityConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=RULES_MAX_MAX).contains(&self.rules_max) {
            out.push(format!(
                "security.rules_max: must be between 1 and {RULES_MAX_MAX}"
            ));
        }
        for (key, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            if list.len() > self.rules_max {
                out.push(format!(
                    "security.{key}: {} entries, more than rules_max = {}",
                    list.len(),
                    self.rules_max
                ));
            }
            for entry in list {
                if parse_net(entry).is_none() {
                    out.push(format!(
                        "security.{key}: {entry:?} is neither an IP address nor a CIDR range (for example 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)"
                    ));
                }
            }
        }
        out
    }

    /// The rules to apply; entries that do not parse (refused by `problems`) are left out.
    pub fn rules(&self) -> IpRules {
        let nets =
            |list: &[String]| IpNet::aggregate(&list.iter().filter_map(|e| parse_net(e)).collect());
        IpRules {
            allow: nets(&self.allow),
            deny: nets(&self.deny),
        }
    }
}

/// An address (a single-host range) or a CIDR range; an IPv4-mapped IPv6 one
/// (`::ffff:a.b.c.d/n`, as a dual-stack listener reports IPv4 clients) as the IPv4 range it
/// is, since peers are checked in their canonical form.
pub(crate) fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    let net = entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))?;
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .ok()
                .map(IpNet::V4),
            None => Some(net),
        },
        _ => Some(net),
    }
}

/// Why a peer is refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address is on the deny list.
    Denied,
    /// An allow list is set and its address is not on it.
    NotAllowed,
}

/// The parsed lists, overlapping ranges merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpRules {
    /// A linear scan of at most `rules_max` ranges per list, once per accepted connection.
    pub fn check(&self, peer: IpAddr) -> Result<(), Refused> {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        if self.deny.iter().any(|n| n.contains(&peer)) {
            return Err(Refused::Denied);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&peer)) {
            return Err(Refused::NotAllowed);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow: &[&str], deny: &[&str]) -> SecurityConfig {
        SecurityConfig {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            ..SecurityConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_an_allow_list_refuses_the_rest() {
        let c = cfg(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.1.2.3", "10.9.0.0/16"],
        );
        assert!(c.problems().is_empty());
        let r = c.rules();
        assert_eq!(r.check(ip("10.0.0.1")), Ok(()));
        assert_eq!(r.check(ip("10.1.2.3")), Err(Refused::Denied));
        assert_eq!(r.check(ip("10.9.200.1")), Err(Refused::Denied));
        assert_eq!(r.check(ip("192.168.0.1")), Err(Refused::NotAllowed));
        assert_eq!(r.check(ip("2001:db8::1")), Ok(()));
        assert_eq!(r.check(ip("2001:db9::1")), Err(Refused::NotAllowed));
        assert_eq!(
            r.check(ip("::ffff:10.1.2.3")),
            Err(Refused::Denied),
            "IPv4-mapped addresses are IPv4"
        );
        // A rule copied from a dual-stack listener's log names the IPv4 client it shows.
        let mapped = cfg(&[], &["::ffff:203.0.113.7", "::ffff:198.51.100.0/120"]).rules();
        assert_eq!(mapped.check(ip("203.0.113.7")), Err(Refused::Denied));
        assert_eq!(mapped.check(ip("::ffff:203.0.113.7")), Err(Refused::Denied));
        assert_eq!(mapped.check(ip("198.51.100.200")), Err(Refused::Denied));
        assert_eq!(mapped.check(ip("198.51.101.1")), Ok(()));
        let open = cfg(&[], &["::1"]).rules();
        assert_eq!(open.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(open.check(ip("::1")), Err(Refused::Denied));
    }

    #[test]
    fn bad_entries_and_too_many_are_problems() {
        let p = cfg(&["10.0.0/8", "localhost"], &["1.2.3.4/33"]).problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("\"10.0.0/8\""), "{p:?}");
        let mut many = cfg(&["127.0.0.1"; 3], &[]);
        many.rules_max = 2;
        assert!(many.problems()[0].contains("more than rules_max"));
    }
}

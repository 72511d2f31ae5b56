//! What routes look like in Redis, in one place.
//!
//! - Key `{prefix}:route:{user}`: a hash, one field per online device of the user on any node,
//!   `{node_id}/{started_at_ms}/{shard}/{conn}` → `{platform}/{device_id}`. The node's start
//!   time tells a restarted node's fields from its previous life's.
//! - Channel `{prefix}:routes`: `{node_id} {started_at_ms}` then `+{user}` (the user has a
//!   device on that node now) or `-{user}` (no more), space separated, one message per flush.

use crate::api::ConnRef;
use crate::store::UserId;

/// A node in one of its lives: what a route names and the live-node view is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeLife {
    pub node_id: std::sync::Arc<str>,
    pub started_at_ms: u64,
}

pub fn route_key(prefix: &str, user: UserId) -> String {
    format!("{prefix}:route:{user}")
}

pub fn channel(prefix: &str) -> String {
    format!("{prefix}:routes")
}

pub fn field(node_id: &str, started_at_ms: u64, conn: ConnRef) -> String {
    format!("{node_id}/{started_at_ms}/{}/{}", conn.shard, conn.conn)
}

pub fn value(platform: &str, device_id: &str) -> String {
    format!("{platform}/{device_id}")
}

/// The node (and its life) a field names; `None` for a field that is not a route.
pub fn parse_field(field: &[u8]) -> Option<(&str, u64)> {
    let field = std::str::from_utf8(field).ok()?;
    let mut parts = field.split('/');
    let node = parts.next().filter(|n| !n.is_empty())?;
    let started = parts.next()?.parse().ok()?;
    let _shard: u16 = parts.next()?.parse().ok()?;
    let _conn: u64 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((node, started))
}

/// The device id a field's value names (`{platform}/{device_id}`; a platform has no `/`, a
/// device id may); `None` for a value that is not a route's.
pub fn parse_value(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    value.split_once('/').map(|(_, device)| device)
}

/// One published change: whether `user` has a device on the publishing node now.
pub type Change = (UserId, bool);

pub fn message(node_id: &str, started_at_ms: u64, changes: &[Change]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{node_id} {started_at_ms}");
    for (user, here) in changes {
        let _ = write!(out, " {}{user}", if *here { '+' } else { '-' });
    }
    out
}

/// The publisher and its changes; `None` for a message that is not ours.
pub fn parse_message(payload: &[u8]) -> Option<(&str, u64, Vec<Change>)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let node = words.next().filter(|n| !n.is_empty())?;
    let started = words.next()?.parse().ok()?;
    let mut changes = Vec::new();
    for w in words {
        let (here, user) = match w.split_at_checked(1)? {
            ("+", user) => (true, user),
            ("-", user) => (false, user),
            _ => return None,
        };
        changes.push((user.parse().ok()?, here));
    }
    Some((node, started, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_messages_round_trip() {
        let f = field("n-1.a", 17, ConnRef { shard: 3, conn: 99 });
        assert_eq!(f, "n-1.a/17/3/99");
        assert_eq!(parse_field(f.as_bytes()), Some(("n-1.a", 17)));
        for bad in ["", "n/17/3", "n/x/3/9", "/1/2/3", "n/1/2/3/4"] {
            assert_eq!(parse_field(bad.as_bytes()), None, "{bad}");
        }
        let v = value("ios", "my/phone");
        assert_eq!(parse_value(v.as_bytes()), Some("my/phone"));
        assert_eq!(parse_value(value("web", "").as_bytes()), Some(""));
        assert_eq!(parse_value(b"no-slash"), None);
        let m = message("n2", 5, &[(7, true), (8, false)]);
        assert_eq!(m, "n2 5 +7 -8");
        assert_eq!(
            parse_message(m.as_bytes()),
            Some(("n2", 5, vec![(7, true), (8, false)]))
        );
        assert_eq!(parse_message(b"n2 5"), Some(("n2", 5, vec![])));
        for bad in ["", "n2", "n2 x", "n2 5 7", "n2 5 +x", "n2 5 *7"] {
            assert_eq!(parse_message(bad.as_bytes()), None, "{bad}");
        }
    }
}

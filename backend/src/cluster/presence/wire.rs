//! What presence looks like in Redis, in one place.
//!
//! - Key `{prefix}:presence:{user}`: a hash, one field per node (life) where the user has a
//!   device shown present, `{node_id}/{started_at_ms}` → the most present state of the user's
//!   devices on that node, one digit (`State::to_digit`). The node refreshes the key's TTL
//!   (`cluster.routes.ttl_ms`) with its routes; the live-node view hides a dead node's field at
//!   once, and the key expires once no live node holds a device of the user.
//! - Key `{prefix}:seen:{user}`: when the user was last seen present (ms since the epoch), only
//!   ever moved forward when a part goes offline (`SET_PART`); set to now by each periodic
//!   rewrite of a present user (a plain SET: while present, last seen is not shown, and a
//!   node's clock is within `NODE_CLOCKS_APART_MAX_MS` of the others'), kept
//!   `LAST_SEEN_TTL_MS`.
//! - Channel `{prefix}:presence`: `{user} {seen_ms}` then every `{field}={digit}` of the hash
//!   after a change, space separated, published by the same script that made the change: every
//!   node gets each user's changes in the order Redis applied them, each with the whole state.

use smallvec::SmallVec;

use crate::cluster::routes::NodeLife;
use crate::presence::State;
use crate::store::UserId;

/// How long a user's last-seen time is kept after they were last present, in milliseconds.
pub const LAST_SEEN_TTL_MS: u64 = 90 * 24 * 3_600_000;

/// Sets (or, with an empty state, removes) one node's part of a user's presence, moves last seen
/// forward, and publishes the user's whole state, atomically.
/// KEYS: presence hash, seen key. ARGV: field, digit or "", ttl_ms, seen_ms or "0",
/// seen_ttl_ms, channel, user.
pub const SET_PART: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local seen = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local s = tonumber(ARGV[4]) or 0
if s > seen then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  seen = s
end
local all = redis.call('HGETALL', KEYS[1])
local parts = {ARGV[7], string.format('%d', seen)}
for i = 1, #all, 2 do
  parts[#parts + 1] = all[i] .. '=' .. all[i + 1]
end
redis.call('PUBLISH', ARGV[6], table.concat(parts, ' '))
return 1
";

pub fn presence_key(prefix: &str, user: UserId) -> String {
    format!("{prefix}:presence:{user}")
}

pub fn seen_key(prefix: &str, user: UserId) -> String {
    format!("{prefix}:seen:{user}")
}

pub fn channel(prefix: &str) -> String {
    format!("{prefix}:presence")
}

pub fn field(node_id: &str, started_at_ms: u64) -> String {
    format!("{node_id}/{started_at_ms}")
}

/// Other nodes' parts of one user's presence.
pub type Parts = SmallVec<[(NodeLife, State); 2]>;

/// One field and its value; `None` for anything else.
pub fn parse_part(field: &[u8], value: &[u8]) -> Option<(NodeLife, State)> {
    let field = std::str::from_utf8(field).ok()?;
    let (node, started) = field.split_once('/')?;
    if node.is_empty() || node.contains(' ') {
        return None;
    }
    let state = match value {
        [digit] => State::from_digit(*digit)?,
        _ => return None,
    };
    Some((
        NodeLife {
            node_id: node.into(),
            started_at_ms: started.parse().ok()?,
        },
        state,
    ))
}

/// A published change: the user, last seen, and every node's part.
pub fn parse_message(payload: &[u8]) -> Option<(UserId, u64, Parts)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let user = words.next()?.parse().ok()?;
    let seen = words.next()?.parse().ok()?;
    let mut parts = Parts::new();
    for w in words {
        let (field, value) = w.split_once('=')?;
        parts.push(parse_part(field.as_bytes(), value.as_bytes())?);
    }
    Some((user, seen, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_messages_parse() {
        let f = field("n-1", 17);
        assert_eq!(f, "n-1/17");
        let (life, state) = parse_part(f.as_bytes(), b"3").expect("a part");
        assert_eq!(
            (&*life.node_id, life.started_at_ms, state),
            ("n-1", 17, State::Online)
        );
        for (f, v) in [
            ("n/17", "9"),
            ("n/x", "1"),
            ("/1", "1"),
            ("n/1", "12"),
            ("n", "1"),
        ] {
            assert!(parse_part(f.as_bytes(), v.as_bytes()).is_none(), "{f}={v}");
        }
        let (user, seen, parts) = parse_message(b"7 1234 a/1=1 b/2=3").expect("parses");
        assert_eq!((user, seen, parts.len()), (7, 1234, 2));
        assert_eq!(parts[1].1, State::Online);
        assert_eq!(parse_message(b"7 0").map(|m| m.2.len()), Some(0));
        for bad in ["", "7", "x 1", "7 1 a/1", "7 1 a/1=7"] {
            assert!(parse_message(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}

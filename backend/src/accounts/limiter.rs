//! "At most N per window per key", for requests a stranger can make (e-mail codes per address
//! and per client address, registrations per client address). Fixed windows per key; the table is bounded, and when it is full of
//! live keys a new key is refused (failing closed) rather than letting the table grow.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Window {
    started_ms: u64,
    count: u32,
}

pub(crate) struct WindowLimiter<K> {
    max: u32,
    window_ms: u64,
    entries_max: usize,
    entries: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq> WindowLimiter<K> {
    pub fn new(max: u32, window_ms: u64, entries_max: usize) -> Self {
        assert!(max >= 1 && window_ms >= 1 && entries_max >= 1);
        Self {
            max,
            window_ms,
            entries_max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one use of `key` at `now_ms`, or says how long to wait (in ms) when the key's
    /// window is used up (or the table is full of live keys).
    pub fn take(&self, key: K, now_ms: u64) -> Result<(), u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let window_ms = self.window_ms;
        if entries.len() >= self.entries_max && !entries.contains_key(&key) {
            entries.retain(|_, w| now_ms.saturating_sub(w.started_ms) < window_ms);
            if entries.len() >= self.entries_max {
                let oldest = entries
                    .values()
                    .map(|w| w.started_ms)
                    .min()
                    .unwrap_or(now_ms);
                return Err((oldest + window_ms).saturating_sub(now_ms).max(1));
            }
        }
        let w = entries.entry(key).or_insert(Window {
            started_ms: now_ms,
            count: 0,
        });
        if now_ms.saturating_sub(w.started_ms) >= window_ms {
            *w = Window {
                started_ms: now_ms,
                count: 0,
            };
        }
        if w.count >= self.max {
            return Err((w.started_ms + window_ms).saturating_sub(now_ms).max(1));
        }
        w.count += 1;
        Ok(())
    }
}

/// The key a client address is counted under: an IPv4 address as it is, an IPv6 address by its
/// /64 (one subscriber's usual share: counted apart, each of its addresses would be a fresh
/// budget), an IPv4-mapped IPv6 address as the IPv4 one. The one rule for every per-client
/// count (the gateway's connection limits use it too, as `ringchat_backend::client_key`).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), v4);
    }

    #[test]
    fn counts_per_key_within_a_window_then_starts_over() {
        let l = WindowLimiter::new(2, 1000, 10);
        assert_eq!(l.take("a", 0), Ok(()));
        assert_eq!(l.take("a", 10), Ok(()));
        assert_eq!(l.take("a", 400), Err(600));
        assert_eq!(l.take("b", 400), Ok(()), "keys are counted apart");
        assert_eq!(l.take("a", 1000), Ok(()), "a new window");
    }

    #[test]
    fn a_full_table_of_live_keys_refuses_new_keys_and_forgets_dead_ones() {
        let l = WindowLimiter::new(5, 1000, 2);
        assert!(l.take(1, 0).is_ok());
        assert!(l.take(2, 500).is_ok());
        assert_eq!(l.take(3, 600), Err(400), "full: wait until the oldest ends");
        assert!(l.take(1, 700).is_ok(), "known keys still count");
        assert!(l.take(3, 1000).is_ok(), "key 1's window ended: room again");
    }
}

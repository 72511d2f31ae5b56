//! Which token logins reach the audit log. A token login costs one SHA-256 and one lookup, no
//! argon2, and nothing paces one device's: a client looping connect, `Login{token}`, close
//! would add a row per loop (about a thousand a second, each batch an fsync) and bury the
//! events worth reading. So a device's token logins from one client address (its
//! `share_key`: an IPv4 address, an IPv6 /48), and its token logins refused because the
//! account is disabled, are audited at most once per [`TOKEN_LOGIN_AUDIT_INTERVAL_MS`] each;
//! the rest are counted (`ringchat_token_logins_total`, `…_unaudited_total`), and the next
//! row of the device from that address says how many it stands for. The address is in the
//! key because a token used from somewhere new is the row an operator looks for (a stolen
//! token): it is audited at once, whatever the device did a minute before. A password login
//! (argon2 paid) is always audited, and starts the interval of its device and address.
//! Failures stay audited as before (`logins.rs`).
//!
//! Per backend (each cluster node keeps its own table), in memory: a restart audits each
//! device's next token login again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::store::UserId;

/// A device's token logins are audited at most once per this many milliseconds (and its
/// refused ones, the account being disabled, as often apart).
const TOKEN_LOGIN_AUDIT_INTERVAL_MS: u64 = 600_000;
/// Devices (user, device id and client address, per outcome) remembered at once, at most:
/// about 200 bytes each. Past it, expired ones are dropped; while it stays full, a device not in the table has
/// its token logins counted, not audited.
const TOKEN_LOGIN_AUDIT_DEVICES_MAX: usize = 65_536;
/// A full table is swept for expired entries at most once per this many milliseconds, so a
/// full one costs no scan per login.
const TOKEN_LOGIN_AUDIT_SWEEP_MS: u64 = 10_000;

/// What a login did, each with its own interval: a refusal is not hidden by a login before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Outcome {
    LoggedIn,
    Disabled,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::LoggedIn => "ok",
            Self::Disabled => "disabled",
        }
    }
}

/// Client addresses one device (per outcome) has entries of its own for, at most: past them,
/// its token logins from further addresses share one entry ([`OTHER_ADDRESSES`]), audited
/// once per interval together. Without it one token looped from a proxy pool's addresses
/// filled the table, and no other device's login from a new address was audited.
const TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE: usize = 8;
/// The address of a device's shared entry past [`TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE`].
const OTHER_ADDRESSES: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The client's `share_key` (an IPv4 address, an IPv6 /48), not the raw address: one host
/// walking its /64 must not make a row per address.
type Key = (UserId, Box<str>, IpAddr, Outcome);
/// A device per outcome: what [`TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE`] counts per.
type Device = (UserId, Box<str>, Outcome);

fn device_of(key: &Key) -> Device {
    (key.0, key.1.clone(), key.3)
}

struct Last {
    audited_ms: u64,
    /// Token logins not audited since the last row that told of them.
    unaudited: u64,
}

#[derive(Default)]
struct Table {
    last: HashMap<Key, Last>,
    /// Entries of each device with an address of their own (not [`OTHER_ADDRESSES`]).
    addresses: HashMap<Device, usize>,
    swept_ms: u64,
}

#[derive(Default)]
pub(super) struct LoginAudit {
    table: Mutex<Table>,
}

impl LoginAudit {
    /// A password login's row was queued: the device's token logins from `client` (a
    /// `share_key`) wait for the interval.
    pub(super) fn by_password(
        &self,
        user_id: UserId,
        device_id: &str,
        client: IpAddr,
        at: Outcome,
        now_ms: u64,
    ) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user_id, Box::from(device_id), client, at);
        if let Some(last) = table.room_for(&key, now_ms) {
            last.audited_ms = now_ms;
        }
    }

    /// A token login from `client` (a `share_key`; `at`: what it did). `Some(n)`: audit it,
    /// standing for `n` earlier token logins of the device from there that were not; `None`:
    /// counted only.
    pub(super) fn by_token(
        &self,
        user_id: UserId,
        device_id: &str,
        client: IpAddr,
        at: Outcome,
        now_ms: u64,
    ) -> Option<u64> {
        metrics::counter!("ringchat_token_logins_total", "outcome" => at.label()).increment(1);
        let admitted = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            let key = (user_id, Box::from(device_id), client, at);
            match table.room_for(&key, now_ms) {
                None => None,
                Some(last)
                    if now_ms.saturating_sub(last.audited_ms) < TOKEN_LOGIN_AUDIT_INTERVAL_MS =>
                {
                    last.unaudited += 1;
                    None
                }
                Some(last) => {
                    last.audited_ms = now_ms;
                    Some(std::mem::take(&mut last.unaudited))
                }
            }
        };
        if admitted.is_none() {
            metrics::counter!("ringchat_token_logins_unaudited_total", "outcome" => at.label())
                .increment(1);
        }
        admitted
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().last.len()
    }
}

impl Table {
    /// The entry of the device at the key's address (or its shared one, past its addresses),
    /// made if there is room (a new one counts as audited long ago); `None` while the table
    /// is full of unexpired ones.
    fn room_for(&mut self, key: &Key, now_ms: u64) -> Option<&mut Last> {
        let mut key = key.clone();
        if !self.last.contains_key(&key) {
            let device = device_of(&key);
            if self.addresses.get(&device).copied().unwrap_or(0)
                >= TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE
            {
                key.2 = OTHER_ADDRESSES;
            }
        }
        if !self.last.contains_key(&key) {
            if self.last.len() >= TOKEN_LOGIN_AUDIT_DEVICES_MAX {
                if now_ms.saturating_sub(self.swept_ms) < TOKEN_LOGIN_AUDIT_SWEEP_MS {
                    return None;
                }
                self.sweep(now_ms);
                if self.last.len() >= TOKEN_LOGIN_AUDIT_DEVICES_MAX {
                    tracing::warn!(
                        devices = self.last.len(),
                        "token-login audit table full of devices audited in the last 10 \
                         minutes: token logins of devices not in it are counted, not audited \
                         (ringchat_token_logins_unaudited_total)"
                    );
                    return None;
                }
            }
            if key.2 != OTHER_ADDRESSES {
                *self.addresses.entry(device_of(&key)).or_insert(0) += 1;
            }
        }
        Some(self.last.entry(key).or_insert(Last {
            audited_ms: 0,
            unaudited: 0,
        }))
    }

    /// Drops the entries whose interval is over, and counts the devices' addresses again.
    fn sweep(&mut self, now_ms: u64) {
        self.swept_ms = now_ms;
        self.last
            .retain(|_, l| now_ms.saturating_sub(l.audited_ms) < TOKEN_LOGIN_AUDIT_INTERVAL_MS);
        self.addresses.clear();
        for key in self.last.keys().filter(|k| k.2 != OTHER_ADDRESSES) {
            *self.addresses.entry(device_of(key)).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;
    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    #[test]
    fn a_devices_token_logins_are_audited_once_per_interval_and_tell_of_the_rest() {
        let a = LoginAudit::default();
        assert_eq!(a.by_token(1, "phone", HOME, Outcome::LoggedIn, T0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                a.by_token(1, "phone", HOME, Outcome::LoggedIn, T0 + i),
                None
            );
        }
        // Another device, another user, another outcome: each has its own interval.
        assert_eq!(
            a.by_token(1, "laptop", HOME, Outcome::LoggedIn, T0),
            Some(0)
        );
        assert_eq!(a.by_token(2, "phone", HOME, Outcome::LoggedIn, T0), Some(0));
        assert_eq!(
            a.by_token(1, "phone", HOME, Outcome::Disabled, T0 + 6),
            Some(0)
        );
        // The same device from another address: audited at once (a stolen token's first use
        // is the row worth having), then on its own interval.
        assert_eq!(
            a.by_token(1, "phone", ELSEWHERE, Outcome::LoggedIn, T0 + 7),
            Some(0)
        );
        assert_eq!(
            a.by_token(1, "phone", ELSEWHERE, Outcome::LoggedIn, T0 + 8),
            None
        );
        let later = T0 + TOKEN_LOGIN_AUDIT_INTERVAL_MS;
        assert_eq!(
            a.by_token(1, "phone", HOME, Outcome::LoggedIn, later),
            Some(5)
        );
        assert_eq!(
            a.by_token(1, "phone", HOME, Outcome::LoggedIn, later + 1),
            None
        );
    }

    #[test]
    fn a_password_login_starts_the_devices_interval() {
        let a = LoginAudit::default();
        a.by_password(1, "phone", HOME, Outcome::LoggedIn, T0);
        assert_eq!(
            a.by_token(1, "phone", HOME, Outcome::LoggedIn, T0 + 1),
            None
        );
        let later = T0 + TOKEN_LOGIN_AUDIT_INTERVAL_MS;
        assert_eq!(
            a.by_token(1, "phone", HOME, Outcome::LoggedIn, later),
            Some(1)
        );
    }

    /// One token looped from a proxy pool's addresses: the device's first addresses are
    /// audited apart, the rest together once per interval, and the table keeps room for
    /// everyone else's.
    #[test]
    fn one_device_from_many_addresses_takes_a_few_entries_not_the_table() {
        let a = LoginAudit::default();
        let address = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let apart = TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE as u32;
        for i in 0..apart {
            assert_eq!(
                a.by_token(1, "phone", address(i), Outcome::LoggedIn, T0),
                Some(0)
            );
        }
        // The next address: the device's shared entry, audited once...
        assert_eq!(
            a.by_token(1, "phone", address(apart), Outcome::LoggedIn, T0),
            Some(0)
        );
        // ...and the ones after it counted with it, however many.
        for i in apart + 1..apart + 1000 {
            assert_eq!(
                a.by_token(1, "phone", address(i), Outcome::LoggedIn, T0),
                None
            );
        }
        assert_eq!(a.len(), TOKEN_LOGIN_AUDIT_ADDRESSES_PER_DEVICE + 1);
        // A known address keeps its own entry; another device is audited from a new one.
        assert_eq!(
            a.by_token(1, "phone", address(0), Outcome::LoggedIn, T0 + 1),
            None
        );
        assert_eq!(
            a.by_token(2, "phone", ELSEWHERE, Outcome::LoggedIn, T0 + 1),
            Some(0)
        );
        // After the interval the shared entry tells of the logins it stood for.
        let later = T0 + TOKEN_LOGIN_AUDIT_INTERVAL_MS;
        assert_eq!(
            a.by_token(1, "phone", address(5000), Outcome::LoggedIn, later),
            Some(999)
        );
    }

    #[test]
    fn a_full_table_counts_new_devices_until_a_sweep_finds_room() {
        let a = LoginAudit::default();
        let max = TOKEN_LOGIN_AUDIT_DEVICES_MAX as u64;
        for user in 0..max {
            assert!(a.by_token(user, "d", HOME, Outcome::LoggedIn, T0).is_some());
        }
        assert_eq!(a.len(), TOKEN_LOGIN_AUDIT_DEVICES_MAX);
        // Full of unexpired devices: a new one is counted only; a known one keeps its rule.
        assert_eq!(a.by_token(max, "d", HOME, Outcome::LoggedIn, T0 + 1), None);
        assert_eq!(a.by_token(0, "d", HOME, Outcome::LoggedIn, T0 + 1), None);
        // Once they expired, the next sweep makes room.
        let later = T0 + TOKEN_LOGIN_AUDIT_INTERVAL_MS;
        assert_eq!(
            a.by_token(max, "d", HOME, Outcome::LoggedIn, later),
            Some(0)
        );
        assert_eq!(a.len(), 1);
    }
}

//! E-mail codes shared by the nodes of a cluster: on one box they live in the node's memory
//! (`accounts/codes.rs`); in a cluster a client may ask for a code on one node and use it on
//! another (a reconnect lands where the status service sends it), and the per-address limit
//! must hold for the cluster, not per node. So the pending codes and the per-address counters
//! live in Redis, each changed by one script (atomic: two nodes redeeming at once use one try
//! each, and a right code works once).
//!
//! - Key `{prefix}:code:{purpose}:{address}`: a hash: `h` the code's keyed hash, `sent` and
//!   `exp` (ms since the epoch), `tries` left. Kept twice the code's life, so that a late try
//!   is told the code expired rather than unknown.
//! - Key `{prefix}:codes-sent:{address}`: codes sent to the address in the current window
//!   (`email.code_window_s`), expiring with the window.
//!
//! `{address}` is a keyed hash of the case-folded address: Redis never holds an address or a
//! code in clear. The key is derived from `cluster.peer_secret`, which every node shares.
//! Redis keeps no more than the rate limits let in, each for at most twice a code's life.

use sha2::{Digest, Sha256};

use super::ClusterConfig;
use super::redis::{Redis, RedisError};

/// The rules a code is issued under (`[email]`).
#[derive(Debug, Clone, Copy)]
pub struct CodeRules {
    pub ttl_ms: u64,
    pub resend_interval_ms: u64,
    pub tries_max: u32,
    pub per_address_max: u32,
    pub window_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Issued {
    Stored,
    /// A code was sent to the address less than the resend interval ago.
    TooSoon {
        retry_after_ms: u64,
    },
    /// The address had its codes for this window.
    AddressFull {
        retry_after_ms: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Redeemed {
    Used,
    /// No code pending (never asked, used, voided, or long expired).
    Unknown,
    Expired,
    Wrong {
        tries_left: u32,
    },
    /// That wrong try was the last: the code is void.
    Exhausted,
}

/// Resend interval, then the per-address window, then the code is stored.
/// KEYS: code hash, address counter. ARGV: keyed hash, now_ms, ttl_ms, resend_ms, tries_max,
/// per_address_max, window_ms.
const ISSUE: &str = r"
local now = tonumber(ARGV[2])
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent') or '')
if sent and sent + tonumber(ARGV[4]) > now then
  return {1, sent + tonumber(ARGV[4]) - now}
end
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
if count >= tonumber(ARGV[6]) then
  return {2, math.max(redis.call('PTTL', KEYS[2]), 1)}
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'sent', ARGV[2], 'exp', now + tonumber(ARGV[3]),
  'tries', ARGV[5])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return {0, 0}
";

/// Checks a try and uses up the code, or a try of it.
/// KEYS: code hash. ARGV: the try's keyed hash ('' never matches), now_ms.
const REDEEM: &str = r"
local code = redis.call('HMGET', KEYS[1], 'h', 'exp', 'tries')
if not code[1] then
  return {1, 0}
end
if tonumber(code[2]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return {2, 0}
end
if ARGV[1] ~= '' and code[1] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {0, 0}
end
local left = redis.call('HINCRBY', KEYS[1], 'tries', -1)
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {3, 0}
end
return {4, left}
";

pub struct SharedCodes {
    redis: Redis,
    prefix: String,
    /// Derived from the peer secret: the same on every node, useless without it.
    key: [u8; 32],
}

impl SharedCodes {
    /// Call on the runtime (the Redis connection is made lazily).
    pub fn new(config: &ClusterConfig) -> Result<Self, RedisError> {
        let mut h = Sha256::new();
        h.update(b"ringchat e-mail codes v1\0");
        h.update(config.peer_secret.as_bytes());
        Ok(Self {
            redis: Redis::new(config)?,
            prefix: config.redis_key_prefix.clone(),
            key: h.finalize().into(),
        })
    }

    fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// The Redis name of an address: 128 bits of its keyed hash, in hex.
    fn address(&self, email_key: &str) -> String {
        let hash = self.keyed(&[b"address", email_key.as_bytes()]);
        crate::admin::auth::credentials::hex(&hash[..16])
    }

    fn code_hash(&self, purpose: i32, email_key: &str, code: &str) -> Vec<u8> {
        let purpose = purpose.to_be_bytes();
        self.keyed(&[b"code", &purpose, email_key.as_bytes(), code.as_bytes()])
            .to_vec()
    }

    fn code_key(&self, purpose: i32, address: &str) -> String {
        format!("{}:code:{purpose}:{address}", self.prefix)
    }

    /// Stores `code` for (purpose, address) within the resend interval and the address's
    /// window, replacing a pending one.
    pub async fn issue(
        &self,
        purpose: i32,
        email_key: &str,
        code: &str,
        now_ms: u64,
        rules: CodeRules,
    ) -> Result<Issued, RedisError> {
        let address = self.address(email_key);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(ISSUE)
            .arg(2)
            .arg(self.code_key(purpose, &address))
            .arg(format!("{}:codes-sent:{address}", self.prefix))
            .arg(self.code_hash(purpose, email_key, code))
            .arg(now_ms)
            .arg(rules.ttl_ms.max(1))
            .arg(rules.resend_interval_ms)
            .arg(rules.tries_max.max(1))
            .arg(rules.per_address_max)
            .arg(rules.window_ms.max(1));
        let ((outcome, wait),): ((u8, u64),) = self.redis.query(&pipe).await?;
        Ok(match outcome {
            0 => Issued::Stored,
            1 => Issued::TooSoon {
                retry_after_ms: wait,
            },
            _ => Issued::AddressFull {
                retry_after_ms: wait,
            },
        })
    }

    /// Checks `code` (one that is not `digits` long never matches) and uses up the code when
    /// right, or one try when wrong.
    pub async fn redeem(
        &self,
        purpose: i32,
        email_key: &str,
        code: &str,
        digits: usize,
        now_ms: u64,
    ) -> Result<Redeemed, RedisError> {
        let address = self.address(email_key);
        let tried = match code.len() == digits {
            true => self.code_hash(purpose, email_key, code),
            false => Vec::new(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(REDEEM)
            .arg(1)
            .arg(self.code_key(purpose, &address))
            .arg(tried)
            .arg(now_ms);
        let ((outcome, left),): ((u8, u32),) = self.redis.query(&pipe).await?;
        Ok(match outcome {
            0 => Redeemed::Used,
            1 => Redeemed::Unknown,
            2 => Redeemed::Expired,
            3 => Redeemed::Exhausted,
            _ => Redeemed::Wrong { tries_left: left },
        })
    }
}

#[cfg(test)]
mod tests;

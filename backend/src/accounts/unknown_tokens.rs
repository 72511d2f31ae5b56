//! Token logins with a token nobody holds, limited per client address and per client network.
//!
//! A token (256 random bits) cannot be guessed, so token logins are not throttled by the
//! password throttle's address counter: behind one shared address (CGNAT) a stranger's bogus
//! tokens would otherwise shut out every holder of a real one. Unknown tokens are counted here
//! instead, and only once the lookup missed: a known token is never held back, and past the
//! bound a bogus one is answered `RATE_LIMITED`, not counted as a failed login. They are never
//! audited (`logins.rs`): a row each would let anyone write rows at this rate, for an event
//! that names no account; `ringchat_login_failures_total` counts those within the bound.
//! The file API's bearer tokens (`Accounts::token_user`) are charged to the same count.
//!
//! Counted by IPv6 network too (a /48): one holder of a /48 has 65,536 /64s, each a fresh
//! [`UNKNOWN_TOKENS_PER_CLIENT`] of store lookups otherwise. An IPv4 client is counted per
//! address only, as by the password throttle (`limiter::ipv6_network_key`): a carrier's NAT
//! pool is a /24, where a few hosts' bogus tokens would otherwise have every neighbour whose
//! token was revoked told `RATE_LIMITED`, never `INVALID_CREDENTIALS`.

use std::net::IpAddr;

use ringchat_proto::v1::ErrorCode;

use super::Refusal;
use super::limiter::{ClientLimiter, Limited, NetworksOf};

/// Token logins and `/files` requests with an unknown token from one client address (an IPv4
/// address, an IPv6 /64) per [`UNKNOWN_TOKENS_WINDOW_MS`], at most: a client whose token was
/// revoked needs one.
pub const UNKNOWN_TOKENS_PER_CLIENT: u32 = 30;
/// The same from one IPv6 client network (a /48: all its /64s together; IPv4: none) per
/// [`UNKNOWN_TOKENS_WINDOW_MS`]: five clients' worth, the registrations' ratio
/// (`accounts.registrations_per_network_per_hour`), so a site's few hosts with revoked tokens
/// get in together.
pub const UNKNOWN_TOKENS_PER_NETWORK: u32 = 5 * UNKNOWN_TOKENS_PER_CLIENT;
/// The window of [`UNKNOWN_TOKENS_PER_CLIENT`] and [`UNKNOWN_TOKENS_PER_NETWORK`], in
/// milliseconds.
pub(crate) const UNKNOWN_TOKENS_WINDOW_MS: u64 = 60_000;
/// Client addresses counted at once (past it the biggest networks' oldest counts are dropped:
/// `limiter.rs`).
const UNKNOWN_TOKENS_CLIENTS_MAX: usize = 100_000;

pub(super) struct UnknownTokens(ClientLimiter);

impl Default for UnknownTokens {
    fn default() -> Self {
        Self(
            ClientLimiter::new(
                UNKNOWN_TOKENS_PER_CLIENT,
                UNKNOWN_TOKENS_PER_NETWORK,
                UNKNOWN_TOKENS_WINDOW_MS,
                UNKNOWN_TOKENS_CLIENTS_MAX,
            )
            .counting_networks_of(NetworksOf::Ipv6),
        )
    }
}

impl UnknownTokens {
    /// Counts an unknown token from `peer`; past the bound, the refusal to answer instead.
    pub(super) fn charge(&self, peer: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.0.take(peer, now_ms).map_err(|limited| Refusal {
            code: ErrorCode::RateLimited,
            message: match limited {
                Limited::Client { .. } => {
                    "too many unknown tokens from this address, wait before trying again"
                }
                Limited::Network { .. } => {
                    "too many unknown tokens from this network, wait before trying again"
                }
            }
            .into(),
            retry_after_ms: limited.retry_after_ms(),
        })
    }
}

//! Token logins with a token nobody holds, limited per client address.
//!
//! A token (256 random bits) cannot be guessed, so token logins are not throttled by the
//! password throttle's address counter: behind one shared address (CGNAT) a stranger's bogus
//! tokens would otherwise shut out every holder of a real one. Unknown tokens are counted here
//! instead, and only once the lookup missed: a known token is never held back, and past the
//! bound a bogus one is answered `RATE_LIMITED`, neither audited nor counted as a failed login.
//! The file API's bearer tokens (`Accounts::token_user`) are charged to the same count.

use std::net::IpAddr;

use ringchat_proto::v1::ErrorCode;

use super::Refusal;
use super::limiter::ClientLimiter;

/// Token logins and `/files` requests with an unknown token from one client address (an IPv4
/// address, an IPv6 /64) per [`UNKNOWN_TOKENS_WINDOW_MS`], at most: a client whose token was
/// revoked needs one.
pub const UNKNOWN_TOKENS_PER_CLIENT: u32 = 30;
/// The window of [`UNKNOWN_TOKENS_PER_CLIENT`], in milliseconds.
pub(crate) const UNKNOWN_TOKENS_WINDOW_MS: u64 = 60_000;
/// Client addresses counted at once (past it the biggest networks' oldest counts are dropped:
/// `limiter.rs`).
const UNKNOWN_TOKENS_CLIENTS_MAX: usize = 100_000;

pub(super) struct UnknownTokens(ClientLimiter);

impl Default for UnknownTokens {
    fn default() -> Self {
        Self(ClientLimiter::new(
            UNKNOWN_TOKENS_PER_CLIENT,
            0,
            UNKNOWN_TOKENS_WINDOW_MS,
            UNKNOWN_TOKENS_CLIENTS_MAX,
        ))
    }
}

impl UnknownTokens {
    /// Counts an unknown token from `peer`; past the bound, the refusal to answer instead.
    pub(super) fn charge(&self, peer: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.0.take(peer, now_ms).map_err(|limited| Refusal {
            code: ErrorCode::RateLimited,
            message: "too many unknown tokens from this address, wait before trying again".into(),
            retry_after_ms: limited.retry_after_ms(),
        })
    }
}

//! Per-user request budgets in fixed one-minute windows (contact searches and profile
//! lookups, group writes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use ringchat_proto::v1::ErrorCode;

use crate::accounts::Refusal;
use crate::store::UserId;
use crate::time::now_ms;

const MINUTE_MS: u64 = 60_000;
/// Users tracked at once, at most: past it, windows that have ended are forgotten, and if all
/// are current the table starts over (a user then gets a fresh minute: bounded memory wins).
const USERS_TRACKED_MAX: usize = 100_000;

pub(crate) struct PerUserRate {
    /// A live key: changed by `set_per_min_max`.
    per_min_max: AtomicU32,
    what: &'static str,
    /// User → (minute, used in it).
    used: Mutex<HashMap<UserId, (u64, u32)>>,
}

impl PerUserRate {
    pub(crate) fn new(per_min_max: u32, what: &'static str) -> Self {
        Self {
            per_min_max: AtomicU32::new(per_min_max),
            what,
            used: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_per_min_max(&self, per_min_max: u32) {
        self.per_min_max.store(per_min_max, Ordering::Relaxed);
    }

    /// Takes `n` from `user`'s budget of this minute, or says when to retry.
    pub(crate) fn take(&self, user: UserId, n: u32) -> Result<(), Refusal> {
        self.take_at(user, n, now_ms())
    }

    fn take_at(&self, user: UserId, n: u32, now: u64) -> Result<(), Refusal> {
        let minute = now / MINUTE_MS;
        let per_min_max = self.per_min_max.load(Ordering::Relaxed);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= USERS_TRACKED_MAX && !used.contains_key(&user) {
            used.retain(|_, (m, _)| *m == minute);
            if used.len() >= USERS_TRACKED_MAX {
                used.clear();
            }
        }
        let entry = used.entry(user).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1.saturating_add(n) > per_min_max {
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                message: format!("at most {per_min_max} {} a minute", self.what),
                retry_after_ms: (minute + 1) * MINUTE_MS - now,
            });
        }
        entry.1 += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_the_budget_of_a_minute_and_others_their_own() {
        let rate = PerUserRate::new(3, "searches");
        let t = 1_000 * MINUTE_MS + 100;
        assert!(rate.take_at(1, 2, t).is_ok());
        assert!(rate.take_at(1, 1, t + 10).is_ok());
        let refused = rate.take_at(1, 1, t + 20).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_ms, MINUTE_MS - 120);
        assert!(
            rate.take_at(2, 3, t).is_ok(),
            "another user's budget is apart"
        );
        assert!(
            rate.take_at(3, 4, t).is_err(),
            "more than a minute's budget at once"
        );
        assert!(
            rate.take_at(1, 3, t + MINUTE_MS).is_ok(),
            "the next minute is new"
        );
    }
}

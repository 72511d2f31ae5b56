//! The rule for a resolved push that must no longer go: its message grew older than
//! `push.max_age_ms`, or its user came online (the device has the message then). Applied
//! before a webhook request is made and before each of its retries: a request that waits out
//! the push gateway's outage would otherwise carry what was fresh when it was resolved.

use super::resolve::PushItem;
use crate::sessions::SharedSessions;

/// Whether a message stamped `server_time_ms` is older than `max_age_ms` at `now_ms` (an age
/// of exactly `max_age_ms` is not).
pub(crate) fn too_old(server_time_ms: u64, max_age_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(server_time_ms) > max_age_ms
}

/// What the rule reads: the age limit and this node's sessions (memory only, no store read:
/// a request's check costs one read lock and its at most `push.batch_max` lookups).
pub(crate) struct Staleness {
    pub max_age_ms: u64,
    pub sessions: SharedSessions,
}

impl Staleness {
    /// Drops the pushes that must not be sent at `now_ms`, counted by reason in
    /// `ringchat_push_stale_total`; how many.
    pub(crate) fn drop_stale(&self, pushes: &mut Vec<PushItem>, now_ms: u64) -> usize {
        let (mut expired, mut online) = (0u64, 0u64);
        {
            let sessions = self.sessions.read();
            pushes.retain(|p| {
                if too_old(p.server_time_ms, self.max_age_ms, now_ms) {
                    expired += 1;
                    false
                } else if !sessions.of_user(p.user_id).is_empty() {
                    online += 1;
                    false
                } else {
                    true
                }
            });
        }
        if expired > 0 {
            metrics::counter!("ringchat_push_stale_total", "reason" => "expired")
                .increment(expired);
        }
        if online > 0 {
            metrics::counter!("ringchat_push_stale_total", "reason" => "online").increment(online);
        }
        (expired + online) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Sessions;

    fn item(user_id: u64, server_time_ms: u64) -> PushItem {
        PushItem::for_test(user_id, server_time_ms)
    }

    #[test]
    fn pushes_past_the_max_age_are_dropped_and_one_of_exactly_it_is_kept() {
        let stale = Staleness {
            max_age_ms: 1_000,
            sessions: SharedSessions::new(Sessions::new(4, Vec::new())),
        };
        let mut pushes = vec![
            item(100_000_001, 1_000),
            item(100_000_002, 9_000),
            item(100_000_003, 8_999),
        ];
        assert_eq!(stale.drop_stale(&mut pushes, 10_000), 2);
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].user_id, 100_000_002);
        assert!(!too_old(9_000, 1_000, 10_000));
        assert!(too_old(8_999, 1_000, 10_000));
    }

    #[test]
    fn pushes_for_users_online_now_are_dropped() {
        let sessions = SharedSessions::new(Sessions::new(4, Vec::new()));
        let stale = Staleness {
            max_age_ms: 1_000,
            sessions: sessions.clone(),
        };
        let mut pushes = vec![item(100_000_001, 10_000), item(100_000_002, 10_000)];
        assert_eq!(stale.drop_stale(&mut pushes, 10_000), 0);
        let session = crate::sessions::Session {
            conn: crate::api::ConnRef { shard: 0, conn: 1 },
            device_id: "d1".into(),
            platform: ringchat_proto::v1::Platform::Ios,
            token_hash: [0; 32],
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            opened_at_ms: 10_000,
            token_expires_at_ms: u64::MAX,
        };
        sessions.write().open(100_000_002, session).unwrap();
        assert_eq!(stale.drop_stale(&mut pushes, 10_000), 1);
        assert_eq!(pushes[0].user_id, 100_000_001);
    }
}

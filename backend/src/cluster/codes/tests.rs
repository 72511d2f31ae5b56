//! Shared e-mail codes against a real Redis (`scripts/test.sh` starts one:
//! RINGCHAT_TEST_REDIS_URL); two `SharedCodes` on one prefix stand for two nodes.

use super::*;
use crate::cluster::test_wait::redis_url;

const REGISTER: i32 = 1;
const RESET: i32 = 2;
const RULES: CodeRules = CodeRules {
    ttl_ms: 600_000,
    resend_interval_ms: 60_000,
    tries_max: 3,
    per_address_max: 2,
    window_ms: 3_600_000,
};

/// Two nodes of one cluster (a fresh prefix per test).
fn two_nodes(test: &str) -> (SharedCodes, SharedCodes, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let prefix = format!("codes_{test}_{}_{nanos}", std::process::id());
    let node = |id: &str| {
        SharedCodes::new(&ClusterConfig {
            enabled: true,
            node_id: id.into(),
            redis_url: redis_url(),
            redis_key_prefix: prefix.clone(),
            peer_secret: "0123456789abcdef0123456789abcdef".into(),
            ..ClusterConfig::default()
        })
        .expect("redis client")
    };
    (node("a"), node("b"), prefix)
}

#[tokio::test]
async fn a_code_sent_by_one_node_is_redeemed_once_on_another_and_only_for_its_purpose() {
    let (a, b, _) = two_nodes("redeem");
    let stored = a.issue(RESET, "x@y.io", "123456", 0, RULES).await.unwrap();
    assert_eq!(stored, Issued::Stored);
    let other_purpose = b.redeem(REGISTER, "x@y.io", "123456", 6, 1).await.unwrap();
    assert_eq!(other_purpose, Redeemed::Unknown);
    assert_eq!(
        b.redeem(RESET, "x@y.io", "123456", 6, 1).await.unwrap(),
        Redeemed::Used
    );
    assert_eq!(
        a.redeem(RESET, "x@y.io", "123456", 6, 2).await.unwrap(),
        Redeemed::Unknown,
        "a code works once, on any node"
    );
}

#[tokio::test]
async fn wrong_tries_on_any_node_use_up_the_same_code() {
    let (a, b, _) = two_nodes("tries");
    a.issue(RESET, "x@y.io", "123456", 0, RULES).await.unwrap();
    let first = a.redeem(RESET, "x@y.io", "000000", 6, 1).await.unwrap();
    assert_eq!(first, Redeemed::Wrong { tries_left: 2 });
    // Not six digits: never right, still a try.
    let short = b.redeem(RESET, "x@y.io", "12345", 6, 1).await.unwrap();
    assert_eq!(short, Redeemed::Wrong { tries_left: 1 });
    let last = a.redeem(RESET, "x@y.io", "999999", 6, 1).await.unwrap();
    assert_eq!(last, Redeemed::Exhausted);
    let right_too_late = b.redeem(RESET, "x@y.io", "123456", 6, 1).await.unwrap();
    assert_eq!(
        right_too_late,
        Redeemed::Unknown,
        "void: even the right code"
    );
}

#[tokio::test]
async fn the_resend_interval_and_the_per_address_window_hold_across_nodes() {
    let (a, b, _) = two_nodes("limits");
    a.issue(RESET, "x@y.io", "111111", 0, RULES).await.unwrap();
    let soon = b
        .issue(RESET, "x@y.io", "222222", 1_000, RULES)
        .await
        .unwrap();
    assert_eq!(
        soon,
        Issued::TooSoon {
            retry_after_ms: 59_000
        }
    );
    let second = b.issue(RESET, "x@y.io", "333333", 60_000, RULES).await;
    assert_eq!(second.unwrap(), Issued::Stored);
    // The newer code replaced the older one.
    let old = a
        .redeem(RESET, "x@y.io", "111111", 6, 60_001)
        .await
        .unwrap();
    assert_eq!(old, Redeemed::Wrong { tries_left: 2 });
    let third = a.issue(RESET, "x@y.io", "444444", 120_000, RULES).await;
    assert!(
        matches!(third.unwrap(), Issued::AddressFull { retry_after_ms } if retry_after_ms > 0),
        "two codes an hour for the address, whichever node sent them"
    );
    let other_address = a.issue(RESET, "z@y.io", "555555", 120_000, RULES).await;
    assert_eq!(other_address.unwrap(), Issued::Stored);
}

#[tokio::test]
async fn an_expired_code_is_told_expired_and_redis_holds_no_address_or_code_in_clear() {
    let (a, b, prefix) = two_nodes("expiry");
    a.issue(RESET, "Secret@y.io", "123456", 0, RULES)
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(!key.to_lowercase().contains("secret"), "{key}");
        let dump: Vec<Vec<u8>> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map(|d: Vec<u8>| vec![d])
            .unwrap();
        let dump = String::from_utf8_lossy(&dump[0]).to_lowercase();
        assert!(
            !dump.contains("secret") && !dump.contains("123456"),
            "{key}"
        );
    }
    let late = b.redeem(RESET, "Secret@y.io", "123456", 6, 600_000).await;
    assert_eq!(late.unwrap(), Redeemed::Expired);
}

//! Budgets counted per clock minute (`PerUserRate`: contact searches, profile lookups, group
//! changes) start over at each minute's turn: a test that spends one and expects the refusal
//! must not straddle a turn, or the refused call passes.

use std::time::Duration;

/// Returns at a moment with at least `room` left in the current clock minute (the server's
/// clock: the same `now_ms`), waiting for the next minute's start when less is left.
pub async fn inside_one_clock_minute(room: Duration) {
    const MINUTE_MS: u64 = 60_000;
    let room_ms = u64::try_from(room.as_millis()).expect("room in ms");
    assert!(room_ms < MINUTE_MS, "at most a minute fits in one");
    let into_minute = ringchat_backend::api::now_ms() % MINUTE_MS;
    if MINUTE_MS - into_minute < room_ms {
        // 100 ms past the turn: clear of the clock's granularity.
        tokio::time::sleep(Duration::from_millis(MINUTE_MS - into_minute + 100)).await;
    }
}

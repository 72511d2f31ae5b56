//! Tests of the cluster's Redis-backed parts wait on what they expect, with a deadline.

use std::time::{Duration, Instant};

/// How long a test waits for something Redis or a background task does.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it gives `Some`, failing (saying `what`) after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a condition that needs no I/O.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, || std::future::ready(check().then_some(()))).await
}

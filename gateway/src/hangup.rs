//! SIGHUP, caught from the first line of `main` for every command. Its default action ends the
//! process, and it comes at any time: certbot's deploy hook and `systemctl reload` send it to
//! a node still opening its store or joining its cluster, to a `--role status` node, and
//! `kill -HUP $(pidof ringchat)` to a `migrate` or `backup` that happens to run. Each is
//! counted here; `serve` applies the ones it got before it was ready once it is (a renewed
//! certificate is read then), everything else ignores them.

use std::sync::LazyLock;

use tokio::sync::watch;

/// How many SIGHUPs the process has had.
static HANGUPS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Installs the handler (before this returns: no SIGHUP after it can end the process) and
/// counts on a thread of its own.
pub fn catch() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut hangups = rt.block_on(async { signal(SignalKind::hangup()) })?;
    std::thread::Builder::new()
        .name("rc-hangup".into())
        .spawn(move || {
            rt.block_on(async {
                while hangups.recv().await.is_some() {
                    HANGUPS.send_modify(|n| *n += 1);
                }
            });
        })?;
    Ok(())
}

/// Waits for a SIGHUP after the first `seen` (0: any since the start) and returns how many
/// there have been; several while one is being handled come back as one.
pub async fn next(seen: u64) -> u64 {
    let mut rx = HANGUPS.subscribe();
    // Err only if the sender were dropped; it is a static.
    rx.wait_for(|&n| n > seen).await.map_or(seen, |n| *n)
}

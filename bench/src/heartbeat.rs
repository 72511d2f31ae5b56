//! Held connections ping, as a client does. The server closes a connection that sends nothing
//! for `gateway.idle_timeout_ms` (60 s by default; what the server writes to it does not count)
//! and asks in `HelloOk.heartbeat_interval_ms` for a ping that often. A listener, a slow sender,
//! or a connection waiting out a long setup (thousands of sign-ups) would otherwise be kicked,
//! and the run could never be clean. Every scenario that holds connections keeps them alive
//! from here, from their login on.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::join_all;
use ringchat_proto::{Body, Frame, v1};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::transport::FrameWriter;

/// Pings at most this far apart, whatever the server asked for (or when it said nothing).
pub const INTERVAL_MAX: Duration = Duration::from_secs(20);
/// And at least this far apart: a server asking for 0 ms gets no ping storm.
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);

/// How often to ping a connection whose server asked for `announced` (0: not said).
pub fn interval(announced: Option<Duration>) -> Duration {
    announced
        .filter(|d| !d.is_zero())
        .unwrap_or(INTERVAL_MAX)
        .clamp(INTERVAL_MIN, INTERVAL_MAX)
}

/// A ping wanting no particular answer (request id 0): for a connection whose frames are read
/// elsewhere, where the `Pong` is passed over.
pub fn ping() -> Frame {
    Frame {
        request_id: 0,
        body: Some(ping_body()),
    }
}

pub fn ping_body() -> Body {
    Body::Ping(v1::Ping { client_time_ms: 0 })
}

/// Pings through `write` every `every` until `stop()` says the connection is done with; an
/// error when a write fails.
pub async fn keep_alive(
    write: &tokio::sync::Mutex<FrameWriter>,
    every: Duration,
    stop: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let mut scratch = BytesMut::with_capacity(64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stop() {
            return Ok(());
        }
        write.lock().await.write(&[ping()], &mut scratch).await?;
    }
}

/// Pings every client and waits for each `Pong` (other frames stay queued in the client):
/// the clients that answered stay, those that failed (kicked, closed, silent) are taken out and
/// their errors returned.
pub async fn ping_all(clients: &mut Vec<Client>) -> Vec<anyhow::Error> {
    let results = join_all(clients.iter_mut().map(|c| c.ping())).await;
    let mut failed = Vec::new();
    let mut alive = Vec::with_capacity(clients.len());
    for (c, r) in std::mem::take(clients).into_iter().zip(results) {
        match r {
            Ok(_) => alive.push(c),
            Err(e) => failed.push(e),
        }
    }
    *clients = alive;
    failed
}

/// Runs `wait` while pinging `clients` at their interval: (its output, the errors of the
/// clients that failed meanwhile, taken out of `clients`).
pub async fn while_waiting<F: Future>(
    clients: &mut Vec<Client>,
    wait: F,
) -> (F::Output, Vec<anyhow::Error>) {
    let every = interval(clients.iter().filter_map(|c| c.heartbeat).min());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = Vec::new();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            out = &mut wait => return (out, failed),
            _ = tick.tick() => failed.extend(ping_all(clients).await),
        }
    }
}

/// Awaits sign-up tasks, each ending with a logged-in client (where `client` finds one), and
/// returns their results in order; the clients already logged in are pinged while the rest
/// sign up. Each result comes with the error of its client if that failed while held (it is
/// pinged no more); a failed task ends it.
pub async fn gather<T: 'static>(
    tasks: Vec<JoinHandle<anyhow::Result<T>>>,
    client: impl Fn(&mut T) -> Option<&mut Client>,
) -> anyhow::Result<Vec<(T, Option<anyhow::Error>)>> {
    use futures_util::StreamExt;
    let total = tasks.len();
    let mut pending: futures_util::stream::FuturesUnordered<_> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| async move { (i, t.await) })
        .collect();
    let mut done: Vec<Option<(T, Option<anyhow::Error>)>> = (0..total).map(|_| None).collect();
    let mut every = interval(None);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = pending.next() => {
                let Some((i, joined)) = next else { break };
                let mut t = joined??;
                // The server's interval, once one is known, if shorter than the one in use.
                let asked = interval(client(&mut t).and_then(|c| c.heartbeat));
                if asked < every {
                    every = asked;
                    tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                done[i] = Some((t, None));
            }
            _ = tick.tick() => {
                let alive = done.iter_mut().flatten().filter(|(_, failed)| failed.is_none());
                let pings = alive.filter_map(|(t, failed)| Some((client(t)?, failed)));
                join_all(pings.map(|(c, failed)| async move {
                    if let Err(e) = c.ping().await {
                        *failed = Some(e.context("held while the others signed up"));
                    }
                }))
                .await;
            }
        }
    }
    Ok(done
        .into_iter()
        .map(|t| t.expect("every task joined"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_servers_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(interval(Some(ms(300))), ms(300));
        assert_eq!(interval(Some(ms(30_000))), INTERVAL_MAX);
        assert_eq!(interval(Some(ms(1))), INTERVAL_MIN);
        assert_eq!(interval(Some(ms(0))), INTERVAL_MAX);
        assert_eq!(interval(None), INTERVAL_MAX);
    }
}

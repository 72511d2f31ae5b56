//! The sender: one tokio task that takes the queue's records (messages' before system
//! notifications', and between a system batch's chunks the messages' that came meanwhile),
//! drops those older than `push.max_age_ms` chunk by chunk, resolves the rest into pushes on
//! a blocking thread and posts them to the push gateway, `push.batch_max` per request, each
//! request and retry leaving out the pushes that became stale meanwhile (`stale.rs`). Records
//! count against their lane's bound until they are sent, expired or given up, so a push
//! gateway that is down fills the queue (and new records are dropped and counted) instead of
//! memory; once it is back, what waited longer than `push.max_age_ms` is dropped unsent, so
//! the queue empties fast and fresh pushes get room again.

use std::sync::Arc;

use super::resolve::{PushItem, Resolver};
use super::stale::{Staleness, too_old};
use super::webhook::{DeadToken, Sent, client, post};
use super::{Lane, PushReceiver, PushRecord};
use crate::Backend;
use crate::store::UserId;

/// Starts the sender if push is on; a second call does nothing.
pub(crate) fn start(backend: &Arc<Backend>) {
    let Some(push) = &backend.push else {
        return;
    };
    let Some(rx) = push.take_receiver() else {
        return;
    };
    let client = match client(&push.config) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "the push gateway's HTTP client did not start; offline push is off");
            return;
        }
    };
    let resolver = Arc::new(Resolver {
        ports: backend.ports.clone(),
        sessions: backend.sessions.clone(),
        config: push.config.clone(),
        devices_max: backend.settings.login.device_tokens_max,
    });
    // push.url may carry credentials (`user:password@`, `?token=`); viewers read the logs.
    let url = crate::live::credentials_hidden(&push.config.url);
    tracing::info!(%url, "offline push to the push gateway");
    let stale = Staleness {
        max_age_ms: push.config.max_age_ms,
        sessions: backend.sessions.clone(),
    };
    let sender = Sender {
        backend: Arc::clone(backend),
        client,
        resolver,
        stale,
    };
    tokio::spawn(run(sender, rx));
}

async fn run(sender: Sender, mut rx: PushReceiver) {
    while let Some((lane, records)) = rx.recv().await {
        sender.batch(lane, records, Some(&mut rx)).await;
    }
}

struct Sender {
    backend: Arc<Backend>,
    client: reqwest::Client,
    resolver: Arc<Resolver>,
    /// What drops a resolved push before its request and each retry.
    stale: Staleness,
}

impl Sender {
    /// Sends a batch taken from `lane`, `push.batch_max` records per chunk. Between the
    /// chunks of a system batch, the messages' batches waiting (`rx`) go first.
    async fn batch(&self, lane: Lane, mut records: Vec<PushRecord>, rx: Option<&mut PushReceiver>) {
        let Some(push) = &self.backend.push else {
            return;
        };
        let taken = records.len();
        push.queue.received(&mut records);
        metrics::gauge!("ringchat_push_queue_records")
            .set(push.queue.waiting(Lane::Messages) as f64);
        metrics::gauge!("ringchat_push_system_queue_records")
            .set(push.queue.waiting(Lane::System) as f64);
        let mut rx = rx.filter(|_| lane == Lane::System);
        for chunk in records.chunks(push.config.batch_max) {
            if let Some(rx) = rx.as_deref_mut() {
                while let Some(messages) = rx.try_message() {
                    Box::pin(self.batch(Lane::Messages, messages, None)).await;
                }
            }
            self.chunk(chunk.to_vec()).await;
        }
        push.queue.taken(lane, taken);
    }

    /// Drops the records older than `push.max_age_ms` now (a chunk may have waited behind
    /// others' retries), resolves the rest and posts them, `push.batch_max` per request. A
    /// group's record may resolve into up to `push.group_members_max` pushes, so the requests
    /// of one chunk may be made long after it was taken: each request (and retry) drops the
    /// pushes that became stale meanwhile (`stale.rs`).
    async fn chunk(&self, mut records: Vec<PushRecord>) {
        let Some(push) = &self.backend.push else {
            return;
        };
        let config = &push.config;
        let expired = drop_expired(&mut records, config.max_age_ms, crate::time::now_ms());
        if expired > 0 {
            metrics::counter!("ringchat_push_expired_total").increment(expired as u64);
        }
        if records.is_empty() {
            return;
        }
        let count = records.len();
        let resolving = Arc::clone(&self.resolver);
        let pushes = tokio::task::spawn_blocking(move || resolving.pushes(&records)).await;
        let mut pushes = match pushes {
            Ok(Ok(pushes)) => pushes,
            Ok(Err(err)) => {
                tracing::warn!(%err, records = count, "push records not resolved");
                metrics::counter!("ringchat_push_failed_total").increment(count as u64);
                return;
            }
            Err(err) => {
                tracing::error!(%err, "resolving pushes failed");
                return;
            }
        };
        if let Some(routes) = self.backend.routes.get() {
            not_online_elsewhere(routes, &mut pushes).await;
        }
        let mut pushes = pushes.into_iter();
        loop {
            let mut part: Vec<PushItem> = pushes.by_ref().take(config.batch_max).collect();
            if part.is_empty() {
                break;
            }
            let sent = post(&self.client, config, &self.stale, &mut part).await;
            // `part` holds what is left of the request once its stale pushes were dropped.
            let n = part.len() as u64;
            match sent {
                Sent::Accepted { dead_tokens } => {
                    metrics::counter!("ringchat_push_sent_total").increment(n);
                    if !dead_tokens.is_empty() {
                        forget_dead(&self.resolver, dead_tokens).await;
                    }
                }
                Sent::GivenUp => metrics::counter!("ringchat_push_failed_total").increment(n),
                Sent::Stale => {}
            }
        }
    }
}

/// Forgets the tokens the push gateway named as dead, each only while its device still has
/// that token (a device that registered a new one keeps it).
async fn forget_dead(resolver: &Arc<Resolver>, dead: Vec<DeadToken>) {
    let resolver = Arc::clone(resolver);
    let forgotten = tokio::task::spawn_blocking(move || {
        let store = &resolver.ports.push_tokens;
        let mut forgotten = 0u64;
        for d in dead {
            let current = store.push_tokens(d.user_id, resolver.devices_max)?;
            let still = current
                .iter()
                .find(|(device, t)| *device == d.device_id && t.token == d.token);
            // Compare and delete: a token the device registered since this read stays.
            if let Some((device, record)) = still
                && store.remove_push_token_if(d.user_id, device, record)?
            {
                forgotten += 1;
            }
        }
        Ok::<_, crate::store::StoreError>(forgotten)
    })
    .await;
    match forgotten {
        Ok(Ok(n)) => metrics::counter!("ringchat_push_dead_tokens_total").increment(n),
        Ok(Err(err)) => tracing::warn!(%err, "dead push tokens not forgotten"),
        Err(err) => tracing::error!(%err, "forgetting dead push tokens failed"),
    }
}

/// Drops the records whose message is older than `max_age_ms` at `now_ms`; how many.
fn drop_expired(records: &mut Vec<PushRecord>, max_age_ms: u64, now_ms: u64) -> usize {
    let before = records.len();
    records.retain(|r| !too_old(r.server_time_ms, max_age_ms, now_ms));
    before - records.len()
}

/// Cluster mode: "offline" was decided from this node's sessions; a user with a device on
/// another live node (the routes in Redis) is online and gets no push. When Redis cannot say
/// (down, or its breaker open), the pushes go: a user who is in fact offline would otherwise
/// not hear of the message at all, while a push to a user who is online elsewhere only
/// duplicates what that device shows already.
async fn not_online_elsewhere(routes: &crate::cluster::Routes, pushes: &mut Vec<PushItem>) {
    if pushes.is_empty() {
        return;
    }
    let mut users: Vec<UserId> = pushes.iter().map(|p| p.user_id).collect();
    users.sort_unstable();
    users.dedup();
    match routes.online_elsewhere(&users).await {
        Ok(online) if !online.is_empty() => {
            let before = pushes.len();
            pushes.retain(|p| !online.contains(&p.user_id));
            metrics::counter!("ringchat_push_online_elsewhere_total")
                .increment((before - pushes.len()) as u64);
        }
        Ok(_) => {}
        Err(err) => {
            tracing::debug!(%err, users = users.len(), "cluster: routes unknown; pushing as decided from this node's sessions");
            metrics::counter!("ringchat_push_routes_unknown_total").increment(pushes.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConvId;

    #[test]
    fn records_older_than_the_max_age_are_dropped_and_counted() {
        let at = |server_time_ms| PushRecord {
            user: 100_000_001,
            conv: ConvId::direct(100_000_001, 100_000_002).expect("conv"),
            seq: 1,
            from: 100_000_002,
            server_time_ms,
        };
        let mut records = vec![at(1_000), at(9_000), at(10_000)];
        assert_eq!(drop_expired(&mut records, 1_000, 10_000), 1);
        assert_eq!(
            records,
            [at(9_000), at(10_000)],
            "an age of exactly max_age is kept"
        );
    }
}

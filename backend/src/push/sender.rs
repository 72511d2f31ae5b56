//! The sender: one tokio task that takes the queue's records (messages' before system
//! notifications', and between a system batch's chunks the messages' that came meanwhile),
//! drops those older than `push.max_age_ms` chunk by chunk, resolves the rest into pushes on
//! a blocking thread and posts them to the push gateway, `push.batch_max` per request, each
//! request and retry leaving out the pushes that became stale meanwhile (`stale.rs`). Records
//! count against their lane's bound until they are sent, expired or given up, so a push
//! gateway that is down fills the queue (and new records are dropped and counted) instead of
//! memory; once it is back, what waited longer than `push.max_age_ms` is dropped unsent, so
//! the queue empties fast and fresh pushes get room again.

use std::collections::HashSet;
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
        let resolving = Arc::clone(&self.resolver);
        let resolve = move |records: Vec<PushRecord>| async move {
            let count = records.len();
            match tokio::task::spawn_blocking(move || resolving.pushes(&records)).await {
                Ok(Ok(pushes)) => Some(pushes),
                Ok(Err(err)) => {
                    tracing::warn!(%err, records = count, "push records not resolved");
                    metrics::counter!("ringchat_push_failed_total").increment(count as u64);
                    None
                }
                Err(err) => {
                    tracing::error!(%err, "resolving pushes failed");
                    None
                }
            }
        };
        let routes = self.backend.routes.get();
        let link = self.backend.link.as_deref();
        let elsewhere = routes.map(|routes| {
            move |users: Vec<UserId>| async move {
                let down = |node: &str| link.is_some_and(|l| l.known_down(node));
                routes.online_elsewhere(&users, down).await
            }
        });
        let Some(pushes) = offline_pushes(records, elsewhere, resolve).await else {
            return;
        };
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

/// The pushes of `records`, resolved by `resolve` (store reads on a blocking thread; `None`
/// when that failed). Cluster mode (`elsewhere` set): "offline" was decided from this node's
/// sessions; a user with a device on another node that is heard from (the routes in Redis:
/// `Routes::online_elsewhere`) is online and gets no push. The direct and system records'
/// users are asked before resolving, so that theirs cost no store read and, under a stalled
/// push gateway, no place in the queue ahead of offline users'; the members a group's record
/// resolves into are asked after. When Redis cannot say (down, or its breaker open), the
/// pushes go: a user who is in fact offline would otherwise not hear of the message at all,
/// while a push to a user who is online elsewhere only duplicates what that device shows
/// already.
async fn offline_pushes<Ask, Asked, Resolve, Resolved, E>(
    mut records: Vec<PushRecord>,
    elsewhere: Option<Ask>,
    resolve: Resolve,
) -> Option<Vec<PushItem>>
where
    Ask: Fn(Vec<UserId>) -> Asked,
    Asked: Future<Output = Result<HashSet<UserId>, E>>,
    Resolve: FnOnce(Vec<PushRecord>) -> Resolved,
    Resolved: Future<Output = Option<Vec<PushItem>>>,
    E: std::fmt::Display,
{
    let Some(ask) = elsewhere else {
        return resolve(records).await;
    };
    // A group's record (user 0) names no user until resolved.
    let mut asked: Vec<UserId> = records.iter().map(|r| r.user).filter(|u| *u != 0).collect();
    asked.sort_unstable();
    asked.dedup();
    // Of the users asked, those online elsewhere (empty when Redis could not say).
    let mut online_asked = HashSet::new();
    if !asked.is_empty() {
        let before = records.len();
        match ask(asked.clone()).await {
            Ok(mut online) => {
                records.retain(|r| r.user == 0 || !online.contains(&r.user));
                count_online_elsewhere(before - records.len());
                online.retain(|u| asked.binary_search(u).is_ok());
                online_asked = online;
            }
            Err(err) => {
                let unknown = records.iter().filter(|r| r.user != 0).count();
                routes_unknown(&err, asked.len(), unknown);
            }
        }
    }
    if records.is_empty() {
        return Some(Vec::new());
    }
    let mut pushes = resolve(records).await?;
    // A user asked above may be a member of a group's record too: the answer stands for it.
    if !online_asked.is_empty() {
        let before = pushes.len();
        pushes.retain(|p| !online_asked.contains(&p.user_id));
        count_online_elsewhere(before - pushes.len());
    }
    // Only the group members not asked already.
    let mut members: Vec<UserId> = pushes
        .iter()
        .map(|p| p.user_id)
        .filter(|u| asked.binary_search(u).is_err())
        .collect();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        return Some(pushes);
    }
    match ask(members.clone()).await {
        Ok(online) => {
            let before = pushes.len();
            pushes.retain(|p| !online.contains(&p.user_id));
            count_online_elsewhere(before - pushes.len());
        }
        Err(err) => {
            let unknown = pushes
                .iter()
                .filter(|p| members.binary_search(&p.user_id).is_ok())
                .count();
            routes_unknown(&err, members.len(), unknown);
        }
    }
    Some(pushes)
}

fn count_online_elsewhere(n: usize) {
    if n > 0 {
        metrics::counter!("ringchat_push_online_elsewhere_total").increment(n as u64);
    }
}

fn routes_unknown(err: &dyn std::fmt::Display, users: usize, pushes: usize) {
    tracing::debug!(%err, users, "cluster: routes unknown; pushing as decided from this node's sessions");
    metrics::counter!("ringchat_push_routes_unknown_total").increment(pushes as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConvId;
    use std::sync::Mutex;

    fn record(user: UserId, conv: ConvId) -> PushRecord {
        PushRecord {
            user,
            conv,
            seq: 1,
            from: 100_000_009,
            server_time_ms: 1,
        }
    }

    fn push(user_id: UserId) -> PushItem {
        PushItem::for_test(user_id, 1)
    }

    /// Resolves a direct record into its user's push and the group's record into pushes to
    /// `members`, noting what it was given.
    fn resolver<'a>(
        members: Vec<UserId>,
        given: &'a Mutex<Vec<PushRecord>>,
    ) -> impl FnOnce(Vec<PushRecord>) -> std::future::Ready<Option<Vec<PushItem>>> + 'a {
        move |records| {
            let pushes = records
                .iter()
                .flat_map(|r| match r.user {
                    0 => members.clone(),
                    u => vec![u],
                })
                .map(push)
                .collect();
            given.lock().unwrap().extend(records);
            std::future::ready(Some(pushes))
        }
    }

    /// The direct records of users online on another node are dropped before anything is
    /// resolved (no store read, no place taken); a group's members are asked after, and only
    /// those not asked already.
    #[tokio::test]
    async fn users_online_elsewhere_are_dropped_before_their_records_are_resolved() {
        let (online, offline, member, member_online) =
            (100_000_001, 100_000_002, 100_000_003, 100_000_004);
        let direct = |u| record(u, ConvId::direct(u, 100_000_009).expect("conv"));
        let group = record(0, ConvId::group(7).expect("conv"));
        let asked = Mutex::new(Vec::new());
        // As Redis answers: of the users asked, those online elsewhere.
        let ask = |users: Vec<UserId>| {
            let online_of: HashSet<UserId> = users
                .iter()
                .copied()
                .filter(|u| [online, member_online].contains(u))
                .collect();
            asked.lock().unwrap().push(users);
            std::future::ready(Ok::<_, String>(online_of))
        };
        let given = Mutex::new(Vec::new());
        let records = vec![direct(online), direct(offline), group];
        let pushes = offline_pushes(
            records,
            Some(ask),
            // The group has the user found online in the first question too: not pushed.
            resolver(vec![member, member_online, offline, online], &given),
        )
        .await
        .expect("resolved");
        assert_eq!(
            *given.lock().unwrap(),
            [direct(offline), group],
            "the online user's record is never resolved"
        );
        assert_eq!(
            *asked.lock().unwrap(),
            [vec![online, offline], vec![member, member_online]],
            "the direct records' users first; then the members not asked already"
        );
        let users: Vec<UserId> = pushes.iter().map(|p| p.user_id).collect();
        assert_eq!(users, [offline, member, offline]);
    }

    /// Redis cannot say: every record is resolved and every push goes.
    #[tokio::test]
    async fn routes_unknown_push_everything() {
        let direct = record(
            100_000_001,
            ConvId::direct(100_000_001, 100_000_009).expect("conv"),
        );
        let group = record(0, ConvId::group(7).expect("conv"));
        let ask = |_: Vec<UserId>| std::future::ready(Err::<HashSet<UserId>, _>("redis away"));
        let given = Mutex::new(Vec::new());
        let pushes = offline_pushes(
            vec![direct, group],
            Some(ask),
            resolver(vec![100_000_003], &given),
        )
        .await
        .expect("resolved");
        assert_eq!(given.lock().unwrap().len(), 2);
        assert_eq!(pushes.len(), 2);
        // Single node: nothing asked.
        let given = Mutex::new(Vec::new());
        type Answer = std::future::Ready<Result<HashSet<UserId>, String>>;
        let none: Option<fn(Vec<UserId>) -> Answer> = None;
        let pushes = offline_pushes(vec![direct], none, resolver(Vec::new(), &given))
            .await
            .expect("resolved");
        assert_eq!(pushes.len(), 1);
    }

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

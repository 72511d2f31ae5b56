//! What presence costs:
//! - `presence-fanout`: one user with F online friends changes state T times; each friend must
//!   be told each change exactly once, with its state (what came twice, with the wrong state,
//!   or not within `FANOUT_TIMEOUT` is counted); reports the server CPU per delivered presence
//!   update and how long each change takes to reach every friend;
//! - `login-storm`: U users with K friends each log in at once (token logins) and ask for their
//!   friends with presence; reports the time from connecting to that first snapshot, and the
//!   server CPU per login.
//!
//! Both make their users and friendships through the protocol first (kept in the server's
//! store, so a second run reuses them), on one load thread: the server is what is measured.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use ringchat_proto::Body;
use ringchat_proto::v1;
use serde::Serialize;

use super::{Observe, asking, local_runtime};
use crate::client::Client;
use crate::signup::{Identity, Refusals, sign_up_tcp};

/// Logins and setup requests in flight at once while preparing users.
const SETUP_CONCURRENCY: usize = 256;
/// How long one presence change may take to reach every friend before the run fails.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub addr: SocketAddr,
    pub friends: usize,
    pub changes: usize,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub provenance: crate::provenance::Provenance,
    pub friends: usize,
    pub changes: usize,
    /// Presence pushes the friends received during the measured changes: each friend's first
    /// of each change, with the change's state.
    pub delivered: u64,
    /// Changes a friend was not told of within `FANOUT_TIMEOUT` (once per friend and change).
    pub lost: u64,
    /// Pushes of a change a friend had been told of already.
    pub duplicates: u64,
    /// Pushes whose state was not the change's.
    pub wrong_state: u64,
    /// Sign-ups the server said "later" to (login admission), each retried after its
    /// `retry_after_ms`.
    pub setup_refusals: u64,
    /// From sending `SetPresence` to the last friend receiving the push, per change.
    pub fanout_ms_p50: f64,
    pub fanout_ms_p99: f64,
    pub fanout_ms_max: f64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_update: Option<f64>,
}

impl FanoutReport {
    /// Every friend was told every change once, with the right state.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.wrong_state == 0
            && self.delivered == (self.friends * self.changes) as u64
    }
}

/// The fan-out of the change in progress, and what each friend made of it.
#[derive(Default)]
struct Fanout {
    /// The change being told (its number and state); none before the first.
    change: Cell<Option<(usize, i32)>>,
    /// Friends not told of it yet.
    waiting: Cell<usize>,
    done: tokio::sync::Notify,
    delivered: Cell<u64>,
    duplicates: Cell<u64>,
    wrong_state: Cell<u64>,
}

impl Fanout {
    /// A push of the star's presence with `state` reached a friend last told `told` (a
    /// change's number and state).
    fn arrived(&self, told: &mut Option<(usize, i32)>, state: i32) {
        // Before the first change: what the setup caused, not measured.
        let Some((change, want)) = self.change.get() else {
            return;
        };
        // Told this change already, or the last one's state again (states alternate, so a
        // late second copy of the last change cannot pass for this one).
        let repeat = match *told {
            Some((c, _)) if c == change => true,
            Some((_, last)) => last == state && state != want,
            None => false,
        };
        if repeat {
            self.duplicates.set(self.duplicates.get() + 1);
        } else if state != want {
            self.wrong_state.set(self.wrong_state.get() + 1);
        } else {
            *told = Some((change, state));
            self.delivered.set(self.delivered.get() + 1);
            self.waiting.set(self.waiting.get() - 1);
            if self.waiting.get() == 0 {
                self.done.notify_one();
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StormConfig {
    pub addr: SocketAddr,
    pub users: usize,
    pub friends_per_user: usize,
    /// Connections logging in at once during the storm.
    pub concurrency: usize,
    pub user_prefix: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub provenance: crate::provenance::Provenance,
    pub users: usize,
    pub friends_per_user: usize,
    pub concurrency: usize,
    pub logged_in: u64,
    pub errors: u64,
    /// Friends listed in the first snapshots, over all users (users × friends when complete).
    pub friends_listed: u64,
    /// Requests the server asked to retry later (`UNAVAILABLE`, `RATE_LIMITED`), retried after
    /// its `retry_after_ms` as a client does.
    pub retries: u64,
    /// Sign-ups before the storm the server said "later" to (login admission), each retried
    /// after its `retry_after_ms`.
    pub setup_refusals: u64,
    pub storm_s: f64,
    /// From connecting to the first page of friends with their presence.
    pub snapshot_ms_p50: f64,
    pub snapshot_ms_p99: f64,
    pub snapshot_ms_max: f64,
    /// Snapshots slower than the histogram holds (`stats::LATENCY_US_MAX`): recorded at that
    /// bound, so `snapshot_ms_max` is a floor when this is not 0.
    pub snapshots_over_max: u64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_login: Option<f64>,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub fn run_fanout(cfg: &FanoutConfig, observe: &Observe) -> anyhow::Result<FanoutReport> {
    super::ensure_fd_limit(cfg.friends as u64 + 256)?;
    local_runtime(fanout(cfg, observe))
}

async fn fanout(cfg: &FanoutConfig, observe: &Observe) -> anyhow::Result<FanoutReport> {
    let names: Vec<String> = std::iter::once(format!("{}star", cfg.user_prefix))
        .chain((0..cfg.friends).map(|i| format!("{}fan{i}", cfg.user_prefix)))
        .collect();
    let refusals = Refusals::default();
    let mut users = log_in_all(cfg.addr, &names, &cfg.password, &refusals).await?;
    // Each friend asks the star: a user may send only a few requests a day, but receive many.
    let edges: Vec<(usize, usize)> = (1..users.len()).map(|i| (i, 0)).collect();
    befriend(&mut users, &edges).await?;
    let star_id = users[0].1.user_id;
    let mut star = users.remove(0).0;

    let fanout = Rc::new(Fanout::default());
    let mut listeners = tokio::task::JoinSet::new();
    for (mut client, _) in users {
        let fanout = Rc::clone(&fanout);
        // Pushes of the star's own login arrived before the friendship replies did (one inbox,
        // in order), so they are parked in the client already: skipped, not counted.
        let mut stale = client.pending_events();
        // A friend only listens: it pings (its `Pong`s pass by as other frames do), or the
        // server would end it for idleness during a long run.
        let every = crate::heartbeat::interval(client.heartbeat);
        listeners.spawn_local(async move {
            let mut told = None;
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                let frame = tokio::select! {
                    frame = client.next_event_untimed() => frame,
                    _ = ping.tick() => match client.send(crate::heartbeat::ping_body()).await {
                        Ok(_) => continue,
                        Err(e) => Err(e),
                    },
                };
                // What a friend gone misses is counted lost; why it went is said here.
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        eprintln!("presence-fanout: the server closed a friend's connection");
                        return;
                    }
                    Err(e) => {
                        eprintln!("presence-fanout: a friend's connection failed: {e:#}");
                        return;
                    }
                };
                if stale > 0 {
                    stale -= 1;
                    continue;
                }
                match frame.body {
                    Some(Body::Presence(p)) if p.user_id == star_id => {
                        fanout.arrived(&mut told, p.state);
                    }
                    Some(Body::Kicked(k)) => {
                        let reason = v1::KickReason::try_from(k.reason).unwrap_or_default();
                        eprintln!(
                            "presence-fanout: a friend was kicked: {}",
                            reason.as_str_name()
                        );
                    }
                    _ => {}
                }
            }
        });
    }
    let mut latency = crate::stats::latency_histogram();
    let mut lost = 0;
    let before = observe.sample();
    for change in 0..cfg.changes {
        let state = if change % 2 == 0 {
            v1::PresenceState::Away
        } else {
            v1::PresenceState::Online
        };
        fanout.waiting.set(cfg.friends);
        fanout.change.set(Some((change, state.into())));
        let started = Instant::now();
        match star
            .request(Body::SetPresence(v1::SetPresence {
                state: state.into(),
            }))
            .await?
        {
            Body::SetPresenceOk(_) => {}
            other => bail!("SetPresence: {other:?}"),
        }
        let deadline = tokio::time::Instant::now() + FANOUT_TIMEOUT;
        while fanout.waiting.get() > 0 {
            if tokio::time::timeout_at(deadline, fanout.done.notified())
                .await
                .is_err()
            {
                let missing = fanout.waiting.get();
                eprintln!(
                    "presence-fanout: change {change}: {missing} of {} friends not told within {FANOUT_TIMEOUT:?} (is the server's presence.quiet_period_ms 0?)",
                    cfg.friends
                );
                lost += missing as u64;
                break;
            }
        }
        if fanout.waiting.get() == 0 {
            // Within FANOUT_TIMEOUT, far below the histogram's bound: nothing is clamped.
            let us = started.elapsed().as_micros() as u64;
            crate::stats::record_latency(&mut latency, us);
        }
    }
    let after = observe.sample();
    listeners.abort_all();
    let delivered = fanout.delivered.get();
    let cpu = before
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
    Ok(FanoutReport {
        scenario: "presence-fanout",
        provenance: Default::default(),
        friends: cfg.friends,
        changes: cfg.changes,
        delivered,
        lost,
        duplicates: fanout.duplicates.get(),
        wrong_state: fanout.wrong_state.get(),
        setup_refusals: refusals.count(),
        fanout_ms_p50: ms(&latency, 0.5),
        fanout_ms_p99: ms(&latency, 0.99),
        fanout_ms_max: latency.max() as f64 / 1000.0,
        server_cpu_s: cpu,
        server_cpu_us_per_update: cpu
            .filter(|_| delivered > 0)
            .map(|s| s * 1e6 / delivered as f64),
    })
}

pub fn run_storm(cfg: &StormConfig, observe: &Observe) -> anyhow::Result<StormReport> {
    super::ensure_fd_limit(cfg.users as u64 + 256)?;
    friend_edges(cfg.users, cfg.friends_per_user)?;
    local_runtime(storm(cfg, observe))
}

/// Friendships that give each of `users` exactly `k` friends: a ring where user i befriends
/// the next k/2 users, and for an odd k also the user across the ring (i + users/2), which
/// needs an even number of users (each friendship has two ends: users × k must be even).
fn friend_edges(users: usize, k: usize) -> anyhow::Result<Vec<(usize, usize)>> {
    if k >= users {
        bail!("--friends must be below --users");
    }
    if k % 2 == 1 && users % 2 == 1 {
        bail!("an odd --friends needs an even --users (each friendship has two ends)");
    }
    let half = k / 2;
    let mut edges: Vec<(usize, usize)> = (0..users)
        .flat_map(|i| (1..=half).map(move |d| (i, (i + d) % users)))
        .collect();
    if k % 2 == 1 {
        edges.extend((0..users / 2).map(|i| (i, i + users / 2)));
    }
    Ok(edges)
}

async fn storm(cfg: &StormConfig, observe: &Observe) -> anyhow::Result<StormReport> {
    let names: Vec<String> = (0..cfg.users)
        .map(|i| format!("{}storm{i}", cfg.user_prefix))
        .collect();
    let refusals = Refusals::default();
    let mut users = log_in_all(cfg.addr, &names, &cfg.password, &refusals).await?;
    let edges = friend_edges(cfg.users, cfg.friends_per_user)?;
    befriend(&mut users, &edges).await?;
    let logins: Vec<(u64, String)> = users
        .iter()
        .map(|(_, ok)| (ok.user_id, ok.token.clone()))
        .collect();
    drop(users);
    // Let the server see every connection close before the storm.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let limit = Rc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let before = observe.sample();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (user_id, token) in logins {
        let (limit, addr) = (Rc::clone(&limit), cfg.addr);
        let page = u32::try_from(cfg.friends_per_user).unwrap_or(u32::MAX);
        tasks.spawn_local(async move {
            let _permit = limit.acquire().await.expect("open semaphore");
            let t = Instant::now();
            let attempt = async {
                let mut c = Client::connect(addr).await?;
                c.hello().await?;
                let login = v1::Login {
                    account: Some(v1::login::Account::UserId(user_id)),
                    credential: Some(v1::login::Credential::Token(token.clone())),
                    device_id: "bench".into(),
                    ..Default::default()
                };
                let mut retries = 0;
                match asking(&mut c, user_id, &mut retries, || Body::Login(login.clone())).await? {
                    Body::LoginOk(_) => {}
                    other => bail!("token login: {other:?}"),
                }
                let list = v1::ListFriends {
                    after_user_id: 0,
                    limit: page,
                };
                let list = match asking(&mut c, user_id, &mut retries, || Body::ListFriends(list))
                    .await?
                {
                    Body::FriendList(list) => list,
                    other => bail!("ListFriends: {other:?}"),
                };
                anyhow::Ok((c, list.friends.len() as u64, retries))
            };
            let outcome = attempt.await;
            (t.elapsed(), outcome)
        });
    }
    let (mut latency, mut logged_in, mut errors, mut listed) =
        (crate::stats::latency_histogram(), 0, 0, 0);
    let (mut retried, mut snapshots_over_max) = (0, 0);
    let mut held = Vec::with_capacity(cfg.users);
    while let Some(joined) = tasks.join_next().await {
        let (elapsed, outcome) = joined.context("a login task failed")?;
        match outcome {
            Ok((client, friends, retries)) => {
                if crate::stats::record_latency(&mut latency, elapsed.as_micros() as u64) {
                    snapshots_over_max += 1;
                }
                logged_in += 1;
                listed += friends;
                retried += retries;
                held.push(client);
            }
            Err(e) => {
                if errors < 3 {
                    eprintln!("storm login: {e:#}");
                }
                errors += 1;
            }
        }
    }
    let storm_s = started.elapsed().as_secs_f64();
    let after = observe.sample();
    drop(held);
    let cpu = before
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
    Ok(StormReport {
        scenario: "login-storm",
        provenance: Default::default(),
        users: cfg.users,
        friends_per_user: cfg.friends_per_user,
        concurrency: cfg.concurrency,
        logged_in,
        errors,
        friends_listed: listed,
        retries: retried,
        setup_refusals: refusals.count(),
        storm_s,
        snapshot_ms_p50: ms(&latency, 0.5),
        snapshot_ms_p99: ms(&latency, 0.99),
        snapshot_ms_max: latency.max() as f64 / 1000.0,
        snapshots_over_max,
        server_cpu_s: cpu,
        server_cpu_us_per_login: cpu
            .filter(|_| logged_in > 0)
            .map(|s| s * 1e6 / logged_in as f64),
    })
}

/// Registers (where new) and logs in every name, `SETUP_CONCURRENCY` at a time, in order,
/// counting the server's "later" answers in `refusals`.
pub(super) async fn log_in_all(
    addr: SocketAddr,
    names: &[String],
    password: &str,
    refusals: &Refusals,
) -> anyhow::Result<Vec<(Client, v1::LoginOk)>> {
    let limit = Rc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let (limit, name, password) = (Rc::clone(&limit), name.clone(), password.to_owned());
        let refusals = refusals.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = limit.acquire().await.expect("open semaphore");
            let who = Identity::bench(&name, &password);
            sign_up_tcp(addr, None, &who, &refusals).await
        }));
    }
    // Those logged in ping while the rest sign up (thousands take minutes).
    let mut out = Vec::with_capacity(names.len());
    for (user, failed) in crate::heartbeat::gather(tasks, client_of).await? {
        if let Some(e) = failed {
            return Err(e);
        }
        out.push(user);
    }
    Ok(out)
}

fn client_of(user: &mut (Client, v1::LoginOk)) -> Option<&mut Client> {
    Some(&mut user.0)
}

/// Requests one user may have unanswered, sent and received, in one round of `befriend`: below
/// the server's default `contacts.friend_requests_pending_max` and `_received_max`.
const ROUND_SENT_MAX: usize = 50;
const ROUND_RECEIVED_MAX: usize = 400;

/// Makes every edge (a, b) a friendship: a asks, b accepts, in rounds that keep each user's
/// unanswered requests under the server's limits. Edges that are friendships already (an
/// earlier run) are left as they are. (A user may send `contacts.friend_requests_per_day_max`
/// requests a day: 50 by default.)
async fn befriend(
    users: &mut [(Client, v1::LoginOk)],
    edges: &[(usize, usize)],
) -> anyhow::Result<()> {
    /// Requests each user sends and receives in a round, and the round's edges.
    struct Round {
        sent: Vec<usize>,
        received: Vec<usize>,
        edges: Vec<(usize, usize)>,
    }
    let mut rounds: Vec<Round> = Vec::new();
    for &(a, b) in edges {
        let fits = |r: &Round| r.sent[a] < ROUND_SENT_MAX && r.received[b] < ROUND_RECEIVED_MAX;
        let i = match rounds.iter().position(fits) {
            Some(i) => i,
            None => {
                rounds.push(Round {
                    sent: vec![0; users.len()],
                    received: vec![0; users.len()],
                    edges: Vec::new(),
                });
                rounds.len() - 1
            }
        };
        let round = &mut rounds[i];
        round.sent[a] += 1;
        round.received[b] += 1;
        round.edges.push((a, b));
    }
    for round in rounds {
        befriend_round(users, &round.edges).await?;
    }
    Ok(())
}

async fn befriend_round(
    users: &mut [(Client, v1::LoginOk)],
    edges: &[(usize, usize)],
) -> anyhow::Result<()> {
    let ids: Vec<u64> = users.iter().map(|(_, ok)| ok.user_id).collect();
    let mut asks: Vec<Vec<u64>> = vec![Vec::new(); users.len()];
    for &(a, b) in edges {
        asks[a].push(ids[b]);
    }
    let answered = each_client(users, &asks, |id| {
        Body::FriendRequest(v1::FriendRequest {
            user_id: id,
            message: String::new(),
        })
    })
    .await?;
    // Who must accept whom: the asks that are now pending.
    let index: std::collections::HashMap<u64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut accepts: Vec<Vec<u64>> = vec![Vec::new(); users.len()];
    for (a, replies) in answered.into_iter().enumerate() {
        for (to, state) in replies {
            if state == v1::FriendState::RequestSent {
                accepts[index[&to]].push(ids[a]);
            }
        }
    }
    each_client(users, &accepts, |id| {
        Body::FriendRespond(v1::FriendRespond {
            user_id: id,
            accept: true,
        })
    })
    .await?;
    Ok(())
}

/// Sends `make(target)` for each of each client's targets (pipelined, all clients at once) and
/// returns the `FriendOk` states, per client.
async fn each_client(
    users: &mut [(Client, v1::LoginOk)],
    targets: &[Vec<u64>],
    make: impl Fn(u64) -> Body,
) -> anyhow::Result<Vec<Vec<(u64, v1::FriendState)>>> {
    let mut out = Vec::with_capacity(users.len());
    // Pipelined per client, a window of clients at a time: one request per target.
    for chunk in users
        .chunks_mut(SETUP_CONCURRENCY)
        .zip(targets.chunks(SETUP_CONCURRENCY))
    {
        let (clients, targets) = chunk;
        let mut futures = Vec::with_capacity(clients.len());
        for ((client, _), targets) in clients.iter_mut().zip(targets) {
            let bodies: Vec<(u64, Body)> = targets.iter().map(|t| (*t, make(*t))).collect();
            futures.push(async move {
                let mut sent = Vec::with_capacity(bodies.len());
                for (target, body) in bodies {
                    sent.push((target, client.send(body).await?));
                }
                let mut states = Vec::with_capacity(sent.len());
                for (target, request_id) in sent {
                    match client.reply_to(request_id).await? {
                        Body::FriendOk(ok) => states.push((
                            target,
                            v1::FriendState::try_from(ok.state).unwrap_or_default(),
                        )),
                        other => bail!("friend setup with {target}: {other:?}"),
                    }
                }
                anyhow::Ok(states)
            });
        }
        for states in futures_util::future::try_join_all(futures).await? {
            out.push(states);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::friend_edges;

    fn friends_each(users: usize, k: usize) -> Vec<usize> {
        let mut count = vec![0; users];
        let mut seen = std::collections::HashSet::new();
        for (a, b) in friend_edges(users, k).unwrap() {
            assert_ne!(a, b);
            assert!(seen.insert((a.min(b), a.max(b))), "({a}, {b}) twice");
            count[a] += 1;
            count[b] += 1;
        }
        count
    }

    #[test]
    fn every_user_gets_exactly_k_friends() {
        for (users, k) in [(10, 4), (10, 3), (10, 9), (4, 1), (7, 6), (7, 0), (100, 5)] {
            assert!(
                friends_each(users, k).iter().all(|&n| n == k),
                "{users} users, {k} friends"
            );
        }
    }

    #[test]
    fn impossible_counts_are_refused() {
        assert!(friend_edges(7, 3).is_err());
        assert!(friend_edges(5, 5).is_err());
    }
}

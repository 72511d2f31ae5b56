//! `cluster-pairs`: P pairs of users (and optionally one group) on a ringchat cluster, every
//! client placed by the status service (`GET /assign`). Pairs can be put on the same node or
//! on different nodes, to price the node-to-node hop. When a node goes, its clients reconnect
//! through the status service to the survivors, Sync from the newest seq they saw and resend
//! what was not acked; the report gives each client's reconnects and the time until every
//! client was served again. At the end every conversation is fetched again from seq 0 and
//! checked: gap-free seqs, no message stored twice, every acked message at its acked seq.

mod member;
pub mod status;
mod table;

pub use self::table::table;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ringchat_proto::Body;
use ringchat_proto::v1;
use serde::Serialize;

use self::member::{Live, Member, Outcome};
use self::status::{Identity, Retry, Session};
use super::{Progress, run_id};
use crate::client::conversation_id;
use crate::procstat::ProcSample;
use crate::signup::Refusals;
use crate::stats::{Measurements, Percentiles, per_second};

/// Sign-ups in flight at once during setup.
const SETUP_CONCURRENCY: usize = 16;
/// Members one `GroupCreate` may name (the server's default `groups.invite_batch_max`).
pub const GROUP_MEMBERS_MAX: usize = 100;
/// Problems of the final check spelled out in the report, at most.
const PROBLEMS_MAX: usize = 10;
/// How often each node's CPU is sampled during the load, so that a node that dies still counts
/// the CPU it used up to its last sample.
const CPU_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Where the second user of a pair is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Wherever the status service says (it spreads by load).
    Any,
    /// On the node of the pair's first user: no node-to-node hop for the pushes.
    Same,
    /// On another node than the pair's first user (the status service is asked again).
    Cross,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `http://HOST:PORT/assign` of one or more nodes (or status-only nodes), tried in turn.
    pub status_urls: Vec<String>,
    pub pairs: usize,
    pub placement: Placement,
    /// The first N clients also form one group and send to it every other message (0: none).
    pub group_members: usize,
    /// Group members send only to the group (the group's fan-out alone), not to their peer.
    pub group_only: bool,
    /// Content bytes per message (at least 16).
    pub size: usize,
    /// Unacknowledged sends per client.
    pub window: usize,
    pub duration: Duration,
    /// After sending stops, how long to wait for the last acks, pushes and catch-ups.
    pub drain_timeout: Duration,
    pub user_prefix: String,
    pub password: String,
    pub retry: Retry,
    /// The nodes' pids, to report their CPU (a pid that is gone by the end is left out).
    pub server_pids: Vec<u32>,
    /// Dropped connections are part of the run (a node is stopped on purpose): the clients
    /// come back and nothing is lost. Otherwise any drop (a kick, a reset) makes it unclean.
    pub expect_drops: bool,
}

/// One acknowledged send.
#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    pub conversation_id: u64,
    pub client_msg_id: String,
    pub seq: u64,
    /// The client index (0, 1 = pair 0's users, ...).
    pub sender: usize,
}

/// What the clients share during a run.
pub(crate) struct Shared {
    start: Instant,
    end: Instant,
    progress: Arc<Progress>,
    acked: Mutex<Vec<Acked>>,
    senders_left: AtomicUsize,
    all_sent: tokio::sync::watch::Sender<bool>,
    /// Logins the nodes said "later" to while clients came back after a drop.
    reconnect_refusals: Refusals,
    /// Clients done with the load (at their final check, or ended).
    at_check: AtomicUsize,
    at_check_changed: tokio::sync::Notify,
    /// Set once the nodes' CPU was sampled after the load: the final checks may start.
    sampled: tokio::sync::watch::Sender<bool>,
}

/// Held by a client while it is under load; dropped (also by a panic or an early return) when
/// it is done, so that the CPU sample after the load waits for every client and for no more.
pub(crate) struct UnderLoad(pub(crate) Arc<Shared>);

impl Drop for UnderLoad {
    fn drop(&mut self) {
        self.0.at_check.fetch_add(1, Ordering::AcqRel);
        self.0.at_check_changed.notify_one();
    }
}

impl Shared {
    /// Waits until the CPU after the load was sampled (the final check is not part of it).
    pub(crate) async fn cpu_sampled(&self) {
        let mut sampled = self.sampled.subscribe();
        // Err only if the sender is gone: nothing to wait for then.
        let _ = sampled.wait_for(|s| *s).await;
    }
}

/// Each node's newest good CPU sample, by position in `server_pids`.
type NewestCpu = Arc<Mutex<Vec<Option<ProcSample>>>>;

/// Samples every pid now and then, keeping each one's newest good sample.
fn watch_cpu(pids: Vec<u32>) -> (NewestCpu, tokio::task::JoinHandle<()>) {
    let newest: NewestCpu = Arc::new(Mutex::new(vec![None; pids.len()]));
    let task = tokio::spawn({
        let newest = Arc::clone(&newest);
        async move {
            loop {
                for (i, &pid) in pids.iter().enumerate() {
                    if let Ok(s) = crate::procstat::sample(pid) {
                        newest.lock().expect("not poisoned")[i] = Some(s);
                    }
                }
                tokio::time::sleep(CPU_SAMPLE_EVERY).await;
            }
        }
    });
    (newest, task)
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub scenario: &'static str,
    pub placement: Placement,
    pub pairs: usize,
    /// Pairs whose two users were on different nodes at the start.
    pub cross_node_pairs: usize,
    pub group_members: usize,
    pub group_only: bool,
    /// Nodes the group's members were on at the start.
    pub group_nodes: usize,
    /// Clients per node at the start and at the end.
    pub clients_per_node_start: BTreeMap<String, usize>,
    pub clients_per_node_end: BTreeMap<String, usize>,
    pub size_bytes: usize,
    pub window: usize,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Messages of others each client got, pushed live or caught up by Sync after a reconnect.
    pub delivered: u64,
    pub delivered_msgs_per_s: f64,
    /// Send to live push, over pushes only (a message resent after an outage counts from its
    /// first send).
    pub latency_us: Percentiles,
    pub caught_up: u64,
    /// Syncs a client made because a seq was skipped in its pushes, or because acked messages
    /// had still not come during the drain (their pushes went with a killed owner).
    pub gap_syncs: u64,
    /// Messages a client got twice (pushed before a drop, synced after): kept once by seq.
    pub redelivered: u64,
    /// Live pushes of a seq already pushed on the same connection: the server repeated one.
    pub duplicates: u64,
    /// Sends answered UNAVAILABLE or RATE_LIMITED and resent after the pause asked for.
    pub retried: u64,
    /// Sends never acked before the drain ended (not lost: never acknowledged; but the node
    /// never answered them, so the run is not clean).
    pub abandoned: u64,
    /// Acked messages of others a client never got (neither pushed nor synced).
    pub lost: u64,
    /// Clients whose deliveries could not be checked: the others had not all finished sending
    /// by the retry deadline, so what to expect was never known (`lost` is 0 for them).
    pub deliveries_unchecked: usize,
    pub out_of_order: u64,
    pub corrupt: u64,
    /// Refusals other than UNAVAILABLE / RATE_LIMITED, and clients that reached no node.
    pub errors: u64,
    /// Errors and dropped connections by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Sign-ups the nodes said "later" to (login admission) before the run, each retried
    /// after its `retry_after_ms`.
    pub setup_refusals: u64,
    /// The same during the run, by clients coming back after a drop.
    pub reconnect_refusals: u64,
    /// Final check, by Sync from seq 0 on a live node, over every conversation.
    pub conversations_checked: usize,
    pub conversations_unchecked: usize,
    pub seq_gaps: u64,
    pub stored_twice: u64,
    pub acked_missing: u64,
    /// The first few problems the final check found, spelled out (conversation, id, seqs).
    pub problems: Vec<String>,
    /// Connections dropped during the run (kicks included), whether or not the client came
    /// back; unclean unless `expect_drops`.
    pub drops: u64,
    pub expect_drops: bool,
    pub reconnects: u64,
    pub clients_reconnected: usize,
    pub reconnects_per_client: Vec<usize>,
    /// From the first dropped connection to the moment the last dropped client was logged in
    /// again (none: no drop, or a client never came back).
    pub served_again_ms: Option<u64>,
    /// The longest one client was without a node.
    pub outage_max_ms: Option<u64>,
    pub unserved_clients: usize,
    pub server_pids: Vec<u32>,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub provenance: crate::provenance::Provenance,
    /// Every acked send, for a caller's own check (not in the JSON: it can be long).
    #[serde(skip)]
    pub acked_messages: Vec<Acked>,
}

impl ClusterReport {
    /// Every send was acked, nothing acked was lost, stored twice, reordered or corrupted;
    /// every client came back, and none was dropped unless drops were expected.
    pub fn clean(&self) -> bool {
        (self.expect_drops || self.drops == 0)
            && self.lost == 0
            && self.deliveries_unchecked == 0
            && self.duplicates == 0
            && self.abandoned == 0
            && self.out_of_order == 0
            && self.corrupt == 0
            && self.errors == 0
            && self.seq_gaps == 0
            && self.stored_twice == 0
            && self.acked_missing == 0
            && self.conversations_unchecked == 0
            && self.unserved_clients == 0
    }
}

fn check(cfg: &ClusterConfig) -> anyhow::Result<()> {
    if cfg.status_urls.is_empty() {
        bail!("give at least one --status-url");
    }
    for url in &cfg.status_urls {
        status::check_url(url)?;
    }
    if cfg.size < 16 {
        bail!("--size must be at least 16 bytes (index and timestamp)");
    }
    if cfg.pairs == 0 || cfg.window == 0 {
        bail!("--pairs and --window must be at least 1");
    }
    if cfg.group_members == 1 || cfg.group_members > (2 * cfg.pairs).min(GROUP_MEMBERS_MAX) {
        bail!(
            "--group-members must be 0 or 2..={} (and at most 2 × --pairs)",
            GROUP_MEMBERS_MAX
        );
    }
    Ok(())
}

/// Runs the scenario on the caller's tokio runtime; `progress.done` counts acks.
pub async fn run(cfg: ClusterConfig, progress: Arc<Progress>) -> anyhow::Result<ClusterReport> {
    check(&cfg)?;
    super::ensure_fd_limit(2 * cfg.pairs as u64 + 64)?;
    let cfg = Arc::new(cfg);
    let run = run_id();

    let setup_refusals = Refusals::default();
    let sessions = set_up(&cfg, &setup_refusals).await?;
    let mut lives: Vec<Live> = Vec::with_capacity(sessions.len());
    let mut users = Vec::with_capacity(sessions.len());
    for s in sessions {
        users.push(s.user_id);
        lives.push(Live::new(s));
    }
    let start_nodes: Vec<String> = lives.iter().map(|l| l.node_id.clone()).collect();
    let (group, group_events) = match cfg.group_members {
        0 => (None, 0),
        n => {
            let (g, events) =
                create_group(&mut lives[0], &users[1..n], cfg.retry.step_timeout).await?;
            (Some(g), events)
        }
    };

    let (all_sent, _) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        end: start + cfg.duration,
        progress: Arc::clone(&progress),
        acked: Mutex::new(Vec::new()),
        senders_left: AtomicUsize::new(lives.len()),
        all_sent,
        reconnect_refusals: Refusals::default(),
        at_check: AtomicUsize::new(0),
        at_check_changed: tokio::sync::Notify::new(),
        sampled: tokio::sync::watch::channel(false).0,
    });
    let clients = lives.len();
    let before: Vec<_> = cfg
        .server_pids
        .iter()
        .map(|&p| crate::procstat::sample(p).ok())
        .collect();
    let (newest_cpu, cpu_watch) = watch_cpu(cfg.server_pids.clone());
    let mut tasks = Vec::with_capacity(lives.len());
    for (index, live) in lives.into_iter().enumerate() {
        let peer = index ^ 1;
        let direct = conversation_id(users[index], users[peer]);
        let in_group = group.filter(|_| index < cfg.group_members);
        let mut checks = Vec::new();
        if index.is_multiple_of(2) {
            checks.push(direct);
        }
        if index == 0 {
            checks.extend(group);
        }
        let member = Member {
            index,
            username: username(&cfg.user_prefix, index),
            user_id: users[index],
            peer_id: users[peer],
            direct_conv: direct,
            group: in_group,
            group_events,
            group_only: cfg.group_only,
            checks,
            cfg: Arc::clone(&cfg),
            shared: Arc::clone(&shared),
            run_id: run,
        };
        tasks.push(tokio::spawn(member.run(live)));
    }
    // The CPU after the load: once every client is done with it, before the final checks. A
    // node gone by then counts up to its last sample.
    while shared.at_check.load(Ordering::Acquire) < clients {
        shared.at_check_changed.notified().await;
    }
    cpu_watch.abort();
    let newest_cpu = newest_cpu.lock().expect("not poisoned").clone();
    let after: Vec<_> = cfg
        .server_pids
        .iter()
        .zip(newest_cpu)
        .map(|(&p, newest)| crate::procstat::sample(p).ok().or(newest))
        .collect();
    shared.sampled.send_replace(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.context("a client task panicked")?);
    }
    let server_cpu = (!cfg.server_pids.is_empty()).then(|| {
        before
            .iter()
            .zip(&after)
            .filter_map(|(b, a)| b.zip(*a))
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu))
            .sum::<Duration>()
    });
    let acked = std::mem::take(&mut *shared.acked.lock().expect("not poisoned"));
    let mut report = report(&cfg, start_nodes, outcomes, acked, server_cpu);
    report.setup_refusals = setup_refusals.count();
    report.reconnect_refusals = shared.reconnect_refusals.count();
    Ok(report)
}

fn username(prefix: &str, index: usize) -> String {
    let side = if index.is_multiple_of(2) { "a" } else { "b" };
    format!("{prefix}{side}{}", index / 2)
}

/// Signs up and places every client: pair i is clients 2i and 2i+1. Nodes' "later" answers
/// are counted in `refusals`.
async fn set_up(cfg: &Arc<ClusterConfig>, refusals: &Refusals) -> anyhow::Result<Vec<Session>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = Vec::with_capacity(cfg.pairs);
    for pair in 0..cfg.pairs {
        let (cfg, limit) = (Arc::clone(cfg), Arc::clone(&limit));
        let refusals = refusals.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            let (a_name, b_name) = (
                username(&cfg.user_prefix, 2 * pair),
                username(&cfg.user_prefix, 2 * pair + 1),
            );
            let (who_a, who_b) = (
                Identity::bench(&a_name, &cfg.password),
                Identity::bench(&b_name, &cfg.password),
            );
            let urls = &cfg.status_urls;
            let seed = pair as u64;
            let r = &refusals;
            let (a, _) = status::connect(urls, 2 * pair, &who_a, &cfg.retry, None, seed, r)
                .await
                .with_context(|| format!("placing {a_name}"))?;
            let b = match cfg.placement {
                Placement::Same => {
                    let step = cfg.retry.step_timeout;
                    status::log_in(a.node_id.clone(), a.addr, &who_b, step, r).await
                }
                Placement::Cross => status::connect(
                    urls,
                    2 * pair + 1,
                    &who_b,
                    &cfg.retry,
                    Some(&a.node_id),
                    seed,
                    r,
                )
                .await
                .map(|(s, _)| s),
                Placement::Any => {
                    status::connect(urls, 2 * pair + 1, &who_b, &cfg.retry, None, seed, r)
                        .await
                        .map(|(s, _)| s)
                }
            }
            .with_context(|| format!("placing {b_name}"))?;
            anyhow::Ok((a, b))
        }));
    }
    let mut sessions = Vec::with_capacity(2 * cfg.pairs);
    for t in tasks {
        let (a, b) = t.await.context("a setup task panicked")??;
        sessions.push(a);
        sessions.push(b);
    }
    Ok(sessions)
}

/// Creates the group: its conversation id and the seq of its creation event (the seqs up to
/// it are the group's own events, not the load's).
async fn create_group(
    creator: &mut Live,
    members: &[u64],
    timeout: Duration,
) -> anyhow::Result<(u64, u64)> {
    let body = Body::GroupCreate(v1::GroupCreate {
        name: "bench cluster group".into(),
        member_ids: members.to_vec(),
        join_policy: v1::JoinPolicy::Open as i32,
        ..Default::default()
    });
    match creator.request(body, timeout, |_| {}).await? {
        Body::GroupCreated(g) => Ok((
            g.group
                .context("GroupCreated without a group")?
                .conversation_id,
            g.event_seq,
        )),
        Body::Error(e) => bail!("creating the group: {} {}", e.code, e.message),
        other => bail!("creating the group: {}", ringchat_proto::body_name(&other)),
    }
}

fn report(
    cfg: &ClusterConfig,
    start_nodes: Vec<String>,
    outcomes: Vec<Outcome>,
    acked: Vec<Acked>,
    server_cpu: Option<Duration>,
) -> ClusterReport {
    let mut total = Measurements::default();
    let (mut caught_up, mut redelivered, mut retried, mut abandoned, mut lost) = (0, 0, 0, 0, 0);
    let mut gap_syncs = 0;
    let mut problems = Vec::new();
    let mut clients_per_node_start: BTreeMap<String, usize> = BTreeMap::new();
    let mut clients_per_node_end: BTreeMap<String, usize> = BTreeMap::new();
    for n in &start_nodes {
        *clients_per_node_start.entry(n.clone()).or_default() += 1;
    }
    let mut reconnects_per_client = Vec::with_capacity(outcomes.len());
    let (mut first_drop, mut last_served, mut outage_max): (
        Option<Instant>,
        Option<Instant>,
        Option<Duration>,
    ) = (None, None, None);
    let mut unserved_clients = 0;
    let mut drops = 0u64;
    let mut deliveries_unchecked = 0;
    let mut synced: Vec<(u64, Result<Vec<v1::Message>, String>)> = Vec::new();
    for o in outcomes {
        total.merge(&o.m);
        caught_up += o.caught_up;
        redelivered += o.redelivered;
        retried += o.retried;
        abandoned += o.abandoned;
        lost += o.missing;
        deliveries_unchecked += usize::from(o.unchecked);
        if let Some(n) = &o.last_node {
            *clients_per_node_end.entry(n.clone()).or_default() += 1;
        }
        gap_syncs += o.gap_syncs;
        problems.extend(o.disorder.iter().cloned());
        drops += o.outages.len() as u64;
        reconnects_per_client.push(o.outages.iter().filter(|x| x.served_at.is_some()).count());
        for x in &o.outages {
            first_drop = Some(first_drop.map_or(x.dropped_at, |t| t.min(x.dropped_at)));
            match x.served_at {
                Some(s) => {
                    last_served = Some(last_served.map_or(s, |t| t.max(s)));
                    let d = s - x.dropped_at;
                    outage_max = Some(outage_max.map_or(d, |m| m.max(d)));
                }
                None => unserved_clients += 1,
            }
        }
        synced.extend(o.synced);
    }
    let (checked, unchecked, seq_gaps, stored_twice, acked_missing) =
        verify(&synced, &acked, &mut total, &mut problems);
    let cross_node_pairs = start_nodes
        .chunks(2)
        .filter(|p| p.len() == 2 && p[0] != p[1])
        .count();
    let group_nodes = {
        let mut g: Vec<&String> = start_nodes.iter().take(cfg.group_members).collect();
        g.sort();
        g.dedup();
        g.len()
    };
    let whole_secs = cfg.duration.as_secs().max(1) as usize;
    let in_window: u64 = total.delivered_per_s.iter().take(whole_secs).sum();
    ClusterReport {
        scenario: "cluster-pairs",
        placement: cfg.placement,
        pairs: cfg.pairs,
        cross_node_pairs,
        group_members: cfg.group_members,
        group_only: cfg.group_only,
        group_nodes,
        clients_per_node_start,
        clients_per_node_end,
        size_bytes: cfg.size,
        window: cfg.window,
        duration_s: cfg.duration.as_secs_f64(),
        sent: total.sent,
        acked: total.acked,
        delivered: total.delivered,
        delivered_msgs_per_s: per_second(in_window, Duration::from_secs(whole_secs as u64)),
        latency_us: total.percentiles(),
        caught_up,
        gap_syncs,
        redelivered,
        duplicates: total.faults.duplicates,
        retried,
        abandoned,
        lost,
        deliveries_unchecked,
        out_of_order: total.faults.out_of_order,
        corrupt: total.faults.corrupt,
        errors: total.faults.errors,
        error_kinds: total.error_kinds.clone(),
        // Filled in by `run`.
        setup_refusals: 0,
        reconnect_refusals: 0,
        conversations_checked: checked,
        conversations_unchecked: unchecked,
        seq_gaps,
        stored_twice,
        acked_missing,
        problems,
        drops,
        expect_drops: cfg.expect_drops,
        reconnects: reconnects_per_client.iter().sum::<usize>() as u64,
        clients_reconnected: reconnects_per_client.iter().filter(|&&n| n > 0).count(),
        reconnects_per_client,
        served_again_ms: first_drop
            .zip(last_served)
            .filter(|_| unserved_clients == 0)
            .map(|(d, s)| s.saturating_duration_since(d).as_millis() as u64),
        outage_max_ms: outage_max.map(|d| d.as_millis() as u64),
        unserved_clients,
        server_pids: cfg.server_pids.clone(),
        server_cpu_s: server_cpu.map(|c| c.as_secs_f64()),
        server_cpu_us_per_msg: server_cpu
            .filter(|_| total.delivered > 0)
            .map(|c| c.as_secs_f64() * 1e6 / total.delivered as f64),
        provenance: Default::default(),
        acked_messages: acked,
    }
}

/// The final check of each fetched conversation: (checked, unchecked, seq gaps, messages
/// stored twice, acked messages missing or at another seq).
fn verify(
    synced: &[(u64, Result<Vec<v1::Message>, String>)],
    acked: &[Acked],
    total: &mut Measurements,
    problems: &mut Vec<String>,
) -> (usize, usize, u64, u64, u64) {
    let mut note = |p: String| {
        if problems.len() < PROBLEMS_MAX {
            problems.push(p);
        }
    };
    let mut by_conv: HashMap<u64, Vec<&Acked>> = HashMap::new();
    for a in acked {
        by_conv.entry(a.conversation_id).or_default().push(a);
    }
    let (mut checked, mut unchecked, mut gaps, mut twice, mut missing) = (0, 0, 0, 0, 0);
    for (conv, result) in synced {
        let messages = match result {
            Ok(m) => m,
            Err(why) => {
                unchecked += 1;
                total.error(&format!(
                    "final Sync failed: {}",
                    why.chars().take(60).collect::<String>()
                ));
                continue;
            }
        };
        checked += 1;
        for (i, m) in messages.iter().enumerate() {
            if m.seq != i as u64 + 1 {
                gaps += 1;
                note(format!(
                    "conversation {conv}: seq {} at position {}",
                    m.seq,
                    i + 1
                ));
            }
        }
        let mut ids: HashMap<(u64, &str), u64> = HashMap::new();
        for m in messages.iter().filter(|m| !m.client_msg_id.is_empty()) {
            if let Some(first) = ids.insert((m.from_user_id, m.client_msg_id.as_str()), m.seq) {
                twice += 1;
                note(format!(
                    "conversation {conv}: {} from user {} stored at seqs {first} and {}",
                    m.client_msg_id, m.from_user_id, m.seq
                ));
            }
        }
        let stored: HashMap<&str, u64> = messages
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m.seq))
            .collect();
        for a in by_conv.get(conv).into_iter().flatten() {
            let got = stored.get(a.client_msg_id.as_str());
            if got != Some(&a.seq) {
                missing += 1;
                note(format!(
                    "conversation {conv}: {} acked at seq {}, stored at {got:?}",
                    a.client_msg_id, a.seq
                ));
            }
        }
    }
    (checked, unchecked, gaps, twice, missing)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A one-pair configuration for tests of the checks.
    pub(in crate::scenario::cluster) fn config() -> ClusterConfig {
        ClusterConfig {
            status_urls: Vec::new(),
            pairs: 1,
            placement: Placement::Any,
            group_members: 0,
            group_only: false,
            size: 16,
            window: 1,
            duration: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            user_prefix: "t_".into(),
            password: "p".into(),
            retry: Retry::default(),
            server_pids: Vec::new(),
            expect_drops: false,
        }
    }

    #[test]
    fn a_dropped_client_makes_the_run_unclean_unless_drops_were_expected() {
        let nodes = vec!["n1".to_owned(), "n1".to_owned()];
        let dropped = || Outcome {
            last_node: Some("n1".into()),
            outages: vec![member::Outage {
                dropped_at: Instant::now(),
                served_at: Some(Instant::now()),
            }],
            ..Outcome::default()
        };
        let quiet = || Outcome {
            last_node: Some("n1".into()),
            ..Outcome::default()
        };
        let r = report(
            &config(),
            nodes.clone(),
            vec![dropped(), quiet()],
            Vec::new(),
            None,
        );
        assert_eq!((r.drops, r.reconnects), (1, 1), "{r:?}");
        assert!(
            !r.clean(),
            "a kick or reset on a healthy cluster is a fault: {r:?}"
        );
        assert!(table(&r).contains("(none expected)"), "{}", table(&r));
        let expected = ClusterConfig {
            expect_drops: true,
            ..config()
        };
        let r = report(&expected, nodes, vec![dropped(), quiet()], Vec::new(), None);
        assert!(r.clean(), "{r:?}");
    }

    #[test]
    fn a_client_whose_deliveries_went_unchecked_makes_the_run_unclean() {
        let nodes = vec!["n1".to_owned(), "n1".to_owned()];
        let checked = || Outcome {
            last_node: Some("n1".into()),
            ..Outcome::default()
        };
        let r = report(
            &config(),
            nodes.clone(),
            vec![checked(), checked()],
            Vec::new(),
            None,
        );
        assert!(r.clean(), "{r:?}");
        // The others' acks never came together by the deadline: nothing was compared.
        let unchecked = Outcome {
            unchecked: true,
            ..checked()
        };
        let r = report(
            &config(),
            nodes,
            vec![checked(), unchecked],
            Vec::new(),
            None,
        );
        assert_eq!((r.lost, r.deliveries_unchecked), (0, 1), "{r:?}");
        assert!(!r.clean(), "{r:?}");
        assert!(table(&r).contains("unchecked clients 1"), "{}", table(&r));
    }
}

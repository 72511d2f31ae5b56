//! `ringchat-bench`: the bundled load generator.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringchat_bench::provenance::Provenance;
use ringchat_bench::report;
use ringchat_bench::scenario::Observe;
use ringchat_bench::scenario::cluster;
use ringchat_bench::scenario::connect::{self, ConnectConfig};
use ringchat_bench::scenario::files::{self, FilesConfig};
use ringchat_bench::scenario::group::{self, GroupConfig};
use ringchat_bench::scenario::pairs::{self, PairsConfig};
use ringchat_bench::scenario::presence::{self, FanoutConfig, StormConfig};
use ringchat_bench::scenario::room::{self, RoomConfig};
use ringchat_bench::scenario::storm::{self, StormLogin};
use ringchat_bench::transport::Transport;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ringchat-bench",
    version,
    about = "Load generator for ringchat: speaks the real protocol, verifies every message, and reports the server's CPU per message"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// P pairs of users message each other; reports throughput, latency percentiles, losses.
    Pairs(PairsArgs),
    /// Open N authenticated idle connections and hold them; reports memory per connection.
    Connect(ConnectArgs),
    /// One user with F online friends changes presence T times; reports the server CPU per
    /// delivered presence update (run the server with presence.quiet_period_ms = 0).
    PresenceFanout(PresenceFanoutArgs),
    /// U users with K friends each log in at once and list their friends with presence;
    /// reports the time to that first snapshot and the server CPU per login.
    LoginStorm(LoginStormArgs),
    /// P pairs exchange messages at a fixed rate while M other clients connect and log in at
    /// once (a reconnect storm); reports the pairs' latency before, during and after the storm,
    /// the time until all M are logged in, and every refusal, retry and reset.
    Storm(StormArgs),
    /// One group of M members, O online, S of them sending; every online member checks every
    /// message (once, in seq order); reports deliveries/s and the server CPU per delivery.
    Group(GroupArgs),
    /// M members join one chat room and S of them send at an aggregate rate R; every member
    /// checks every other sender's messages (once, in room_seq order); reports latency,
    /// deliveries per second and the server CPU per delivery.
    Room(RoomArgs),
    /// P pairs (and optionally one group) on a cluster, every client placed by the status
    /// service and reconnecting through it when its node goes; reports latency, server CPU
    /// per message over all nodes, reconnects and the time until every client is served
    /// again, then checks every conversation by Sync.
    ClusterPairs(ClusterArgs),
    /// Concurrent uploads of a mix of file sizes over the HTTP API on the WebSocket port, then
    /// downloads of each, every one checked by SHA-256; reports MB/s each way, latency per
    /// request kind and the server CPU per MB.
    Files(FilesArgs),
}

#[derive(Args)]
struct FilesArgs {
    #[command(flatten)]
    common: Common,
    /// The HTTP API: the server's WebSocket listener (gateway.ws_listen), HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7001")]
    http: String,
    /// Users that upload (signed up through the protocol on --addr).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Files to upload, spread over the users.
    #[arg(long, default_value_t = 64)]
    files: usize,
    /// File sizes, cycled through, comma-separated: 16k, 1MiB, 8m (k, m, g are 1024-based).
    #[arg(long, default_value = "16k,256k,1m,8m", value_delimiter = ',', value_parser = files::parse_size)]
    sizes: Vec<u64>,
    /// Downloads of each file, once all uploads are done.
    #[arg(long, default_value_t = 2)]
    downloads_per_file: usize,
    /// HTTP requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// No upload or download starts after this long, e.g. 30s.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Args)]
struct ClusterArgs {
    /// The status service: `http://HOST:PORT/assign` of any node's WebSocket listener (or of
    /// a `--role status` node); repeat it to fall back to the others.
    #[arg(long = "status-url", required = true)]
    status_urls: Vec<String>,
    /// Number of user pairs; each pair exchanges messages both ways.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Where each pair's second user goes: wherever the status service says, on the first
    /// user's node, or on another node.
    #[arg(long, value_enum, default_value = "any")]
    placement: ClusterPlacement,
    /// The first N users also form one group and send every other message to it (0: none).
    #[arg(long, default_value_t = 0)]
    group_members: usize,
    /// Group members send only to the group (measures the group's fan-out alone).
    #[arg(long)]
    group_only: bool,
    /// Content bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Unacknowledged messages each user may have in flight.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// How long to send, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After sending stops, how long to wait for the last acks, pushes and catch-ups.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Attempts to reach a node (ask the status service, connect, log in) before a user gives up.
    #[arg(long, default_value_t = 40)]
    reconnect_attempts: u32,
    /// No reconnect attempt starts after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    reconnect_deadline: Duration,
    /// A request unanswered this long ends the connection (the user reconnects).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    reply_timeout: Duration,
    /// A node's pid, to add its CPU to the report; repeat for every node.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Dropped connections are expected (a node is stopped during the run); without this a
    /// drop or kick makes the run unclean.
    #[arg(long)]
    expect_drops: bool,
    /// Worker threads of the load generator (default: one per online core).
    #[arg(long)]
    threads: Option<usize>,
    /// Prefix of the user names the benchmark creates or reuses.
    #[arg(long, default_value = "bench_")]
    user_prefix: String,
    /// Password of those users.
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

type ClusterPlacement = ringchat_bench::scenario::cluster::Placement;

#[derive(Args)]
struct GroupArgs {
    #[command(flatten)]
    common: Common,
    /// Members of the group (signed up through the protocol; reused by later runs).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Members logged in during the run (the first O); the others stay offline.
    #[arg(long, default_value_t = 100)]
    online: usize,
    /// Online members that send.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Content bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Unacknowledged messages each sender may have in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Send at this total rate (messages per second over all senders) instead of as fast as
    /// the window allows.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After sending stops, how long to wait for the last acks and pushes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Users per GroupCreate / GroupInvite (the server's groups.invite_batch_max).
    #[arg(long, default_value_t = 100)]
    invite_batch: usize,
    /// Each online member acknowledges delivery at most this often, as a group client does
    /// (0s: never).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ack_every: Duration,
}

#[derive(Args)]
struct RoomArgs {
    #[command(flatten)]
    common: Common,
    /// Members in the room, each a user with one connection.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Members that send (the first S).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Content bytes per message (at least 20).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second over all senders together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After sending stops, how long to wait for the last deliveries.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[derive(Args)]
struct PresenceFanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Friends of the user who changes state, all online.
    #[arg(long, default_value_t = 1000)]
    friends: usize,
    /// Presence changes (alternately away and online).
    #[arg(long, default_value_t = 200)]
    changes: usize,
}

#[derive(Args)]
struct LoginStormArgs {
    #[command(flatten)]
    common: Common,
    /// Users logging in at once.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Friends each user has (made first, through the protocol).
    #[arg(long, default_value_t = 100)]
    friends: usize,
    /// Logins in flight at once during the storm.
    #[arg(long, default_value_t = 10_000)]
    concurrency: usize,
}

#[derive(Args)]
struct StormArgs {
    #[command(flatten)]
    common: Common,
    /// Established pairs of users exchanging messages throughout.
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Content bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Unacknowledged messages each pair sender may have in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// The pairs' messages per second over all senders; latency counts from when each was due.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Steady state before the storm (the "before" latency), e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// How long the pairs go on after the last storm login (the "after" latency).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    after: Duration,
    /// After sending stops, how long to wait for the pairs' last acks and pushes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Clients connecting and logging in at once (users signed up or reused first).
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// How the storm clients log in: with the token each got beforehand, or by password.
    #[arg(long, value_enum, default_value = "token")]
    storm_login: StormLogin,
    /// Storm connections being connected or logged in at once, per load thread.
    #[arg(long, default_value_t = 512)]
    storm_concurrency: usize,
    /// A storm client not logged in this long after the storm began gives up (a failure).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    storm_timeout: Duration,
}

#[derive(Args)]
struct Common {
    /// Server TCP address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// The server's pid, to report its CPU and memory; found by name ("ringchat") if omitted
    /// and exactly one runs.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Load threads, each a single-threaded event loop (default: one per online core).
    #[arg(long)]
    threads: Option<usize>,
    /// Prefix of the user names the benchmark creates or reuses.
    #[arg(long, default_value = "bench_")]
    user_prefix: String,
    /// Password of those users.
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// The server's admin listener, read for its build and settings (the report names them);
    /// "off" to skip.
    #[arg(long, default_value = "127.0.0.1:8080")]
    admin: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct PairsArgs {
    #[command(flatten)]
    common: Common,
    /// Number of user pairs; each pair exchanges messages both ways.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// How to reach the server: `tcp` (length-prefixed frames) or `ws` (binary WebSocket
    /// messages on /ws; point --addr at gateway.ws_listen).
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Content bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Unacknowledged messages each sender may have in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// How long to send, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Send at this total rate (messages per second over all senders) instead of as fast as
    /// the window allows; latency then counts from when each message was due.
    #[arg(long)]
    rate: Option<f64>,
    /// After sending stops, how long to wait for the last acks and pushes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Write an HTML report with charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Receivers do not acknowledge delivery (by default they send one `DeliveryAck` per read
    /// batch, as a real client does); for comparison only.
    #[arg(long)]
    no_delivery_ack: bool,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open, log in and hold.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// How long to hold them before each memory sample (they ping at the server's heartbeat
    /// interval meanwhile, and must all still answer after the last sample).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))
}

fn observe(common: &Common) -> Observe {
    let server_pid = common
        .server_pid
        .or_else(ringchat_bench::procstat::find_server);
    if server_pid.is_none() {
        eprintln!(
            "note: no --server-pid and no single local `ringchat` process: server CPU and memory are not reported"
        );
    }
    Observe {
        server_pid,
        progress: !common.quiet,
    }
}

fn provenance(common: &Common) -> Provenance {
    let admin = match common.admin.as_str() {
        "off" | "" => None,
        addr => resolve(addr).ok(),
    };
    Provenance::collect(admin)
}

fn threads(common: &Common) -> usize {
    common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    // Before anything allocates much: mimalloc asks for transparent huge pages on its arenas,
    // and with the kernel's `defrag = madvise` (a common default) each first touch of a huge
    // page may compact memory synchronously. On a box whose memory is mostly page cache that
    // took seconds of the load generator's CPU as a run started (91 % of its samples in
    // clear_page_erms), which the run then counted as the server's latency.
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("ringchat-bench: could not turn transparent huge pages off: {err}");
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("ringchat-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: the run finished but saw losses, duplicates, disorder or errors.
fn run() -> anyhow::Result<bool> {
    match Cli::parse().scenario {
        Scenario::Pairs(a) => {
            let cfg = PairsConfig {
                addr: resolve(&a.common.addr)?,
                transport: a.transport,
                pairs: a.pairs,
                size: a.size,
                window: a.window,
                duration: a.duration,
                rate: a.rate,
                threads: threads(&a.common),
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
                drain_timeout: a.drain_timeout,
                delivery_ack: !a.no_delivery_ack,
            };
            let mut r = pairs::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::pairs_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            if let Some(path) = &a.html {
                std::fs::write(path, report::pairs_html(&r))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !r.clean() {
                eprintln!("ringchat-bench: messages were lost, duplicated, reordered or refused");
            }
            Ok(r.clean())
        }
        Scenario::Connect(a) => {
            let cfg = ConnectConfig {
                addr: resolve(&a.common.addr)?,
                conns: a.conns,
                hold: a.hold,
                threads: threads(&a.common),
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = connect::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::connect_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            Ok(r.errors == 0 && r.connected == r.conns as u64)
        }
        Scenario::PresenceFanout(a) => {
            let cfg = FanoutConfig {
                addr: resolve(&a.common.addr)?,
                friends: a.friends,
                changes: a.changes,
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = presence::run_fanout(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::fanout_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            Ok(r.clean())
        }
        Scenario::Group(a) => {
            let cfg = GroupConfig {
                addr: resolve(&a.common.addr)?,
                members: a.members,
                online: a.online,
                senders: a.senders,
                size: a.size,
                window: a.window,
                rate: a.rate,
                duration: a.duration,
                threads: threads(&a.common),
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
                drain_timeout: a.drain_timeout,
                invite_batch: a.invite_batch,
                ack_every: a.ack_every,
            };
            let mut r = group::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::group_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            if !r.clean() {
                eprintln!("ringchat-bench: messages were lost, duplicated, reordered or refused");
            }
            Ok(r.clean())
        }
        Scenario::LoginStorm(a) => {
            let cfg = StormConfig {
                addr: resolve(&a.common.addr)?,
                users: a.users,
                friends_per_user: a.friends,
                concurrency: a.concurrency,
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = presence::run_storm(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::storm_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            Ok(r.errors == 0 && r.friends_listed == (r.users * r.friends_per_user) as u64)
        }
        Scenario::Storm(a) => {
            let cfg = storm::StormConfig {
                addr: resolve(&a.common.addr)?,
                pairs: a.pairs,
                size: a.size,
                window: a.window,
                rate: a.rate,
                warmup: a.warmup,
                after: a.after,
                drain_timeout: a.drain_timeout,
                storm: a.storm,
                storm_login: a.storm_login,
                storm_concurrency: a.storm_concurrency,
                storm_timeout: a.storm_timeout,
                threads: threads(&a.common),
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = storm::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", storm::table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            if r.reset_before_reply > 0 {
                eprintln!(
                    "ringchat-bench: {} storm connections were accepted and then reset before any reply",
                    r.reset_before_reply
                );
            }
            if !r.clean() {
                eprintln!(
                    "ringchat-bench: pair messages were lost, duplicated or reordered, or storm clients failed to log in or stay"
                );
            }
            Ok(r.clean())
        }
        Scenario::ClusterPairs(a) => run_cluster(a),
        Scenario::Files(a) => {
            let cfg = FilesConfig {
                addr: resolve(&a.common.addr)?,
                http: resolve(&a.http)?,
                users: a.users,
                files: a.files,
                sizes: a.sizes,
                downloads_per_file: a.downloads_per_file,
                concurrency: a.concurrency,
                duration: a.duration,
                threads: threads(&a.common),
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = files::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", files::table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            if !r.clean() {
                eprintln!("ringchat-bench: requests failed or downloads did not match");
            }
            Ok(r.clean())
        }
        Scenario::Room(a) => {
            let cfg = RoomConfig {
                addr: resolve(&a.common.addr)?,
                members: a.members,
                senders: a.senders,
                size: a.size,
                rate: a.rate,
                duration: a.duration,
                drain_timeout: a.drain_timeout,
                user_prefix: a.common.user_prefix.clone(),
                password: a.common.password.clone(),
            };
            let mut r = room::run(&cfg, &observe(&a.common))?;
            r.provenance = provenance(&a.common);
            print!("{}", report::room_table(&r));
            if let Some(path) = &a.common.json {
                report::write_json(path, &r)?;
            }
            if !r.clean() {
                eprintln!(
                    "ringchat-bench: room messages were lost, duplicated, reordered or refused"
                );
            }
            Ok(r.clean())
        }
    }
}

fn run_cluster(a: ClusterArgs) -> anyhow::Result<bool> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cfg = cluster::ClusterConfig {
        status_urls: a.status_urls,
        pairs: a.pairs,
        placement: a.placement,
        group_members: a.group_members,
        group_only: a.group_only,
        size: a.size,
        window: a.window,
        duration: a.duration,
        drain_timeout: a.drain_timeout,
        user_prefix: a.user_prefix,
        password: a.password,
        retry: cluster::status::Retry {
            attempts_max: a.reconnect_attempts,
            deadline: a.reconnect_deadline,
            step_timeout: a.reply_timeout,
            ..Default::default()
        },
        server_pids: a.server_pids,
        expect_drops: a.expect_drops,
    };
    let progress = std::sync::Arc::new(ringchat_bench::scenario::Progress::default());
    let printer = ringchat_bench::scenario::spawn_progress(
        std::sync::Arc::clone(&progress),
        "acked",
        !a.quiet,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let result = rt.block_on(cluster::run(cfg, std::sync::Arc::clone(&progress)));
    progress
        .finished
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(p) = printer {
        p.thread().unpark();
        let _ = p.join();
    }
    let mut r = result?;
    r.provenance = Provenance::collect(None);
    print!("{}", cluster::table(&r));
    if let Some(path) = &a.json {
        report::write_json(path, &r)?;
    }
    if !r.clean() {
        eprintln!(
            "ringchat-bench: acked messages were lost, stored twice or out of order, or a client never came back"
        );
    }
    Ok(r.clean())
}

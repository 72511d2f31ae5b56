//! The configuration file: one TOML file, `RINGCHAT_<SECTION>__<KEY>` environment overrides,
//! the overrides file of live changes (`PATCH /api/config`), unknown keys rejected, and every
//! problem reported at once, located (`load.rs`). `live.rs`: which keys change at run time.

pub mod host;
pub mod live;
pub mod load;
// Listener clashes and TLS files: what serve would refuse at start.
mod preflight;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use ringchat_backend::config::ObserveConfig;
use ringchat_backend::config::RoomsConfig;
use ringchat_backend::config::{
    AccountsConfig, AdminConfig, BackendConfig, EmailConfig, LoginConfig, PresenceConfig, Settings,
    StorageConfig,
};
use ringchat_backend::config::{ContactsConfig, GroupsConfig, Limits};
use ringchat_backend::config::{NotificationsConfig, PushConfig};
use ringchat_backend::logs::LogConfig;
use serde::{Deserialize, Serialize};

pub use crate::security::SecurityConfig;
pub use host::{HostCpus, online_cores};
use load::{Layers, Loaded, TextLayer};

/// Prefix of environment overrides; `__` separates the section from the key.
pub const ENV_PREFIX: &str = "RINGCHAT_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub backend: BackendConfig,
    pub storage: StorageConfig,
    pub accounts: AccountsConfig,
    pub login: LoginConfig,
    pub limits: Limits,
    pub admin: AdminConfig,
    pub contacts: ContactsConfig,
    pub email: EmailConfig,
    pub presence: PresenceConfig,
    pub groups: GroupsConfig,
    pub rooms: RoomsConfig,
    pub log: LogConfig,
    pub notifications: NotificationsConfig,
    pub push: PushConfig,
    pub security: SecurityConfig,
    pub observe: ObserveConfig,
    pub backup: ringchat_backend::backup::BackupConfig,
    pub cluster: ringchat_backend::config::ClusterConfig,
    pub files: ringchat_backend::config::FilesConfig,
}

/// Which I/O driver the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring, or epoll where io_uring cannot start (blocked by seccomp, old kernel, memlock).
    Auto,
    IoUring,
    Epoll,
}

/// `"auto"` or a list of core ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cores {
    Named(String),
    List(Vec<usize>),
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub server_name: String,
    /// Client TCP listener (length-prefixed frames); "" is off.
    pub tcp_listen: String,
    /// WebSocket listener (`/ws`) that also serves the chat page (`/`); "" is off.
    pub ws_listen: String,
    /// TLS listener (length-prefixed frames inside TLS); used when `[gateway.tls]` is set.
    pub tls_listen: String,
    /// WebSocket-over-TLS listener (wss, and the chat page); used when `[gateway.tls]` is set.
    pub wss_listen: String,
    /// One shard per listed core, pinned to it; `"auto"`: one per online core not given to the
    /// backend, no more than the cgroup's CPU quota, not pinned when the quota capped them
    /// (`Config::shard_plan_on`).
    pub cores: Cores,
    pub driver: Driver,
    /// io_uring submission queue entries per shard.
    pub io_uring_entries: u32,
    /// Time from accept to a successful login.
    pub handshake_timeout_ms: u64,
    /// Announced to clients: how often they should ping.
    pub heartbeat_interval_ms: u64,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_ms: u64,
    /// Frames queued for one connection; past it the connection is kicked as a slow consumer.
    pub outbound_frames_max: usize,
    /// Bytes of the frames queued for one connection (a reply, a sync page or a resume's
    /// batches, is held to half of it: `login.resume_bytes_max`); past it the connection is
    /// kicked as a slow consumer. One frame is always taken.
    pub outbound_bytes_max: u32,
    /// Bytes of the frames queued for all of one shard's connections together; past it the
    /// connections whose backlogs free the most are kicked as slow consumers. Bounds the memory
    /// many connections that each stay under `outbound_bytes_max` can pin.
    pub outbound_bytes_per_shard_max: u64,
    /// A connection whose queue has not once been empty for this long is kicked as a slow
    /// consumer: a client that reads a little now and then is never idle, and never past a
    /// limit, yet would hold its backlog for ever.
    pub outbound_drain_timeout_ms: u64,
    pub conns_per_shard_max: usize,
    /// Connections one client (an IPv4 address, an IPv6 /64: `ringchat_backend::client_key`)
    /// holds on one shard before they have logged in, from accept (after a PROXY header, on
    /// its address) until the login succeeds or the connection closes; past it a new one is
    /// told `SERVER_FULL` like a full shard's and closed. Counted per shard, with no lock: a
    /// client spread over N shards gets up to N times this. Logged-in sessions never count.
    pub prelogin_conns_per_ip_max: usize,
    /// The same count for an IPv6 client's whole network (its /48, one site's allocation:
    /// `ringchat_backend::share_key`), all its /64s together: one holder of a /48 has 65,536
    /// /64s, each a fresh `prelogin_conns_per_ip_max`. IPv4 clients are counted per address only.
    pub prelogin_conns_per_network_max: usize,
    /// Logins (and registrations, account requests before login) one shard has waiting for
    /// the backend at once; a client (`ringchat_backend::share_key`: an IPv4 address, an IPv6
    /// /48) may take idle ones, but of the last quarter a sixteenth of them at most, kept for
    /// the other clients. Past either a Login is answered `SERVER_FULL` with a
    /// `retry_after_ms` and the connection closed. Logged-in clients are never counted nor
    /// refused.
    pub logins_in_flight_per_shard_max: usize,
    /// Base of the `retry_after_ms` a refused login is told: uniform in [base, 2 × base).
    pub login_retry_after_ms: u64,
    /// Logins (and other pre-login requests) one shard hands to the backend per second at
    /// most; faster arrivals wait their turn holding a login slot (`shard/login_pace.rs`).
    /// 0: not paced.
    pub logins_per_second_per_shard: u32,
    /// Logins a shard that was quiet lets through at once before the pace applies.
    pub login_burst_per_shard: u32,
    /// TLS handshakes one shard starts per second at most (their crypto runs on the shard's
    /// core), a quarter of them per client (`ringchat_backend::share_key`: an IPv4 address, an
    /// IPv6 /48); past it a new TLS connection is closed once its ClientHello is in, before any
    /// crypto (`shard/tls_gate.rs`). 0: not paced.
    pub tls_handshakes_per_shard_per_s: u32,
    /// TLS handshakes one shard has under way at once (from the whole ClientHello until done), a
    /// quarter of them per client (`share_key`); past it a new one is closed before any crypto.
    pub tls_handshakes_in_flight_per_shard_max: usize,
    /// Events (replies, pushes) waiting for one shard.
    pub queue_events_max: usize,
    /// Size of the pooled read buffers.
    pub read_buffer_bytes: usize,
    /// Pooled buffers kept per shard when idle.
    pub pool_buffers_max: usize,
    /// How long shutdown waits for clients to be told and flushed.
    pub shutdown_timeout_ms: u64,
    /// Load balancers (addresses or CIDR ranges) whose connections must open with a PROXY
    /// header (v1 or v2), whose source address is then the client's (`crate::proxy_protocol`).
    /// Empty: off, every peer is the client.
    pub proxy_protocol_from: Vec<String>,
    pub tls: TlsConfig,
    pub files: FilesPipeConfig,
    pub status_http: StatusHttpConfig,
}

/// Default `gateway.logins_in_flight_per_shard_max`: enough to keep the backend's login slots
/// (`backend.logins_in_flight_max`) busy from a few shards, few enough that a storm queues in
/// clients' back-off, not in the server.
pub const LOGINS_IN_FLIGHT_PER_SHARD_DEFAULT: usize = 1024;

/// Default `gateway.prelogin_conns_per_ip_max`: the shard's login slots
/// (`LOGINS_IN_FLIGHT_PER_SHARD_DEFAULT`). That admits whole NATs and reverse proxies without
/// PROXY protocol reconnecting together, and a load generator's storm on one address (512
/// connections per shard at its defaults; 1,000 sign-ups at once over 2 shards in a test), while
/// one host holds at most 0.2 % of a shard's default 500,000 places, however many idle sockets it
/// opens and renews every handshake timeout. It bounds places, not logins: of the login slots
/// one client takes idle ones but of the last quarter a sixteenth at most
/// (`Shard::login_slot`), and a connection whose requests
/// the backend keeps refusing is closed (`PRELOGIN_REFUSALS_PER_CONN_MAX`).
pub const PRELOGIN_CONNS_PER_IP_DEFAULT: usize = LOGINS_IN_FLIGHT_PER_SHARD_DEFAULT;

/// Default `gateway.prelogin_conns_per_network_max`: four clients' worth, so a site's few
/// hosts (or a NAT64 with its pool) get in together, while one holder of a /48 takes at most
/// 0.8 % of a shard's default 500,000 places, not all of them.
pub const PRELOGIN_CONNS_PER_NETWORK_DEFAULT: usize = 4 * PRELOGIN_CONNS_PER_IP_DEFAULT;

/// Default `gateway.logins_per_second_per_shard`: a storm of 10,000 token logins on 2 cores
/// then takes 4.2 s instead of 0.9 and the established pairs' p99 during it falls from 96 to
/// 32 ms (docs/BENCHMARKS.md, "Login pacing"). A shard is a core, so the pace grows with them.
pub const LOGINS_PER_SECOND_PER_SHARD_DEFAULT: u32 = 1200;

/// Default `gateway.tls_handshakes_per_shard_per_s`: the login pace's, so a reconnect storm of
/// TLS clients is held by the login pace as before, while a flood of ClientHellos costs a shard
/// at most that many handshakes a second. Bounds: 0 (not paced) to 1,000,000.
pub const TLS_HANDSHAKES_PER_SHARD_PER_S_DEFAULT: u32 = LOGINS_PER_SECOND_PER_SHARD_DEFAULT;
const TLS_HANDSHAKES_PER_SHARD_PER_S_MAX: u32 = 1_000_000;

/// Default `gateway.outbound_bytes_max`: room for several of the largest replies (a sync page
/// or a resume, `login.resume_bytes_max`, 2 MiB by default) behind each other.
/// Bounds: below 1 MiB a burst of pushes would kick a client that reads; above 1 GiB one
/// connection could take the box.
pub const OUTBOUND_BYTES_MAX_DEFAULT: u32 = 32 * 1024 * 1024;
/// Default `gateway.outbound_bytes_per_shard_max`: 16 connections at `outbound_bytes_max`
/// (a connection that reads has next to nothing queued). Bounds: at least
/// `outbound_bytes_max` (one connection may always use its own), at most 1 TiB.
pub const OUTBOUND_BYTES_PER_SHARD_MAX_DEFAULT: u64 = 512 * 1024 * 1024;
const OUTBOUND_BYTES_PER_SHARD_MAX: u64 = 1 << 40;
/// Default `gateway.outbound_drain_timeout_ms`: a full default sync page (~6.5 MiB) reaches a
/// 1 Mbit/s link in under a minute. At most a day.
pub const OUTBOUND_DRAIN_TIMEOUT_MS_DEFAULT: u64 = 60_000;
const OUTBOUND_DRAIN_TIMEOUT_MS_MAX: u64 = 86_400_000;
const OUTBOUND_BYTES_MIN: u32 = 1024 * 1024;
const OUTBOUND_BYTES_MAX: u32 = 1024 * 1024 * 1024;

/// `gateway.files.pipe_bytes` bounds: a pipe smaller than a read buffer only adds round trips;
/// a bigger one than this is memory per connection for no gain.
const FILES_PIPE_BYTES_MIN: usize = 4 * 1024;
const FILES_PIPE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// `[gateway.files]`: HTTP requests under `/files` on the WebSocket listeners, handed to the
/// backend's files service over an in-process pipe (`crate::files`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesPipeConfig {
    /// File connections one shard serves at once; past it a new one is answered 503.
    pub conns_per_shard_max: usize,
    /// File connections all shards serve at once; past it a new one is answered 503.
    pub conns_max: usize,
    /// File connections open at once from one client (an IPv4 address, an IPv6 /64:
    /// `ringchat_backend::client_key`); past it a new one is answered 503: one host cannot
    /// take every file connection of the node.
    pub conns_per_ip_max: usize,
    /// File connections open at once from one IPv6 client network (its /48, all its /64s
    /// together: `ringchat_backend::share_key`); past it a new one is answered 503. IPv4
    /// clients are counted per address only.
    pub conns_per_network_max: usize,
    /// Bytes in flight each way in one connection's pipe between shard and backend.
    pub pipe_bytes: usize,
    /// Time from the end of one response to the whole head of the next request on a file
    /// connection (keep-alive): an idle file connection is closed after it.
    pub header_read_timeout_ms: u64,
}

impl Default for FilesPipeConfig {
    fn default() -> Self {
        Self {
            conns_per_shard_max: 1024,
            conns_max: 4096,
            conns_per_ip_max: 64,
            conns_per_network_max: 256,
            pipe_bytes: 256 * 1024,
            header_read_timeout_ms: 10_000,
        }
    }
}

/// `[gateway.status_http]`: the limits of a status-only node's HTTP listener
/// (`serve --role status`: the chat page, `/assign` and `/readyz` on `gateway.ws_listen`,
/// `crate::status_http`). Strangers reach it, and its descriptors are the process's, the gRPC
/// listener's and Redis's included: none may hold one for nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusHttpConfig {
    /// Connections open at once; past it a new one is closed at once. Lowered at start to
    /// what the open-file limit holds (`fd_budget::status_conns_within`).
    pub conns_max: usize,
    /// Connections open at once from one client (an IPv4 address, an IPv6 /64:
    /// `ringchat_backend::client_key`), kept-alive ones included; past it a new one is closed
    /// at once. Default: the shards' `prelogin_conns_per_ip_max`, whole NATs being one client.
    pub conns_per_ip_max: usize,
    /// The same for an IPv6 client network (its /48, all its /64s together:
    /// `ringchat_backend::share_key`). IPv4 clients are counted per address only.
    pub conns_per_network_max: usize,
    /// Time from accept, or from the end of the previous response (keep-alive), to the whole
    /// head of the next request (a trusted balancer's PROXY header included); past it the
    /// connection is closed. Also the idle limit of a kept-alive connection.
    pub header_read_timeout_ms: u64,
    /// A response the client reads nothing of for this long closes its connection.
    pub write_stall_timeout_ms: u64,
}

impl Default for StatusHttpConfig {
    fn default() -> Self {
        Self {
            // Sixteen clients at their count: with 4,096, four addresses holding silent sockets
            // (each renewed every header_read_timeout_ms) filled it and shut everyone out.
            // A connection costs a socket and a small task.
            conns_max: STATUS_HTTP_CLIENTS_TO_FILL * PRELOGIN_CONNS_PER_IP_DEFAULT,
            // The shards' per-client count, for the same reason: a whole NAT's or a balancer's
            // (without PROXY protocol) browsers are one client, each holding up to 6 kept-alive
            // connections for the page's files. One client still holds a sixteenth of the
            // places at most, and one IPv6 /48 (a site, as one IPv4 NAT address is) as much.
            conns_per_ip_max: PRELOGIN_CONNS_PER_IP_DEFAULT,
            conns_per_network_max: PRELOGIN_CONNS_PER_IP_DEFAULT,
            header_read_timeout_ms: 10_000,
            write_stall_timeout_ms: 10_000,
        }
    }
}

/// `gateway.status_http` bounds: connections (a status node holds nothing else of note) and
/// the timeouts in milliseconds (a browser's head arrives in one packet; an hour would keep a
/// silent socket for ever in effect).
const STATUS_HTTP_CONNS_MAX: usize = 1_048_576;
/// Clients at their default `conns_per_ip_max` that fill the default `conns_max`; when the
/// open-file limit lowers `conns_max`, the per-client counts are lowered to keep it so
/// (`cluster::with_status_conns_cap`).
pub(crate) const STATUS_HTTP_CLIENTS_TO_FILL: usize = 16;
const STATUS_HTTP_TIMEOUT_MS_MIN: u64 = 100;
const STATUS_HTTP_TIMEOUT_MS_MAX: u64 = 600_000;

/// `[gateway.tls]`: PEM files for the TLS listeners. Both empty: TLS is off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_path: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() || !self.key_path.is_empty()
    }
}

/// The client listeners' addresses; `None` is off.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddrs {
    pub tcp: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server_name: "ringchat".to_owned(),
            tcp_listen: "0.0.0.0:7000".to_owned(),
            ws_listen: "0.0.0.0:7001".to_owned(),
            tls_listen: "0.0.0.0:7443".to_owned(),
            wss_listen: "0.0.0.0:7444".to_owned(),
            cores: Cores::Named("auto".to_owned()),
            driver: Driver::Auto,
            io_uring_entries: 1024,
            handshake_timeout_ms: 10_000,
            heartbeat_interval_ms: 30_000,
            idle_timeout_ms: 60_000,
            outbound_frames_max: 4096,
            outbound_bytes_max: OUTBOUND_BYTES_MAX_DEFAULT,
            outbound_bytes_per_shard_max: OUTBOUND_BYTES_PER_SHARD_MAX_DEFAULT,
            outbound_drain_timeout_ms: OUTBOUND_DRAIN_TIMEOUT_MS_DEFAULT,
            conns_per_shard_max: 500_000,
            prelogin_conns_per_ip_max: PRELOGIN_CONNS_PER_IP_DEFAULT,
            prelogin_conns_per_network_max: PRELOGIN_CONNS_PER_NETWORK_DEFAULT,
            logins_in_flight_per_shard_max: LOGINS_IN_FLIGHT_PER_SHARD_DEFAULT,
            login_retry_after_ms: 1_000,
            logins_per_second_per_shard: LOGINS_PER_SECOND_PER_SHARD_DEFAULT,
            login_burst_per_shard: 64,
            tls_handshakes_per_shard_per_s: TLS_HANDSHAKES_PER_SHARD_PER_S_DEFAULT,
            tls_handshakes_in_flight_per_shard_max: 1024,
            queue_events_max: 65_536,
            read_buffer_bytes: 16 * 1024,
            pool_buffers_max: 256,
            shutdown_timeout_ms: 5_000,
            proxy_protocol_from: Vec::new(),
            tls: TlsConfig::default(),
            files: FilesPipeConfig::default(),
            status_http: StatusHttpConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (or nothing: all defaults), applies environment overrides, and returns the
    /// config or every problem found.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<String>> {
        let layers = Layers {
            file: path.map(read_layer).transpose()?,
            env: env.into_iter().collect(),
            overrides: None,
            host: None,
        };
        load::load(&layers).map(|l| l.config)
    }

    /// As the server starts: the file, the environment, and the overrides file of live changes
    /// in the data dir (`live::overrides_path`) if there is one. The config comes with every
    /// problem found (the caller refuses it if there is any), so that the checks of the files
    /// it names can run too; `Err`: no config at all (a file unreadable, or not TOML). The
    /// host's CPUs are read now and kept in the layers: call it before any thread pins itself.
    pub fn load_layers(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Layers, Loaded, Vec<String>), Vec<String>> {
        Self::load_layers_on(path, env, None)
    }

    /// As `load_layers`, checking the pinned cores against `host` (`None`: this machine's,
    /// read now).
    pub fn load_layers_on(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        host: Option<HostCpus>,
    ) -> Result<(Layers, Loaded, Vec<String>), Vec<String>> {
        let mut layers = Layers {
            file: path.map(read_layer).transpose()?,
            env: env.into_iter().collect(),
            overrides: None,
            // Once, here: every later check (SIGHUP, PATCH) reuses these layers' host.
            host: Some(host.unwrap_or_else(HostCpus::read)),
        };
        let (base, problems) = load::load_all(&layers)?;
        if !problems.is_empty() {
            // The overrides file's place comes from this config: not with a wrong one.
            return Ok((layers, base, problems));
        }
        let overrides = live::overrides_path(&base.config);
        match std::fs::read_to_string(&overrides) {
            Ok(text) => {
                layers.overrides = Some(TextLayer {
                    path: overrides.display().to_string(),
                    text,
                });
                let (loaded, problems) = load::load_all(&layers)?;
                Ok((layers, loaded, problems))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((layers, base, Vec::new())),
            Err(e) => {
                let problem = format!("{}: cannot read: {e}", overrides.display());
                Ok((layers, base, vec![problem]))
            }
        }
    }

    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<String>> {
        let layers = Layers {
            file: Some(TextLayer {
                path: "config".to_owned(),
                text: text.to_owned(),
            }),
            env: env.into_iter().collect(),
            overrides: None,
            host: None,
        };
        load::load(&layers).map(|l| l.config)
    }

    /// Problems in values that parsed but do not make sense together, the pinned cores checked
    /// against `online` (`HostCpus::online`, read once: never the calling thread's affinity,
    /// which is one core on a pinned thread).
    pub fn problems_on(&self, online: &[usize]) -> Vec<String> {
        let mut out = self.gateway.problems();
        out.extend(self.log.problems());
        out.extend(self.backend_settings().problems());
        out.extend(self.security.problems());
        out.extend(self.listener_clashes());
        for &core in &self.backend.cores {
            if !online.contains(&core) {
                out.push(format!(
                    "backend.cores: core {core} is not online (online: {online:?})"
                ));
            }
        }
        if let Cores::List(list) = &self.gateway.cores {
            for &core in list {
                if !online.contains(&core) {
                    out.push(format!(
                        "gateway.cores: core {core} is not online (online: {online:?})"
                    ));
                }
            }
        }
        // A problem may quote a URL (a parser's message): no password in what is logged.
        out.iter()
            .map(|p| ringchat_backend::live::credentials_hidden(p))
            .collect()
    }

    pub fn backend_settings(&self) -> Settings {
        Settings {
            backend: self.backend.clone(),
            storage: self.storage.clone(),
            accounts: self.accounts.clone(),
            login: LoginConfig {
                // A resume never makes its client a slow consumer.
                resume_bytes_max: self
                    .login
                    .resume_bytes_max
                    .min(u64::from(self.gateway.outbound_bytes_max / 2)),
                // Nor does its count of frames: one batch per conversation, and `LoginOk`
                // and `Resumed` beside them, queued before the connection writes any.
                resume_conversations_max: self.login.resume_conversations_max.min(
                    u32::try_from((self.gateway.outbound_frames_max / 2).saturating_sub(1))
                        .unwrap_or(u32::MAX)
                        .max(1),
                ),
                ..self.login.clone()
            },
            admin: self.admin.clone(),
            email: self.email.clone(),
            presence: self.presence.clone(),
            rooms: self.rooms.clone(),
            notifications: self.notifications.clone(),
            push: self.push.clone(),
            observe: self.observe.clone(),
            limits: self.limits.clone(),
            contacts: self.contacts.clone(),
            groups: self.groups.clone(),
            server_name: self.gateway.server_name.clone(),
            backup: self.backup.clone(),
            cluster: self.cluster.clone(),
            files: self.files.clone(),
        }
    }

    /// The cores the shards run on on `host`, one shard each (`Self::shard_plan_on`'s).
    pub fn shard_cores_on(&self, host: &HostCpus) -> Vec<usize> {
        self.shard_plan_on(host).cores
    }

    /// The shards on `host`: one per listed core, pinned to it. `"auto"`: one per online core not
    /// given to the backend, pinned, and no more of them than the cgroup's CPU quota (a pod
    /// limited to 4 CPUs on a 64-core node runs 4 shards, not 64 sharing 4 CPUs' time, each with
    /// its own per-shard budgets). When the quota, not the CPU set, decided their number, they
    /// are not pinned: the quota lets them run on any allowed core, and the first N of a shared
    /// set also take the interrupts and the other pods' threads (a pod without the static CPU
    /// manager, a systemd unit's `CPUQuota=`).
    pub fn shard_plan_on(&self, host: &HostCpus) -> ShardPlan {
        match &self.gateway.cores {
            Cores::List(list) => ShardPlan {
                cores: list.clone(),
                pinned: true,
            },
            Cores::Named(_) => {
                let free: Vec<usize> = host
                    .online
                    .iter()
                    .copied()
                    .filter(|c| !self.backend.cores.contains(c))
                    .collect();
                let mut cores = if free.is_empty() {
                    host.online.clone()
                } else {
                    free
                };
                let quota = host.quota.unwrap_or(usize::MAX).max(1);
                let pinned = cores.len() <= quota;
                cores.truncate(quota);
                ShardPlan { cores, pinned }
            }
        }
    }
}

/// Where the shards run (`Config::shard_plan_on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// One shard per entry, pinned to that core when `pinned`.
    pub cores: Vec<usize>,
    /// `false`: the cgroup's CPU quota set the number of shards, below the cores they were
    /// given; the scheduler places them on any of the process's allowed cores.
    pub pinned: bool,
}

impl GatewayConfig {
    /// How far one connection may fall behind (`crate::shard::OutboundLimits`).
    pub(crate) fn outbound_limits(&self) -> crate::shard::OutboundLimits {
        crate::shard::OutboundLimits {
            frames_max: self.outbound_frames_max,
            bytes_max: self.outbound_bytes_max,
        }
    }

    /// The listeners to open: the TLS ones only when `[gateway.tls]` is set.
    pub fn listen_addrs(&self) -> Result<ListenAddrs, Vec<String>> {
        let mut problems = Vec::new();
        let mut addr = |key: &str, value: &str, on: bool| -> Option<SocketAddr> {
            if value.is_empty() || !on {
                return None;
            }
            value
                .parse()
                .map_err(|e| {
                    problems.push(format!(
                        "gateway.{key}: {e}: {}",
                        crate::config::LISTEN_EXPECTED
                    ))
                })
                .ok()
        };
        let tls = self.tls.enabled();
        let addrs = ListenAddrs {
            tcp: addr("tcp_listen", &self.tcp_listen, true),
            ws: addr("ws_listen", &self.ws_listen, true),
            tls: addr("tls_listen", &self.tls_listen, tls),
            wss: addr("wss_listen", &self.wss_listen, tls),
        };
        if problems.is_empty() {
            Ok(addrs)
        } else {
            Err(problems)
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.listen_addrs() {
            Err(problems) => out.extend(problems),
            Ok(a) if a.tcp.is_none() && a.ws.is_none() && a.tls.is_none() && a.wss.is_none() => {
                out.push(
                    "gateway: every client listener is off (tcp_listen, ws_listen, and tls_listen/wss_listen with [gateway.tls])"
                        .to_owned(),
                );
            }
            Ok(_) => {}
        }
        out.extend(crate::proxy_protocol::problems(&self.proxy_protocol_from));
        if self.tls.enabled() && (self.tls.cert_path.is_empty() || self.tls.key_path.is_empty()) {
            out.push("gateway.tls: set both cert_path and key_path (or neither)".to_owned());
        }
        match &self.cores {
            Cores::Named(name) if name != "auto" => out.push(format!(
                "gateway.cores: {name:?} is neither \"auto\" nor a list of core ids"
            )),
            Cores::List(list) if list.is_empty() => {
                out.push("gateway.cores: the list is empty".to_owned());
            }
            Cores::List(list) => {
                let mut sorted = list.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != list.len() {
                    out.push("gateway.cores: a core is listed twice".to_owned());
                }
            }
            Cores::Named(_) => {}
        }
        if !(OUTBOUND_BYTES_MIN..=OUTBOUND_BYTES_MAX).contains(&self.outbound_bytes_max) {
            out.push(format!(
                "gateway.outbound_bytes_max: must be between {OUTBOUND_BYTES_MIN} and {OUTBOUND_BYTES_MAX}"
            ));
        }
        if !(u64::from(self.outbound_bytes_max)..=OUTBOUND_BYTES_PER_SHARD_MAX)
            .contains(&self.outbound_bytes_per_shard_max)
        {
            out.push(format!(
                "gateway.outbound_bytes_per_shard_max: must be between gateway.outbound_bytes_max ({}) and {OUTBOUND_BYTES_PER_SHARD_MAX}",
                self.outbound_bytes_max
            ));
        }
        if !(1..=OUTBOUND_DRAIN_TIMEOUT_MS_MAX).contains(&self.outbound_drain_timeout_ms) {
            out.push(format!(
                "gateway.outbound_drain_timeout_ms: must be between 1 and {OUTBOUND_DRAIN_TIMEOUT_MS_MAX}"
            ));
        }
        if self.conns_per_shard_max >= ringchat_backend::api::CONN_SLOTS_MAX {
            out.push(format!(
                "gateway.conns_per_shard_max: must be below {}",
                ringchat_backend::api::CONN_SLOTS_MAX
            ));
        }
        let mut positive = |v: u64, key: &str| {
            if v == 0 {
                out.push(format!("gateway.{key}: must be at least 1"));
            }
        };
        positive(self.handshake_timeout_ms, "handshake_timeout_ms");
        positive(self.heartbeat_interval_ms, "heartbeat_interval_ms");
        positive(self.idle_timeout_ms, "idle_timeout_ms");
        positive(self.outbound_frames_max as u64, "outbound_frames_max");
        positive(self.conns_per_shard_max as u64, "conns_per_shard_max");
        positive(
            self.prelogin_conns_per_ip_max as u64,
            "prelogin_conns_per_ip_max",
        );
        positive(
            self.prelogin_conns_per_network_max as u64,
            "prelogin_conns_per_network_max",
        );
        positive(
            self.logins_in_flight_per_shard_max as u64,
            "logins_in_flight_per_shard_max",
        );
        positive(
            u64::from(self.login_burst_per_shard),
            "login_burst_per_shard",
        );
        positive(
            self.tls_handshakes_in_flight_per_shard_max as u64,
            "tls_handshakes_in_flight_per_shard_max",
        );
        positive(self.shutdown_timeout_ms, "shutdown_timeout_ms");
        positive(
            self.files.conns_per_shard_max as u64,
            "files.conns_per_shard_max",
        );
        positive(self.files.conns_max as u64, "files.conns_max");
        positive(self.files.conns_per_ip_max as u64, "files.conns_per_ip_max");
        positive(
            self.files.conns_per_network_max as u64,
            "files.conns_per_network_max",
        );
        positive(
            self.files.header_read_timeout_ms,
            "files.header_read_timeout_ms",
        );
        let queue_max = ringchat_backend::config::QUEUE_ITEMS_MAX;
        if !(1..=queue_max).contains(&self.queue_events_max) {
            out.push(format!(
                "gateway.queue_events_max: must be between 1 and {queue_max}"
            ));
        }
        let st = &self.status_http;
        for (key, value) in [
            ("conns_max", st.conns_max),
            ("conns_per_ip_max", st.conns_per_ip_max),
            ("conns_per_network_max", st.conns_per_network_max),
        ] {
            if !(1..=STATUS_HTTP_CONNS_MAX).contains(&value) {
                out.push(format!(
                    "gateway.status_http.{key}: must be between 1 and {STATUS_HTTP_CONNS_MAX}"
                ));
            }
        }
        for (key, value) in [
            ("header_read_timeout_ms", st.header_read_timeout_ms),
            ("write_stall_timeout_ms", st.write_stall_timeout_ms),
        ] {
            if !(STATUS_HTTP_TIMEOUT_MS_MIN..=STATUS_HTTP_TIMEOUT_MS_MAX).contains(&value) {
                out.push(format!(
                    "gateway.status_http.{key}: must be between {STATUS_HTTP_TIMEOUT_MS_MIN} and {STATUS_HTTP_TIMEOUT_MS_MAX}"
                ));
            }
        }
        if self.heartbeat_interval_ms >= self.idle_timeout_ms {
            out.push(
                "gateway.heartbeat_interval_ms: must be below idle_timeout_ms, or idle clients that ping on time get closed"
                    .to_owned(),
            );
        }
        if self.tls_handshakes_per_shard_per_s > TLS_HANDSHAKES_PER_SHARD_PER_S_MAX {
            out.push(format!(
                "gateway.tls_handshakes_per_shard_per_s: must be between 0 (not paced) and {TLS_HANDSHAKES_PER_SHARD_PER_S_MAX}"
            ));
        }
        if !(1..=600_000).contains(&self.login_retry_after_ms) {
            out.push("gateway.login_retry_after_ms: must be between 1 and 600000".to_owned());
        }
        if !(FILES_PIPE_BYTES_MIN..=FILES_PIPE_BYTES_MAX).contains(&self.files.pipe_bytes) {
            out.push(format!(
                "gateway.files.pipe_bytes: must be between {FILES_PIPE_BYTES_MIN} and {FILES_PIPE_BYTES_MAX}"
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.read_buffer_bytes) {
            out.push("gateway.read_buffer_bytes: must be between 1024 and 16777216".to_owned());
        }
        if !(8..=32_768).contains(&self.io_uring_entries)
            || !self.io_uring_entries.is_power_of_two()
        {
            out.push(
                "gateway.io_uring_entries: must be a power of two between 8 and 32768".to_owned(),
            );
        }
        out
    }
}

/// What a listen address must look like. Host names are not resolved: a listener binds one
/// address, and a name can resolve to several (or to another one after a DNS change).
pub const LISTEN_EXPECTED: &str = "expected IP:PORT such as 0.0.0.0:7000, 127.0.0.1:7000 or [::]:7000 (a host name is not accepted: give the address to bind), or \"\" for off";

fn read_layer(path: &std::path::Path) -> Result<TextLayer, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    Ok(TextLayer {
        path: path.display().to_string(),
        text,
    })
}

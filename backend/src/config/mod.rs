//! The backend's sections of the configuration file. Parsing and env overrides live in the binary;
//! each section here knows its defaults and validates itself.

use std::collections::BTreeMap;

pub use crate::cluster::ClusterConfig;
pub use crate::contacts::{ContactsConfig, DmPolicyName};
pub use crate::files::{FileStorageKind, FilesConfig};
pub use crate::groups::GroupsConfig;
pub use crate::limits::Limits;
pub use crate::notifications::NotificationsConfig;
pub use crate::observe::ObserveConfig;
pub use crate::push::PushConfig;
pub use crate::rooms::RoomsConfig;

mod admin;
mod storage;

pub use admin::{AdminConfig, AdminTlsConfig};
pub use storage::*;

use serde::{Deserialize, Serialize};

/// The file in `storage.data_dir` that keeps the live configuration changes (IP rules, live
/// limits: `PUT /api/security/ip-rules`, `PATCH /api/config`) across restarts; written by the
/// binary, kept in backups (`backup/state.rs`).
pub const CONFIG_OVERRIDES_FILE: &str = "config.overrides.toml";

/// `[backend]`: the tokio runtime that runs the services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Cores the backend's threads are pinned to; empty means not pinned.
    pub cores: Vec<usize>,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// Threads for blocking work (password hashing, storage reads), at most. Each keeps its own
    /// allocator caches, so a small pool keeps memory flat under login storms.
    pub blocking_threads_max: usize,
    /// Requests from all shards waiting for the backend, at most; and, apart, writes from all
    /// shards waiting for the sequencer.
    pub queue_requests_max: usize,
    /// Logins the backend runs at once (their store reads and writes, the session's
    /// registration, presence); the others wait in order. Keeps a login storm from filling
    /// the blocking pool that logged-in users' reads also run on.
    pub logins_in_flight_max: usize,
}

/// Bound of `backend.queue_requests_max` and `gateway.queue_events_max`, in items: a million
/// waiting requests or events is far past any backlog worth holding (the defaults are 65,536),
/// and the bound keeps a typo from reaching tokio's channel, which panics at start above 2^61.
pub const QUEUE_ITEMS_MAX: usize = 1 << 20;
/// Bound of `storage.commit_group_max`, in writes: the commit thread allocates a whole group's
/// batch once the store is open (10^8 aborts the server there, not at check-config), and past a
/// few thousand writes one fsync gains nothing more per write (the default is 1,024).
pub const COMMIT_GROUP_MAX: usize = 65_536;
/// Bound of `backend.worker_threads`: tokio starts every worker at once, each with its own
/// stack; past a thousand they are only memory and scheduler work on any machine.
pub const WORKER_THREADS_MAX: usize = 1024;
/// `backend.blocking_threads_max`'s ceiling: each such thread holds a stack and its own
/// allocator caches, and a login storm starts as many as allowed; past this many a typo
/// (an extra zero or three) would take the box's memory instead of being refused.
pub const BLOCKING_THREADS_MAX: usize = 1024;

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            cores: Vec::new(),
            worker_threads: 1,
            blocking_threads_max: 8,
            queue_requests_max: 65_536,
            logins_in_flight_max: 256,
        }
    }
}

/// `[accounts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// argon2id passes (OWASP: 2).
    pub argon2_iterations: u32,
    /// Login password checks computed at once; further logins wait. Registrations, and new
    /// passwords (changes, resets, operators' sets), hash in lanes of their own, each of half
    /// as many (rounded up).
    pub hash_concurrency: usize,
    pub password_bytes_min: usize,
    pub password_bytes_max: usize,
    /// Who may create accounts: "open" (anyone, by Register), "closed" (operators only) or
    /// "invite" (Register with an invite code an operator issued).
    pub registration: Registration,
    /// Invites stored at once, at most (used-up and expired ones make room).
    pub invites_max: usize,
    /// Longest life an invite may be given, and registrations one invite may allow, at most.
    pub invite_ttl_s_max: u64,
    pub invite_uses_max: u32,
    /// Invite codes one user may issue in any day (`CreateInvite`); 0: users issue none.
    pub user_invites_per_day: u32,
    /// Registrations a user's code may allow, at most; and its life, in seconds (the default
    /// and the most a user may ask for).
    pub user_invite_uses_max: u32,
    pub user_invite_ttl_s: u64,
    /// Invites in one page of a user's `ListInvites`, at most.
    pub user_invites_page_max: u32,
    /// Registrations from one client address (an IPv4 address, an IPv6 /64) in any hour, at
    /// most; further ones are answered `RATE_LIMITED`. 0: not limited, nor by network (a load
    /// generator signs up thousands of users from one address).
    pub registrations_per_ip_per_hour: u32,
    /// Registrations from one client network (an IPv4 /24, an IPv6 /48: a site has 65,536
    /// /64s) in any hour, at most. 0: networks not limited.
    pub registrations_per_network_per_hour: u32,
    /// Register requests the backend holds at once, from its request queue to their answer
    /// (most of them waiting for the registration hasher), and apart from them RequestEmailCode
    /// and ResetPassword requests, each at most (requests); one more is answered
    /// `UNAVAILABLE` with a jittered `retry_after_ms`. The default is what the gateway's login
    /// slots of four default shards hand on at once: a burst of sign-ups waits for the hasher
    /// rather than being refused, and what waits stays bounded.
    pub registrations_waiting_max: usize,
}

/// `accounts.registration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    #[default]
    Open,
    Closed,
    Invite,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            hash_concurrency: 2,
            password_bytes_min: 8,
            password_bytes_max: 128,
            registration: Registration::Open,
            invites_max: 10_000,
            invite_ttl_s_max: 90 * 24 * 3600,
            invite_uses_max: 1_000,
            user_invites_per_day: 5,
            user_invite_uses_max: 5,
            user_invite_ttl_s: 7 * 24 * 3600,
            user_invites_page_max: 50,
            registrations_per_ip_per_hour: 1_000,
            registrations_per_network_per_hour: 5_000,
            registrations_waiting_max: 4096,
        }
    }
}

/// `[login]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Lifetime of a token issued at password login; a session still connected when its token
    /// expires is ended (`accounts/expiry.rs`).
    pub token_ttl_s: u64,
    /// Failed logins per account or per address before each further attempt is delayed.
    pub failures_free: u32,
    /// Failed password logins from one IPv6 /48 (all its /64s together) before each further
    /// attempt from it is delayed as `failures_free`'s are; 0: networks not throttled. A /48
    /// holds 65,536 /64s, each with `failures_free` of its own. IPv4 clients are counted per
    /// address only (`throttle::ThrottleKey::network` says why).
    pub failures_free_per_network: u32,
    /// First delay after `failures_free`; doubles with each further failure.
    pub failure_delay_ms: u64,
    pub failure_delay_ms_max: u64,
    /// Failures older than this are forgotten.
    pub failure_window_s: u64,
    /// Accounts tracked for failures, at most, and as many addresses (IPv6: /64s) and as many
    /// IPv6 /48s beside them.
    pub throttle_entries_max: usize,
    /// Sessions one user may hold at once.
    pub devices_max: usize,
    /// Per platform ("ios", "android", "web", "desktop", "unspecified"): "coexist" (default) keeps
    /// every session; "replace" makes a new login kick the user's older session on that platform.
    pub policy: BTreeMap<String, DevicePolicy>,
    /// A token login in the last this-many percent of the token's life gets a fresh token
    /// (0: never), so that a device in use never needs the password again.
    pub token_refresh_percent: u8,
    /// Signed-in devices (tokens) kept per user; a password login past it signs out the device
    /// seen longest ago, devices with a session on this node last. Bounds ListDevices, which
    /// returns them all (after a lowering, the offline ones seen longest ago past it are
    /// left out until a password login signs them out).
    pub device_tokens_max: usize,
    /// A login's `Resume` is served when its `since_server_time_ms` is at most this old
    /// (0: never; the client then gets `Resumed{complete: false}` and syncs as usual). Also
    /// how far before `since` a conversation the device does not name is read (from seq 1).
    pub resume_window_ms: u64,
    /// Conversations with activity since `since` one resume serves, at most (each one read);
    /// more: `Resumed{complete: false}`.
    pub resume_conversations_max: u32,
    /// `Resume.known` entries, at most; more: the login gets `INVALID_ARGUMENT`.
    pub resume_known_max: usize,
    /// Bytes of `SyncBatch` one resume sends, at most (encoded); more missed: the reads stop
    /// and the client gets `Resumed{complete: false, reason: TOO_LARGE}`. The server uses half
    /// of `gateway.outbound_bytes_max` if that is less, so that a resume never makes its client
    /// a slow consumer. Also the bound of one `Sync` or `History` page (at least one message;
    /// a page cut short says `has_more`).
    pub resume_bytes_max: u64,
}

/// Default `login.resume_bytes_max`: thousands of small messages, a hundred of 8 KiB.
pub const RESUME_BYTES_MAX_DEFAULT: u64 = 2 * 1024 * 1024;

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            token_ttl_s: 30 * 24 * 3600,
            failures_free: 5,
            failures_free_per_network: 100,
            failure_delay_ms: 1_000,
            failure_delay_ms_max: 60_000,
            failure_window_s: 900,
            throttle_entries_max: 100_000,
            devices_max: 10,
            policy: BTreeMap::new(),
            token_refresh_percent: 50,
            device_tokens_max: 32,
            resume_window_ms: 600_000,
            resume_conversations_max: 64,
            resume_known_max: 1_000,
            resume_bytes_max: RESUME_BYTES_MAX_DEFAULT,
        }
    }
}

/// What a new login does to the user's older sessions on the same platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePolicy {
    Coexist,
    Replace,
}

/// `[presence]`: what friends see of each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// A user costs their friends at most one presence push per this many milliseconds, and a
    /// user who goes offline (or less present) is shown so only after this long without coming
    /// back: a device flapping its connection does not flood its friends.
    pub quiet_period_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            quiet_period_ms: 5_000,
        }
    }
}

/// Everything the backend needs, gathered from the file's sections.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub backend: BackendConfig,
    pub storage: StorageConfig,
    pub accounts: AccountsConfig,
    pub login: LoginConfig,
    pub admin: AdminConfig,
    pub contacts: ContactsConfig,
    pub email: EmailConfig,
    pub presence: PresenceConfig,
    pub groups: GroupsConfig,
    pub rooms: RoomsConfig,
    pub notifications: NotificationsConfig,
    pub push: PushConfig,
    /// The admin overview's history and the activity counters.
    pub observe: ObserveConfig,
    /// Limits the gateway also announces (message size, sync page), shared by both sides.
    pub limits: Limits,
    pub server_name: String,
    /// `[backup]`: backups the running server writes.
    pub backup: crate::backup::BackupConfig,
    /// `[cluster]`: one node of many (off: one box).
    pub cluster: ClusterConfig,
    /// `[files]`: uploads and downloads over HTTP (`files/`).
    pub files: FilesConfig,
}

pub const PLATFORM_NAMES: [&str; 5] = ["unspecified", "ios", "android", "web", "desktop"];

impl Settings {
    /// Every problem in the backend's sections, as `key: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (1..=WORKER_THREADS_MAX).contains(&self.backend.worker_threads),
            &format!("backend.worker_threads: must be between 1 and {WORKER_THREADS_MAX}"),
        );
        check(
            (1..=BLOCKING_THREADS_MAX).contains(&self.backend.blocking_threads_max),
            &format!("backend.blocking_threads_max: must be between 1 and {BLOCKING_THREADS_MAX}"),
        );
        check(
            (1..=QUEUE_ITEMS_MAX).contains(&self.backend.queue_requests_max),
            &format!("backend.queue_requests_max: must be between 1 and {QUEUE_ITEMS_MAX}"),
        );
        check(
            (1..=65_536).contains(&self.backend.logins_in_flight_max),
            "backend.logins_in_flight_max: must be between 1 and 65536",
        );
        check(
            (1..=COMMIT_GROUP_MAX).contains(&self.storage.commit_group_max),
            &format!("storage.commit_group_max: must be between 1 and {COMMIT_GROUP_MAX}"),
        );
        check(
            self.storage.commit_delay_us <= 100_000,
            "storage.commit_delay_us: must be at most 100000 (0.1 s)",
        );
        check(
            self.storage.journal_sync_ms <= JOURNAL_SYNC_MS_MAX,
            "storage.journal_sync_ms: must be at most 3600000 (an hour)",
        );
        check(
            self.storage.journal_prefill_mib <= storage::JOURNAL_PREFILL_MIB_MAX,
            "storage.journal_prefill_mib: must be at most 64 (0 turns it off)",
        );
        check(
            (1..=BACKGROUND_THREADS_MAX).contains(&self.storage.background_threads),
            "storage.background_threads: must be between 1 and 64",
        );
        check(
            (1..=crate::store::MEMTABLE_MIB_MAX).contains(&self.storage.memtable_mib),
            "storage.memtable_mib: must be between 1 and 768",
        );
        check(
            (1..=DEDUP_WINDOW_MESSAGES_MAX).contains(&self.storage.dedup_window_messages),
            "storage.dedup_window_messages: must be between 1 and 1024",
        );
        check(
            (1..=600_000).contains(&self.storage.unavailable_retry_after_ms),
            "storage.unavailable_retry_after_ms: must be between 1 and 600000",
        );
        check(
            (1..=36_500).contains(&self.storage.device_cursor_ttl_days),
            "storage.device_cursor_ttl_days: must be between 1 and 36500",
        );
        check(
            self.storage.tail_cache_bytes <= TAIL_CACHE_BYTES_MAX,
            "storage.tail_cache_bytes: must be at most 68719476736 (64 GiB); 0 turns the cache off",
        );
        // Only the embedded store is opened behind the cache (`store/open.rs`): accepted, the
        // setting would be ignored without a word.
        check(
            self.storage.engine == StorageEngine::Embedded || self.storage.tail_cache_bytes == 0,
            "storage.tail_cache_bytes: only the embedded store has a tail cache (another node's writes to a shared store would not pass through it); set 0 with storage.engine = \"postgres\" or \"scylla\"",
        );
        check(
            !self.storage.data_dir.as_os_str().is_empty(),
            "storage.data_dir: must not be empty",
        );
        if self.storage.engine == StorageEngine::Postgres {
            for problem in self.storage.postgres.problems() {
                check(false, &problem);
            }
        }
        check(
            (8..=4 * 1024 * 1024).contains(&self.accounts.argon2_memory_kib),
            "accounts.argon2_memory_kib: must be between 8 and 4194304",
        );
        check(
            self.accounts.argon2_iterations >= 1,
            "accounts.argon2_iterations: must be at least 1",
        );
        check(
            self.accounts.hash_concurrency >= 1,
            "accounts.hash_concurrency: must be at least 1",
        );
        check(
            self.accounts.password_bytes_min >= 1
                && self.accounts.password_bytes_min <= self.accounts.password_bytes_max,
            "accounts.password_bytes_min: must be at least 1 and at most password_bytes_max",
        );
        check(
            self.accounts.password_bytes_max <= crate::accounts::PASSWORD_BYTES_CEILING,
            &format!(
                "accounts.password_bytes_max: must be at most {}",
                crate::accounts::PASSWORD_BYTES_CEILING
            ),
        );
        check(
            (1..=65_536).contains(&self.accounts.registrations_waiting_max),
            "accounts.registrations_waiting_max: must be between 1 and 65536",
        );
        check(
            (1..=1_000_000).contains(&self.accounts.invites_max),
            "accounts.invites_max: must be between 1 and 1000000",
        );
        check(
            (60..=3_650 * 24 * 3600).contains(&self.accounts.invite_ttl_s_max),
            "accounts.invite_ttl_s_max: must be between 60 and 315360000 (10 years)",
        );
        check(
            (1..=1_000_000).contains(&self.accounts.invite_uses_max),
            "accounts.invite_uses_max: must be between 1 and 1000000",
        );
        check(
            self.accounts.user_invites_per_day <= 10_000,
            "accounts.user_invites_per_day: must be at most 10000",
        );
        check(
            (1..=self.accounts.invite_uses_max).contains(&self.accounts.user_invite_uses_max),
            "accounts.user_invite_uses_max: must be between 1 and invite_uses_max",
        );
        check(
            (60..=self.accounts.invite_ttl_s_max).contains(&self.accounts.user_invite_ttl_s),
            "accounts.user_invite_ttl_s: must be between 60 and invite_ttl_s_max",
        );
        check(
            (1..=1_000).contains(&self.accounts.user_invites_page_max),
            "accounts.user_invites_page_max: must be between 1 and 1000",
        );
        check(
            self.login.token_ttl_s >= 1,
            "login.token_ttl_s: must be at least 1",
        );
        check(
            self.login.failure_delay_ms <= self.login.failure_delay_ms_max,
            "login.failure_delay_ms: must not exceed failure_delay_ms_max",
        );
        check(
            self.login.failure_delay_ms_max <= 86_400_000,
            "login.failure_delay_ms_max: must be at most 86400000 (a day)",
        );
        check(
            self.login.token_ttl_s <= 10 * 365 * 86_400,
            "login.token_ttl_s: must be at most ten years",
        );
        check(
            self.login.throttle_entries_max >= 1,
            "login.throttle_entries_max: must be at least 1",
        );
        check(
            self.login.devices_max >= 1,
            "login.devices_max: must be at least 1",
        );
        check(
            self.login.token_refresh_percent <= 100,
            "login.token_refresh_percent: must be between 0 and 100",
        );
        check(
            (1..=1024).contains(&self.login.device_tokens_max)
                && self.login.device_tokens_max >= self.login.devices_max,
            "login.device_tokens_max: must be between devices_max and 1024",
        );
        check(
            self.login.resume_window_ms <= 86_400_000,
            "login.resume_window_ms: must be at most 86400000 (a day)",
        );
        check(
            (1..=256).contains(&self.login.resume_conversations_max),
            "login.resume_conversations_max: must be between 1 and 256",
        );
        check(
            (1..=10_000).contains(&self.login.resume_known_max),
            "login.resume_known_max: must be between 1 and 10000",
        );
        check(
            (64 * 1024..=512 * 1024 * 1024).contains(&self.login.resume_bytes_max),
            "login.resume_bytes_max: must be between 65536 and 536870912",
        );
        check(
            self.presence.quiet_period_ms <= 600_000,
            "presence.quiet_period_ms: must be at most 600000 (ten minutes)",
        );
        for p in self.login.policy.keys() {
            if !PLATFORM_NAMES.contains(&p.as_str()) {
                out.push(format!(
                    "login.policy: unknown platform {p:?} (expected one of {PLATFORM_NAMES:?})"
                ));
            }
        }
        out.extend(self.admin.problems());
        out.extend(self.email.problems());
        out.extend(self.limits.problems());
        out.extend(self.contacts.problems());
        out.extend(self.groups.problems());
        out.extend(self.rooms.problems());
        out.extend(self.notifications.problems());
        out.extend(self.push.problems());
        out.extend(self.backup.problems(self.storage.engine));
        if self.storage.engine == StorageEngine::Scylla {
            out.extend(self.storage.scylla.problems());
        }
        out.extend(self.observe.problems());
        out.extend(self.cluster.problems());
        out.extend(self.files.problems(self.cluster.enabled));
        if self.cluster.enabled && self.storage.engine == StorageEngine::Embedded {
            out.push("cluster.enabled: cluster mode needs a store of record every node shares; set storage.engine = \"postgres\" or \"scylla\" (the embedded store belongs to one box)".into());
        }
        out
    }
}

// ---- [email]: account e-mail codes and the SMTP relay that sends them ------------------------

/// Whether registration verifies the e-mail address with a mailed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailVerification {
    /// No codes: an address given at registration is stored (and indexed) as typed.
    Off,
    /// An address is optional; one that is given must come with its code.
    Optional,
    /// Every registration needs an address and its code.
    Required,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"), usually port 465.
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

/// `[email]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub verification: EmailVerification,
    /// A code works for this long after it was sent.
    pub code_ttl_s: u64,
    /// Wrong codes accepted before the pending code is void.
    pub code_tries_max: u32,
    /// A new code for the same address and purpose only this long after the last one.
    pub code_resend_interval_s: u64,
    /// Codes sent per address, and requested per client address (an IPv4 address, an IPv6
    /// /64) and per client network (an IPv4 /24, an IPv6 /48; 0: not limited), within
    /// `code_window_s`.
    pub codes_per_address_max: u32,
    pub codes_per_ip_max: u32,
    pub codes_per_network_max: u32,
    pub code_window_s: u64,
    /// Codes pending at once (each ~200 bytes), and addresses tracked by the rate limits.
    pub codes_pending_max: usize,
    /// Mails being sent at once; past it a code request gets UNAVAILABLE.
    pub sends_in_flight_max: usize,
    /// Directory with templates that replace the built-in ones ("" = built-in only): any of
    /// `register.subject`, `register.txt`, `register.html`, `reset_password.subject`,
    /// `reset_password.txt`, `reset_password.html`.
    pub templates_dir: String,
    pub smtp: SmtpConfig,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            verification: EmailVerification::Off,
            code_ttl_s: 600,
            code_tries_max: 5,
            code_resend_interval_s: 60,
            codes_per_address_max: 5,
            codes_per_ip_max: 20,
            codes_per_network_max: 200,
            code_window_s: 3600,
            codes_pending_max: 100_000,
            sends_in_flight_max: 64,
            templates_dir: String::new(),
            smtp: SmtpConfig::default(),
        }
    }
}

/// `[email.smtp]`: the relay. An empty `host` sends nothing: codes are only logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Both empty: no authentication.
    pub username: String,
    pub password: String,
    /// The From header, e.g. "ringchat <no-reply@example.com>".
    pub from: String,
    /// One mail's whole SMTP exchange, at most.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: String::new(),
            from: "ringchat <no-reply@localhost>".to_owned(),
            timeout_ms: 10_000,
        }
    }
}

impl EmailConfig {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                out.push(msg.to_owned());
            }
        };
        check(
            (1..=86_400).contains(&self.code_ttl_s),
            "email.code_ttl_s: must be between 1 and 86400",
        );
        check(
            (1..=100).contains(&self.code_tries_max),
            "email.code_tries_max: must be between 1 and 100",
        );
        check(
            self.code_resend_interval_s <= self.code_window_s,
            "email.code_resend_interval_s: must not exceed code_window_s",
        );
        check(
            self.codes_per_address_max >= 1 && self.codes_per_ip_max >= 1,
            "email.codes_per_address_max, codes_per_ip_max: must be at least 1",
        );
        check(
            (1..=30 * 86_400).contains(&self.code_window_s),
            "email.code_window_s: must be between 1 and 2592000",
        );
        check(
            self.codes_pending_max >= 1 && self.sends_in_flight_max >= 1,
            "email.codes_pending_max, sends_in_flight_max: must be at least 1",
        );
        check(
            self.smtp.from.parse::<lettre::message::Mailbox>().is_ok(),
            "email.smtp.from: not a mailbox (expected \"Name <address@example.com>\" or an address)",
        );
        check(
            self.smtp.username.is_empty() == self.smtp.password.is_empty(),
            "email.smtp: set both username and password (or neither)",
        );
        check(
            self.smtp.host.is_empty() || self.smtp.port != 0,
            "email.smtp.port: must not be 0",
        );
        check(
            self.smtp.timeout_ms >= 1,
            "email.smtp.timeout_ms: must be at least 1",
        );
        if !self.templates_dir.is_empty() && !std::path::Path::new(&self.templates_dir).is_dir() {
            out.push(format!(
                "email.templates_dir: {:?} is not a directory",
                self.templates_dir
            ));
        }
        out
    }
}

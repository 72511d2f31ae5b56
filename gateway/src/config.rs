//! The configuration file: one TOML file, `RINGCHAT_<SECTION>__<KEY>` environment overrides,
//! unknown keys rejected, and every problem reported at once.

use std::net::SocketAddr;

use ringchat_backend::config::ObserveConfig;
use ringchat_backend::config::RoomsConfig;
use ringchat_backend::config::{
    AccountsConfig, AdminConfig, BackendConfig, EmailConfig, LoginConfig, PresenceConfig, Settings,
    StorageConfig,
};
use ringchat_backend::config::{ContactsConfig, GroupsConfig, Limits};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

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
    pub observe: ObserveConfig,
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
    /// One shard per listed core, pinned to it; `"auto"`: one per online core not given to the backend.
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
    pub conns_per_shard_max: usize,
    /// Events (replies, pushes) waiting for one shard.
    pub queue_events_max: usize,
    /// Size of the pooled read buffers.
    pub read_buffer_bytes: usize,
    /// Pooled buffers kept per shard when idle.
    pub pool_buffers_max: usize,
    /// How long shutdown waits for clients to be told and flushed.
    pub shutdown_timeout_ms: u64,
    pub tls: TlsConfig,
}

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
            conns_per_shard_max: 500_000,
            queue_events_max: 65_536,
            read_buffer_bytes: 16 * 1024,
            pool_buffers_max: 256,
            shutdown_timeout_ms: 5_000,
            tls: TlsConfig::default(),
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
        let text = match path {
            None => String::new(),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| vec![format!("{}: cannot read: {e}", p.display())])?,
        };
        Self::parse(&text, env)
    }

    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<String>> {
        let mut table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![format!("not valid TOML: {e}")])?;
        let mut problems = Vec::new();
        let defaults = Value::try_from(Config::default()).expect("defaults serialise");
        let defaults_table = defaults.as_table().expect("a table");
        apply_env_overrides(&mut table, defaults_table, env, &mut problems);
        unknown_keys(
            &table,
            defaults.as_table().expect("a table"),
            "",
            &mut problems,
        );
        let config = Config {
            gateway: section(&table, "gateway", &mut problems),
            backend: section(&table, "backend", &mut problems),
            storage: section(&table, "storage", &mut problems),
            accounts: section(&table, "accounts", &mut problems),
            login: section(&table, "login", &mut problems),
            limits: section(&table, "limits", &mut problems),
            admin: section(&table, "admin", &mut problems),
            contacts: section(&table, "contacts", &mut problems),
            email: section(&table, "email", &mut problems),
            presence: section(&table, "presence", &mut problems),
            groups: section(&table, "groups", &mut problems),
            rooms: section(&table, "rooms", &mut problems),
            observe: section(&table, "observe", &mut problems),
        };
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Problems in values that parsed but do not make sense together.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.gateway.problems();
        out.extend(self.backend_settings().problems());
        let online = online_cores();
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
        out
    }

    pub fn backend_settings(&self) -> Settings {
        Settings {
            backend: self.backend.clone(),
            storage: self.storage.clone(),
            accounts: self.accounts.clone(),
            login: self.login.clone(),
            admin: self.admin.clone(),
            email: self.email.clone(),
            presence: self.presence.clone(),
            rooms: self.rooms.clone(),
            observe: self.observe.clone(),
            limits: self.limits.clone(),
            contacts: self.contacts.clone(),
            groups: self.groups.clone(),
            server_name: self.gateway.server_name.clone(),
        }
    }

    /// The cores the shards run on, one shard each.
    pub fn shard_cores(&self) -> Vec<usize> {
        match &self.gateway.cores {
            Cores::List(list) => list.clone(),
            Cores::Named(_) => {
                let online = online_cores();
                let free: Vec<usize> = online
                    .iter()
                    .copied()
                    .filter(|c| !self.backend.cores.contains(c))
                    .collect();
                if free.is_empty() { online } else { free }
            }
        }
    }
}

impl GatewayConfig {
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
                        "gateway.{key}: {e} (expected HOST:PORT, or \"\" for off)"
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
        positive(self.queue_events_max as u64, "queue_events_max");
        positive(self.shutdown_timeout_ms, "shutdown_timeout_ms");
        if self.heartbeat_interval_ms >= self.idle_timeout_ms {
            out.push(
                "gateway.heartbeat_interval_ms: must be below idle_timeout_ms, or idle clients that ping on time get closed"
                    .to_owned(),
            );
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

pub fn online_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}

/// Deserialises one section; a bad value is reported per key so that every one shows up.
fn section<T: DeserializeOwned + Default>(
    table: &Table,
    name: &str,
    problems: &mut Vec<String>,
) -> T {
    let Some(value) = table.get(name) else {
        return T::default();
    };
    let Some(section) = value.as_table() else {
        problems.push(format!("{name}: must be a table ([{name}])"));
        return T::default();
    };
    if let Ok(parsed) = T::deserialize(Value::Table(section.clone())) {
        return parsed;
    }
    // Find each offending key on its own, report it, and keep every other key's value.
    let mut good = Table::new();
    for (key, v) in section {
        let mut alone = Table::new();
        alone.insert(key.clone(), v.clone());
        match T::deserialize(Value::Table(alone)) {
            Ok(_) => {
                good.insert(key.clone(), v.clone());
            }
            // Unknown keys are reported by `unknown_keys`.
            Err(e) if e.to_string().contains("unknown field") => {}
            Err(e) => problems.push(format!("{name}.{key}: {}", e.to_string().trim())),
        }
    }
    T::deserialize(Value::Table(good)).unwrap_or_default()
}

fn unknown_keys(table: &Table, known: &Table, prefix: &str, problems: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match known.get(key) {
            None => problems.push(format!("{path}: unknown key")),
            // An empty table in the defaults is a free-form map (`[login.policy]`): its keys
            // are checked by the section's own validation.
            Some(Value::Table(known_inner)) if !known_inner.is_empty() => {
                if let Value::Table(inner) = value {
                    unknown_keys(inner, known_inner, &format!("{path}."), problems);
                }
            }
            Some(_) => {}
        }
    }
}

/// `RINGCHAT_GATEWAY__TCP_LISTEN=127.0.0.1:7000` sets `gateway.tcp_listen`. A value that parses as
/// TOML (number, boolean, list) is taken as that, anything else as text; for a key whose default
/// is text, only a list is parsed, so `server_name = 123` stays the text "123".
fn apply_env_overrides(
    table: &mut Table,
    defaults: &Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let [tables @ .., key] = path.as_slice() else {
            continue;
        };
        if tables.is_empty() {
            continue;
        }
        let mut default = Some(defaults);
        for t in tables {
            default = default.and_then(|d| d.get(t)).and_then(Value::as_table);
        }
        let default_is_text = default.and_then(|d| d.get(key)).is_some_and(Value::is_str);
        let parsed = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"));
        // A text key takes the text as it stands, unless it is a list (`cores = [0, 1]`).
        let value = match parsed {
            Some(v) if !default_is_text || v.is_array() => v,
            _ => Value::String(raw),
        };
        // `RINGCHAT_GATEWAY__TLS__CERT_PATH` is `[gateway.tls] cert_path`.
        if let Err(depth) = insert_at(table, tables, key.clone(), value) {
            let section = tables[..=depth].join(".");
            problems.push(format!("{name}: [{section}] is not a table in the file"));
        }
    }
}

/// Inserts `key = value` in the table at `path`, creating tables on the way. `Err(i)`: the
/// `i`-th name on the path is not a table.
fn insert_at(table: &mut Table, path: &[String], key: String, value: Value) -> Result<(), usize> {
    let Some((first, rest)) = path.split_first() else {
        table.insert(key, value);
        return Ok(());
    };
    match table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()))
    {
        Value::Table(inner) => insert_at(inner, rest, key, value).map_err(|i| i + 1),
        _ => Err(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", no_env()).unwrap();
        assert_eq!(c.gateway.tcp_listen, "0.0.0.0:7000");
        assert_eq!(c.gateway.ws_listen, "0.0.0.0:7001");
        let addrs = c.gateway.listen_addrs().unwrap();
        assert!(
            addrs.tls.is_none() && addrs.wss.is_none(),
            "TLS needs a certificate"
        );
        assert_eq!(c.admin.listen, "127.0.0.1:8080");
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../ringchat.example.toml");
        Config::parse(text, no_env()).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            colour = "blue"
            [gateway]
            tcp_listen = "nowhere"
            idle_timeout_ms = "soon"
            bogus = 1
            [storage]
            durability = "sometimes"
            [limits]
            sync_page_max = 0
        "#;
        let problems = Config::parse(text, no_env()).unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("colour: unknown key"), "{all}");
        assert!(all.contains("gateway.bogus: unknown key"), "{all}");
        assert!(all.contains("gateway.idle_timeout_ms"), "{all}");
        assert!(all.contains("storage.durability"), "{all}");
        assert!(all.contains("gateway.tcp_listen"), "{all}");
        assert!(all.contains("limits.sync_page_max"), "{all}");
        assert_eq!(problems.len(), 6, "{all}");
    }

    #[test]
    fn semantic_problems_are_listed_together() {
        let text = r#"
            [gateway]
            tcp_listen = "nowhere"
            cores = "some"
            [limits]
            sync_page_max = 0
        "#;
        let problems = Config::parse(text, no_env()).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let env = vec![
            (
                "RINGCHAT_GATEWAY__TCP_LISTEN".to_owned(),
                "127.0.0.1:9".to_owned(),
            ),
            ("RINGCHAT_GATEWAY__CORES".to_owned(), "[0]".to_owned()),
            ("RINGCHAT_STORAGE__DURABILITY".to_owned(), "none".to_owned()),
            ("RINGCHAT_GATEWAY__SERVER_NAME".to_owned(), "123".to_owned()),
            (
                "RINGCHAT_GATEWAY__TLS__CERT_PATH".to_owned(),
                "/etc/c.pem".to_owned(),
            ),
            ("RINGCHAT_GATEWAY__TLS__KEY_PATH".to_owned(), "k".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let c = Config::parse("[gateway]\ntcp_listen = \"0.0.0.0:1\"", env).unwrap();
        assert_eq!(c.gateway.tcp_listen, "127.0.0.1:9");
        assert_eq!(c.gateway.cores, Cores::List(vec![0]));
        assert_eq!(c.gateway.server_name, "123", "text keys stay text");
        assert_eq!(c.gateway.tls.cert_path, "/etc/c.pem", "nested sections");
        assert_eq!(
            c.storage.durability,
            ringchat_backend::config::Durability::None
        );
    }

    #[test]
    fn device_policy_is_a_map_of_known_platforms() {
        let c = Config::parse("[login.policy]\nios = \"replace\"\n", no_env()).unwrap();
        assert_eq!(
            c.login.policy.get("ios"),
            Some(&ringchat_backend::config::DevicePolicy::Replace)
        );
        let unknown = Config::parse("[login.policy]\nnokia = \"replace\"\n", no_env()).unwrap_err();
        assert!(unknown[0].contains("nokia"), "{unknown:?}");
        let bad = Config::parse("[login.policy]\nweb = \"maybe\"\n", no_env()).unwrap_err();
        assert!(bad[0].contains("maybe"), "{bad:?}");
    }

    #[test]
    fn tls_section_and_listener_switches() {
        let text = "[gateway]\ntcp_listen = \"\"\nws_listen = \"\"\n[gateway.tls]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n";
        let c = Config::parse(text, no_env()).unwrap();
        let addrs = c.gateway.listen_addrs().unwrap();
        assert!(addrs.tcp.is_none() && addrs.ws.is_none());
        assert_eq!(addrs.wss.unwrap().port(), 7444);
        let half = Config::parse("[gateway.tls]\ncert_path = \"c.pem\"\n", no_env()).unwrap_err();
        assert!(half[0].contains("gateway.tls"), "{half:?}");
        let none = Config::parse("[gateway]\ntcp_listen = \"\"\nws_listen = \"\"\n", no_env())
            .unwrap_err();
        assert!(none[0].contains("every client listener is off"), "{none:?}");
        let typo = Config::parse("[gateway.tls]\ncert = \"c.pem\"\n", no_env()).unwrap_err();
        assert_eq!(typo, vec!["gateway.tls.cert: unknown key".to_owned()]);
    }

    #[test]
    fn unknown_env_key_is_a_problem() {
        let env = vec![("RINGCHAT_GATEWAY__NOPE".to_owned(), "1".to_owned())];
        let problems = Config::parse("", env).unwrap_err();
        assert_eq!(problems, vec!["gateway.nope: unknown key".to_owned()]);
    }
}

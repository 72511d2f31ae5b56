//! Which keys change while the server runs, and the overrides file that keeps such changes
//! across restarts.
//!
//! The overrides file is `<storage.data_dir>/config.overrides.toml`: the data dir is the one
//! place the server always may write (a config in /etc usually is not writable by it), it is
//! per server like the changes, and a deploy that replaces the config file does not drop them
//! silently (`GET /api/config` shows every key's source). It wins over the file and the
//! environment: it holds the operator's latest decision.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::Config;
use super::load::{Loaded, Origin, insert_at, leaf_paths, value_at};

/// Declares the live keys once: the list of their names and the copy of their values from
/// one typed config into another (`merge_live`), so that the two cannot drift apart.
macro_rules! live_keys {
    ($($section:ident . $field:ident,)*) => {
        /// The keys that change without a restart, and what applies them.
        pub const LIVE_KEYS: &[&str] = &[$(concat!(stringify!($section), ".", stringify!($field))),*];

        /// Copies every live key's value from `from` into `into`, field by field: no trip
        /// through a serialised form, which hides secrets.
        fn copy_live(into: &mut Config, from: &Config) {
            $(into.$section.$field.clone_from(&from.$section.$field);)*
        }
    };
}

live_keys! {
    // Shards (a `Reconfigure` event): the next request, accept or reaper tick.
    limits.messages_per_s_max,
    gateway.conns_per_shard_max,
    gateway.prelogin_conns_per_ip_max,
    gateway.prelogin_conns_per_network_max,
    gateway.handshake_timeout_ms,
    gateway.heartbeat_interval_ms,
    gateway.idle_timeout_ms,
    security.allow,
    security.deny,
    security.rules_max,
    // Backend (`Backend::reconfigure`): the next registration, login or search.
    accounts.password_bytes_min,
    accounts.password_bytes_max,
    login.failures_free,
    login.failures_free_per_network,
    login.failure_delay_ms,
    login.failure_delay_ms_max,
    login.failure_window_s,
    contacts.searches_per_min_max,
    contacts.profiles_per_min_max,
    contacts.profile_updates_per_min_max,
    // The log pipeline's filter, through the hook the binary sets.
    log.filter,
}

pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.contains(&key)
}

/// Why a key needs a restart, in words.
pub fn restart_reason(key: &str) -> &'static str {
    match key.split('.').next().unwrap_or("") {
        "gateway" => "the listeners, shards and their buffers are set up from it at start",
        "backend" => "the backend's threads and queues are made from it at start",
        "storage" => "the store is opened with it at start",
        "admin" => "the admin listener is set up from it at start",
        "email" => "the mail relay and code tables are set up from it at start",
        "files" => "the file storage and its limits are set up from it at start",
        _ => "it is read once at start",
    }
}

pub fn overrides_path(config: &Config) -> PathBuf {
    config
        .storage
        .data_dir
        .join(ringchat_backend::config::CONFIG_OVERRIDES_FILE)
}

/// The configuration to run after a reload or a change: `running` with the live keys of
/// `candidate`. Keys that are not live keep their running value (and origin) until a restart;
/// they are returned apart. `online`: the host's cores as read at start (`Layers::host`).
pub fn merge_live(
    running: &Loaded,
    candidate: &Loaded,
    online: &[usize],
) -> Result<(Loaded, Vec<String>), Vec<String>> {
    // Typed, not through a TOML table: secrets serialise hidden ("(hidden)", credentials
    // stripped, or not at all), and a round trip lost them (every change refused on a cluster
    // node: "cluster.peer_secret: required").
    let mut config = running.config.clone();
    copy_live(&mut config, &candidate.config);
    let mut origins = running.origins.clone();
    for key in LIVE_KEYS {
        match candidate.origins.get(*key) {
            Some(o) => origins.insert((*key).to_owned(), o.clone()),
            None => origins.remove(*key),
        };
    }
    // Live and non-live keys are checked together again (for example heartbeat < idle).
    let problems = config.problems_on(online);
    if !problems.is_empty() {
        return Err(problems);
    }
    let running_keys = flat(&running.config);
    let pending = flat(&candidate.config)
        .into_iter()
        .filter(|(k, v)| !is_live(k) && running_keys.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    Ok((Loaded { config, origins }, pending))
}

fn as_table(config: &Config) -> Table {
    match Value::try_from(config).expect("a config serialises") {
        Value::Table(t) => t,
        _ => unreachable!("a config is a table"),
    }
}

/// Every key's value as JSON, by dotted path.
pub fn flat(config: &Config) -> BTreeMap<String, serde_json::Value> {
    let table = as_table(config);
    let mut keys = Vec::new();
    leaf_paths(&table, "", &mut keys);
    keys.into_iter()
        .filter_map(|k| {
            let v = serde_json::to_value(value_at(&table, &k)?).ok()?;
            Some((k, v))
        })
        .collect()
}

/// The changed keys between two configs, values as shown (secrets redacted).
pub fn diff(old: &Config, new: &Config) -> Vec<ringchat_backend::live::KeyChange> {
    use ringchat_backend::live::{KeyChange, shown};
    let (old, new) = (flat(old), flat(new));
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| KeyChange {
            key: k.clone(),
            old: shown(k, old.get(k).unwrap_or(&serde_json::Value::Null)),
            new: shown(k, v),
        })
        .collect()
}

/// The overrides as TOML text, with a header that says what the file is.
pub fn overrides_text(overrides: &Table) -> String {
    let body = toml::to_string(overrides).unwrap_or_default();
    format!(
        "# Written by ringchat (PATCH /api/config): live keys changed while it ran.\n\
         # They win over the configuration file and RINGCHAT_ variables; delete a key here\n\
         # (then SIGHUP) or PATCH it to null to go back.\n\n{body}"
    )
}

/// Replaces `path` whole or not at all: a temporary file beside it, fsync'ed, renamed over it,
/// and the directory fsync'ed so that the rename survives a crash.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The overrides of a loaded configuration: the keys whose origin is the overrides file.
pub fn overrides_of(loaded: &Loaded) -> Table {
    let table = as_table(&loaded.config);
    let mut out = Table::new();
    for (key, origin) in &loaded.origins {
        if matches!(origin, Origin::Override { .. })
            && let Some(v) = value_at(&table, key)
            && !v.is_table()
        {
            set(&mut out, key, Some(v.clone()));
        }
    }
    out
}

/// Sets (or with `None` removes) a dotted key in a table of overrides.
pub fn set(table: &mut Table, key: &str, value: Option<Value>) {
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    let (last, tables) = path.split_last().expect("a key has a name");
    match value {
        Some(v) => {
            let _ = insert_at(table, tables, last.clone(), v);
        }
        None => {
            let mut t = &mut *table;
            for name in tables {
                match t.get_mut(name) {
                    Some(Value::Table(inner)) => t = inner,
                    _ => return,
                }
            }
            t.remove(last);
        }
    }
    prune(table);
}

/// Drops tables left empty.
fn prune(table: &mut Table) {
    for (_, v) in table.iter_mut() {
        if let Value::Table(inner) = v {
            prune(inner);
        }
    }
    table.retain(|_, v| !matches!(v, Value::Table(t) if t.is_empty()));
}

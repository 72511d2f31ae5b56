//! Reading the configuration in layers, lowest first: defaults, the file, `RINGCHAT_…`
//! environment variables, the overrides file (`PATCH /api/config`). Every key remembers where
//! its value came from, so that a problem names the file and line or the variable, echoes the
//! value (secrets redacted, credentials hidden), and an unknown key gets the closest known one.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{Config, ENV_PREFIX, HostCpus};

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File { path: String, line: usize },
    Env { var: String, raw: String },
    Override { path: String, line: usize },
}

impl Origin {
    pub fn source(&self) -> ringchat_backend::live::Source {
        use ringchat_backend::live::Source;
        match self {
            Origin::Default => Source::Default,
            Origin::File { .. } => Source::File,
            Origin::Env { .. } => Source::Env,
            Origin::Override { .. } => Source::Override,
        }
    }

    /// `FILE:LINE`, the variable's name, or nothing for a default.
    pub fn place(&self) -> String {
        match self {
            Origin::Default => String::new(),
            Origin::File { path, line } | Origin::Override { path, line } => {
                if path == PATCH_LAYER {
                    path.clone()
                } else {
                    format!("{path}:{line}")
                }
            }
            Origin::Env { var, .. } => var.clone(),
        }
    }
}

/// The path of the layer a `PATCH /api/config` is checked as: its problems name no line.
pub const PATCH_LAYER: &str = "PATCH /api/config";

/// A text layer: where it is (for messages) and what it says.
#[derive(Debug, Clone)]
pub struct TextLayer {
    pub path: String,
    pub text: String,
}

/// Everything the configuration is made of.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub file: Option<TextLayer>,
    pub env: Vec<(String, String)>,
    pub overrides: Option<TextLayer>,
    /// The CPUs to check `gateway.cores` and `backend.cores` against and to resolve `"auto"`
    /// on: read once as the server starts (`Config::load_layers`), or another host's
    /// (`check-config --host-cores`, `tune`); `None`: this machine's, read at each load.
    pub host: Option<HostCpus>,
}

impl Layers {
    /// `host`, or this machine's CPUs as the calling thread sees them.
    pub fn host(&self) -> HostCpus {
        self.host.clone().unwrap_or_else(HostCpus::read)
    }
}

/// A loaded configuration and where each key (and table) came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: BTreeMap<String, Origin>,
}

impl Loaded {
    pub fn origin(&self, key: &str) -> &Origin {
        self.origins.get(key).unwrap_or(&Origin::Default)
    }
}

/// Reads every layer, reports every problem at once (each located), or returns the config.
pub fn load(layers: &Layers) -> Result<Loaded, Vec<String>> {
    let (loaded, problems) = load_all(layers)?;
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// Reads every layer: the config with every problem found (each located; a section with a value
/// of the wrong type is its defaults), so that checks of what the values name (TLS files) can
/// run on a config that also has other problems. `Err`: a layer is not TOML, no config at all.
pub fn load_all(layers: &Layers) -> Result<(Loaded, Vec<String>), Vec<String>> {
    let mut table = Table::new();
    let mut origins = BTreeMap::new();
    let mut problems = Vec::new();
    let defaults = known_keys();
    let defaults = &defaults;
    if let Some(file) = &layers.file {
        merge_text(file, &mut table, &mut origins, false)?;
    }
    apply_env(
        &mut table,
        defaults,
        &layers.env,
        &mut origins,
        &mut problems,
    );
    if let Some(overrides) = &layers.overrides {
        merge_text(overrides, &mut table, &mut origins, true)?;
    }
    let mut unknown = Vec::new();
    unknown_keys(&table, defaults, "", &mut unknown);
    for key in unknown {
        let hint = suggest(&key, defaults)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        problems.push(locate(
            &key,
            &format!("unknown key{hint}"),
            &table,
            &origins,
        ));
    }
    let mut typed = Vec::new();
    let host = layers.host();
    let config = Config {
        gateway: section(&table, "gateway", &mut typed),
        backend: section(&table, "backend", &mut typed),
        storage: section(&table, "storage", &mut typed),
        accounts: section(&table, "accounts", &mut typed),
        login: section(&table, "login", &mut typed),
        limits: section(&table, "limits", &mut typed),
        admin: section(&table, "admin", &mut typed),
        contacts: section(&table, "contacts", &mut typed),
        email: section(&table, "email", &mut typed),
        presence: section(&table, "presence", &mut typed),
        groups: section(&table, "groups", &mut typed),
        rooms: section(&table, "rooms", &mut typed),
        security: section(&table, "security", &mut typed),
        log: section(&table, "log", &mut typed),
        notifications: section(&table, "notifications", &mut typed),
        push: section(&table, "push", &mut typed),
        observe: section(&table, "observe", &mut typed),
        backup: section(&table, "backup", &mut typed),
        cluster: section(&table, "cluster", &mut typed),
        files: section(&table, "files", &mut typed),
    };
    problems.extend(
        typed
            .into_iter()
            .chain(config.problems_on(&host.online))
            .map(|p| locate_problem(&p, &table, &origins)),
    );
    // Whatever a problem quotes (a value, a parser's message), no password: they are logged,
    // and the logs are served to viewers.
    let problems = problems
        .iter()
        .map(|p| ringchat_backend::live::credentials_hidden(p))
        .collect();
    Ok((Loaded { config, origins }, problems))
}

/// Keys a file or the environment may set that the defaults do not show, each with a value of
/// its type: an `Option` that is `None` by default (TOML has no null, so it is left out) or a
/// secret that never serialises. Without them here they would be refused as unknown.
const UNSHOWN_KEYS: [(&str, &str); 3] = [
    ("storage.scylla.password_file", "\"\""),
    ("storage.scylla.password", "\"\""),
    // No longer used; accepted so that older files still load.
    ("storage.dedup_filter_items", "0"),
];

/// Every key a layer may set, with its default (or, for `UNSHOWN_KEYS`, a value of its type):
/// what unknown keys are found against, what a typo is matched to, and what tells an
/// environment variable's type.
pub fn known_keys() -> Table {
    let Value::Table(mut known) = Value::try_from(Config::default()).expect("defaults serialise")
    else {
        unreachable!("a config is a table")
    };
    for (key, value) in UNSHOWN_KEYS {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        let (name, tables) = path.split_last().expect("a dotted key");
        let value: Value = value.parse().expect("a TOML value");
        insert_at(&mut known, tables, name.clone(), value).expect("its section is a table");
    }
    known
}

/// Parses a text layer into `table`, recording each key's line.
fn merge_text(
    layer: &TextLayer,
    table: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
    is_override: bool,
) -> Result<(), Vec<String>> {
    let parsed: Table = layer.text.parse().map_err(|e: toml::de::Error| {
        vec![format!(
            "{}: not valid TOML: {}",
            layer.path,
            e.to_string().trim()
        )]
    })?;
    let mut lines = BTreeMap::new();
    if let Ok(spanned) = toml::de::DeTable::parse(&layer.text) {
        key_lines(spanned.get_ref(), "", &layer.text, &mut lines);
    }
    for (key, line) in lines {
        let origin = if is_override {
            Origin::Override {
                path: layer.path.clone(),
                line,
            }
        } else {
            Origin::File {
                path: layer.path.clone(),
                line,
            }
        };
        origins.insert(key, origin);
    }
    merge(table, parsed);
    Ok(())
}

/// Merges `from` into `into`, tables key by key, other values replaced.
fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(inner)), Value::Table(more)) => merge(inner, more),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn key_lines(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    text: &str,
    out: &mut BTreeMap<String, usize>,
) {
    for (key, value) in table {
        let path = format!("{prefix}{}", key.get_ref());
        let at = key.span().start.min(text.len());
        out.insert(path.clone(), text[..at].matches('\n').count() + 1);
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            key_lines(inner, &format!("{path}."), text, out);
        }
    }
}

/// The value at a dotted path.
pub fn value_at<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// `problem` (`key: message`) with where the key's value came from and the value.
fn locate_problem(problem: &str, table: &Table, origins: &BTreeMap<String, Origin>) -> String {
    match problem.split_once(": ") {
        Some((key, message)) if !key.contains(' ') => locate(key, message, table, origins),
        _ => problem.to_owned(),
    }
}

/// `FILE:LINE: key = value: message`, `environment VAR=raw: key: message`, or `key: message`
/// for a default.
fn locate(key: &str, message: &str, table: &Table, origins: &BTreeMap<String, Origin>) -> String {
    let shown = |v: String| ringchat_backend::live::shown_text(key, &v);
    match origins.get(key) {
        Some(Origin::Env { var, raw }) => {
            format!(
                "environment variable {var}={}: {key}: {message}",
                shown(raw.clone())
            )
        }
        Some(origin @ (Origin::File { .. } | Origin::Override { .. })) => {
            let value = match value_at(table, key) {
                Some(Value::Table(_)) | None => String::new(),
                Some(v) => format!(" = {}", shown(v.to_string())),
            };
            format!("{}: {key}{value}: {message}", origin.place())
        }
        Some(Origin::Default) | None => format!("{key}: {message}"),
    }
}

/// The closest known key to an unknown one: the same name in another section, a name it
/// starts (`cert` → `cert_path`), or a name a typo or two away; `None` when nothing is close.
pub fn suggest(unknown: &str, defaults: &Table) -> Option<String> {
    let mut known = Vec::new();
    leaf_paths(defaults, "", &mut known);
    let (parent, name) = unknown.rsplit_once('.').unwrap_or(("", unknown));
    let split = |k: &str| -> (String, String) {
        let (p, n) = k.rsplit_once('.').unwrap_or(("", k));
        (p.to_owned(), n.to_owned())
    };
    if let Some(same) = known
        .iter()
        .find(|k| split(k).1 == name && k.as_str() != unknown)
    {
        return Some(same.clone());
    }
    known
        .into_iter()
        .filter_map(|k| {
            let (p, n) = split(&k);
            let mut score = strsim::normalized_damerau_levenshtein(name, &n);
            if p == parent && name.len() >= 3 && n.starts_with(name) {
                score = score.max(0.8);
            }
            if p != parent {
                score -= 0.1;
            }
            (score >= 0.7).then_some((score, k))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Every key path of a table, tables included only when empty (free-form maps).
pub fn leaf_paths(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            Value::Table(inner) if !inner.is_empty() => leaf_paths(inner, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
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
            Err(e) => problems.push(format!(
                "{name}.{key}: {}",
                e.to_string().trim().replace('\n', " ")
            )),
        }
    }
    T::deserialize(Value::Table(good)).unwrap_or_default()
}

fn unknown_keys(table: &Table, known: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match known.get(key) {
            None => out.push(path),
            // An empty table in the defaults is a free-form map (`[login.policy]`): its keys
            // are checked by the section's own validation.
            Some(Value::Table(known_inner)) if !known_inner.is_empty() => {
                if let Value::Table(inner) = value {
                    unknown_keys(inner, known_inner, &format!("{path}."), out);
                }
            }
            Some(_) => {}
        }
    }
}

/// `RINGCHAT_GATEWAY__TCP_LISTEN=127.0.0.1:7000` sets `gateway.tcp_listen`. A value that parses as
/// TOML (number, boolean, list) is taken as that, anything else as text; for a key whose default
/// is text, only a list is parsed, so `server_name = 123` stays the text "123".
fn apply_env(
    table: &mut Table,
    defaults: &Table,
    env: &[(String, String)],
    origins: &mut BTreeMap<String, Origin>,
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
            _ => Value::String(raw.clone()),
        };
        // `RINGCHAT_GATEWAY__TLS__CERT_PATH` is `[gateway.tls] cert_path`.
        match insert_at(table, tables, key.clone(), value) {
            Ok(()) => {
                origins.insert(
                    path.join("."),
                    Origin::Env {
                        var: name.clone(),
                        raw: raw.clone(),
                    },
                );
            }
            Err(depth) => {
                let section = tables[..=depth].join(".");
                problems.push(format!(
                    "environment variable {name}: [{section}] is not a table in the file"
                ));
            }
        }
    }
}

/// Inserts `key = value` in the table at `path`, creating tables on the way. `Err(i)`: the
/// `i`-th name on the path is not a table.
pub fn insert_at(
    table: &mut Table,
    path: &[String],
    key: String,
    value: Value,
) -> Result<(), usize> {
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

//! The running configuration: what `GET /api/config` shows, what `PATCH /api/config` and
//! `SIGHUP` change. Every change goes through `config::load` (the rules `check-config` applies),
//! then `config::live::merge_live` (only live keys move; the mix is checked again), is
//! persisted to the overrides file, and applied: the shards (`ShardEvent::Reconfigure`, waited
//! for), the backend (`Backend::reconfigure`) and the log filter hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringchat_backend::Backend;
use ringchat_backend::api::{ShardEvent, ShardSender};
use ringchat_backend::live::{
    ConfigControl, ConfigRefusal, ConfigView, IpRulesView, KeyChange, KeyView, LoweredKey, shown,
};

use crate::config::Config;
use crate::config::live::{self, is_live, restart_reason};
use crate::config::load::{self, Layers, Loaded, TextLayer, suggest};
use crate::fd_budget::ConnsCap;
use crate::shard::live::{Published, ShardLive};

/// How long a change waits for every shard to take it.
const SHARDS_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the log pipeline's filter (`log.filter`); the binary's logging sets it.
pub type LogFilterHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub struct RuntimeConfig {
    state: Mutex<State>,
    /// What the shards read on `Reconfigure`.
    shard_live: Arc<Published>,
    shards: Vec<ShardSender>,
    backend: Arc<Backend>,
    log_filter: Mutex<Option<LogFilterHook>>,
    /// What the open-file limit holds: `gateway.conns_per_shard_max` never goes past it.
    conns_cap: ConnsCap,
}

struct State {
    /// The file and environment as last read (start or SIGHUP).
    layers: Layers,
    /// What runs now.
    running: Loaded,
}

impl RuntimeConfig {
    pub fn new(
        layers: Layers,
        running: Loaded,
        shard_live: Arc<Published>,
        shards: Vec<ShardSender>,
        backend: Arc<Backend>,
        conns_cap: ConnsCap,
    ) -> Self {
        Self {
            state: Mutex::new(State { layers, running }),
            shard_live,
            shards,
            backend,
            log_filter: Mutex::new(None),
            conns_cap,
        }
    }

    pub fn set_log_filter_hook(&self, hook: LogFilterHook) {
        *self.log_filter.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `SIGHUP`: reads the file and the overrides file again and applies their live keys. A
    /// file with problems is refused whole (they are logged); keys that need a restart are
    /// logged and keep their running value. Blocking.
    pub fn reload(&self) {
        let mut state = self.lock();
        let mut layers = state.layers.clone();
        let reread = |layer: &mut Option<TextLayer>| -> Result<(), String> {
            if let Some(l) = layer {
                match std::fs::read_to_string(&l.path) {
                    Ok(text) => l.text = text,
                    // An overrides file removed by hand: no overrides.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => l.text.clear(),
                    Err(e) => return Err(format!("{}: cannot read: {e}", l.path)),
                }
            }
            Ok(())
        };
        if let Err(why) = reread(&mut layers.file) {
            tracing::error!(problem = %why, "SIGHUP: configuration not reloaded");
            return;
        }
        let overrides = live::overrides_path(&state.running.config);
        layers.overrides = std::fs::read_to_string(&overrides)
            .ok()
            .map(|text| TextLayer {
                path: overrides.display().to_string(),
                text,
            });
        let (next, pending) = match load::load(&layers).and_then(|candidate| {
            live::merge_live(&state.running, &candidate, &layers.host().online)
        }) {
            Ok(ok) => ok,
            Err(problems) => {
                for p in &problems {
                    tracing::error!(problem = %p, "SIGHUP: configuration refused");
                }
                tracing::error!(
                    problems = problems.len(),
                    "SIGHUP: the configuration has problems; still running the previous one"
                );
                return;
            }
        };
        for key in &pending {
            tracing::warn!(
                key,
                why = restart_reason(key),
                "SIGHUP: changed, but needs a restart"
            );
        }
        let changed = live::diff(&state.running.config, &next.config);
        if let Err(why) = self.apply(&state.running.config, &next.config) {
            tracing::error!(%why, "SIGHUP: configuration not applied");
            return;
        }
        for change in &changed {
            tracing::info!(key = %change.key, change = %change.describe(), "SIGHUP: configuration changed");
            self.backend.audit_config_change("signal:SIGHUP", change);
        }
        if changed.is_empty() && pending.is_empty() {
            tracing::info!("SIGHUP: configuration reloaded, nothing changed");
        }
        state.layers = layers;
        state.running = next;
    }

    /// Puts a validated configuration in force: shards first (waited for), then the backend,
    /// then the log filter.
    fn apply(&self, old: &Config, new: &Config) -> Result<(), String> {
        let conns = new.gateway.conns_per_shard_max;
        if self.conns_cap.lowers(conns) && conns != old.gateway.conns_per_shard_max {
            warn_conns_lowered(conns, &self.conns_cap);
        }
        crate::stats::publish_conns_per_shard_max(self.conns_cap.apply(conns));
        self.shard_live.set(ShardLive::of(new, &self.conns_cap));
        let (tx, rx) = std::sync::mpsc::sync_channel(self.shards.len());
        let mut told = 0;
        for shard in &self.shards {
            let event = ShardEvent::Reconfigure {
                applied: tx.clone(),
            };
            // A stopped shard is skipped: it serves nobody.
            if shard.blocking_send(event).is_ok() {
                told += 1;
            }
        }
        let deadline = std::time::Instant::now() + SHARDS_APPLY_TIMEOUT;
        for _ in 0..told {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if rx.recv_timeout(left).is_err() {
                tracing::warn!(
                    "a shard did not take the new configuration in time; it will when it drains its inbox"
                );
                break;
            }
        }
        self.backend.reconfigure(new.backend_settings());
        let filter = |c: &Config| {
            live::flat(c)
                .get("log.filter")
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        if let Some(f) = filter(new)
            && filter(old).as_ref() != Some(&f)
            && let Some(hook) = &*self.log_filter.lock().unwrap_or_else(|p| p.into_inner())
        {
            hook(&f)?;
        }
        Ok(())
    }
}

impl ConfigControl for RuntimeConfig {
    fn view(&self) -> ConfigView {
        let state = self.lock();
        let running = &state.running;
        let keys = live::flat(&running.config)
            .into_iter()
            .map(|(key, value)| {
                let origin = running.origin(&key);
                KeyView {
                    value: shown(&key, &value),
                    source: origin.source(),
                    origin: origin.place(),
                    live: is_live(&key),
                    key,
                }
            })
            .collect();
        let mut config = serde_json::to_value(&running.config).unwrap_or_default();
        redact(&mut config, "");
        ConfigView {
            config_file: state.layers.file.as_ref().map(|f| f.path.clone()),
            overrides_file: live::overrides_path(&running.config).display().to_string(),
            config,
            keys,
            lowered: lowered(&running.config, &self.conns_cap),
        }
    }

    fn patch(
        &self,
        changes: Vec<(String, serde_json::Value)>,
    ) -> Result<Vec<KeyChange>, ConfigRefusal> {
        let mut state = self.lock();
        let known = live::flat(&state.running.config);
        let defaults = load::known_keys();
        let mut overrides = live::overrides_of(&state.running);
        let mut problems = Vec::new();
        for (key, value) in changes {
            if !known.contains_key(&key) {
                let hint = suggest(&key, &defaults)
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                problems.push(format!("{key}: unknown key{hint}"));
            } else if !is_live(&key) {
                problems.push(format!(
                    "{key}: cannot change while the server runs ({}): change it in the configuration file and restart",
                    restart_reason(&key)
                ));
            } else if value.is_null() {
                live::set(&mut overrides, &key, None);
            } else {
                match toml::Value::try_from(&value) {
                    Ok(v) if !v.is_table() => live::set(&mut overrides, &key, Some(v)),
                    _ => problems.push(format!("{key}: {value} is not a value for this key")),
                }
            }
        }
        if !problems.is_empty() {
            return Err(ConfigRefusal::Invalid(problems));
        }
        let path = live::overrides_path(&state.running.config);
        let text = live::overrides_text(&overrides);
        let mut layers = state.layers.clone();
        // Problems in the new values name the request, not a file not yet written.
        layers.overrides = Some(TextLayer {
            path: load::PATCH_LAYER.to_owned(),
            text: text.clone(),
        });
        let candidate = load::load(&layers).map_err(ConfigRefusal::Invalid)?;
        let (mut next, _) = live::merge_live(&state.running, &candidate, &layers.host().online)
            .map_err(ConfigRefusal::Invalid)?;
        live::write_atomically(&path, &text)
            .map_err(|e| ConfigRefusal::Failed(format!("writing {}: {e}", path.display())))?;
        for origin in next.origins.values_mut() {
            if let load::Origin::Override { path: p, .. } = origin {
                *p = path.display().to_string();
            }
        }
        let changed = live::diff(&state.running.config, &next.config);
        self.apply(&state.running.config, &next.config)
            .map_err(ConfigRefusal::Failed)?;
        layers.overrides = Some(TextLayer {
            path: path.display().to_string(),
            text,
        });
        state.layers = layers;
        state.running = next;
        Ok(changed)
    }

    fn ip_rules(&self) -> IpRulesView {
        let state = self.lock();
        let s = &state.running.config.security;
        IpRulesView {
            allow: s.allow.clone(),
            deny: s.deny.clone(),
            entries_max: s.rules_max,
        }
    }
}

/// Says in the log that `gateway.conns_per_shard_max` runs lower than configured, and why.
pub fn warn_conns_lowered(configured: usize, cap: &ConnsCap) {
    tracing::warn!(
        configured,
        effective = cap.conns_per_shard_max,
        open_files_max = cap.nofile,
        reserved = cap.reserve,
        "gateway.conns_per_shard_max lowered to what the open-file limit holds (raise \
         LimitNOFILE= / ulimit -Hn for more): past it clients are told SERVER_FULL instead of \
         the server running out of descriptors"
    );
}

/// The keys that run lower than configured (`ConfigView::lowered`).
fn lowered(config: &Config, cap: &ConnsCap) -> Vec<LoweredKey> {
    let conns = config.gateway.conns_per_shard_max;
    if !cap.lowers(conns) {
        return Vec::new();
    }
    vec![LoweredKey {
        key: "gateway.conns_per_shard_max".to_owned(),
        configured: conns.into(),
        effective: cap.conns_per_shard_max.into(),
        why: format!(
            "the open-file limit is {} and {} descriptors are kept for the store, logs, \
             listeners, admin and file connections: the shards together hold no more clients \
             than the rest",
            cap.nofile, cap.reserve
        ),
    }]
}

/// Replaces secret values in a JSON config in place.
fn redact(value: &mut serde_json::Value, prefix: &str) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map.iter_mut() {
            let path = format!("{prefix}{k}");
            if v.is_object() {
                redact(v, &format!("{path}."));
            } else {
                *v = shown(&path, v);
            }
        }
    }
}

//! Settings that change while the server runs: `PATCH /api/config` and `SIGHUP`.
//!
//! The binary owns the configuration file (parsing, environment overrides, the overrides file,
//! validation: one place, the same as `ringchat check-config`) and implements `ConfigControl`;
//! the admin API only calls it. The backend's own live keys are pulled from `LiveSettings`
//! where they are used (a login, a password check, a search), never on the message path.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Settings;

/// The backend's current settings. Read where a live key is used (once per login, password
/// check or search: a read lock and an `Arc` clone), replaced whole by `Backend::reconfigure`.
#[derive(Debug)]
pub struct LiveSettings {
    current: RwLock<Arc<Settings>>,
}

impl LiveSettings {
    pub fn new(settings: Settings) -> Self {
        Self {
            current: RwLock::new(Arc::new(settings)),
        }
    }

    pub fn get(&self) -> Arc<Settings> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set(&self, settings: Settings) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}

impl crate::Backend {
    /// Applies new values of the backend's live keys (validated by the caller: the binary's
    /// configuration loader). Keys that are not live are taken too but read by nothing that
    /// runs: they apply at the next start.
    pub fn reconfigure(&self, settings: Settings) {
        self.contacts.reconfigure(&settings.contacts);
        self.live.set(settings);
    }

    /// The backend's live settings, for what reads them (the admin listener's login throttle).
    pub fn live(&self) -> &Arc<LiveSettings> {
        &self.live
    }

    /// Records a configuration change made without an operator (`SIGHUP`) in the audit log.
    pub fn audit_config_change(&self, actor: &str, change: &KeyChange) {
        self.audit.record(
            crate::audit::Entry::new(actor, "config.change")
                .target(change.key.clone())
                .detail(change.describe()),
        );
    }
}

/// Where a key's effective value comes from, lowest first: a later one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Default,
    /// The configuration file.
    File,
    /// A `RINGCHAT_<SECTION>__<KEY>` environment variable.
    Env,
    /// The overrides file written by `PATCH /api/config`.
    Override,
}

/// One key of the effective configuration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// `section.key`, as `PATCH /api/config` takes it.
    pub key: String,
    /// Its value, of the key's own type (secrets are `"<redacted>"` when set).
    pub value: serde_json::Value,
    pub source: Source,
    /// Where exactly: `FILE:LINE`, the environment variable's name, or empty for a default.
    pub origin: String,
    /// Changeable without a restart.
    pub live: bool,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigView {
    /// The configuration file the server started with (`null`: none, all defaults).
    pub config_file: Option<String>,
    /// Where `PATCH /api/config` persists its changes.
    pub overrides_file: String,
    /// Every section, as the server runs it, secrets redacted.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Every key with its source, sorted by key.
    pub keys: Vec<KeyView>,
    /// Keys the server runs with a lower value than `config` says, and why (empty: none).
    pub lowered: Vec<LoweredKey>,
}

/// A key the server applies at a lower value than configured (e.g.
/// `gateway.conns_per_shard_max` past what the open-file limit holds).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoweredKey {
    pub key: String,
    /// Of the key's own type (any JSON value, as `KeyView.value`).
    pub configured: serde_json::Value,
    /// What the server applies.
    pub effective: serde_json::Value,
    pub why: String,
}

/// A key whose value changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyChange {
    pub key: String,
    /// Values of the key's own type (any JSON value, as `KeyView.value`).
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

impl KeyChange {
    /// `OLD → NEW`, for the audit log and the server's log.
    pub fn describe(&self) -> String {
        format!("{} → {}", self.old, self.new)
    }
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRefusal {
    /// The change is not allowed: unknown or not-live keys, or values the configuration's
    /// validation refuses (the same messages as `ringchat check-config`).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Valid, but it could not be persisted or applied (nothing was changed).
    #[error("{0}")]
    Failed(String),
}

/// The IP rules applied at accept on every shard.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IpRulesView {
    /// Addresses or CIDR ranges allowed to connect; empty: everyone not denied.
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused; a deny wins over an allow.
    pub deny: Vec<String>,
    /// Entries each list may hold.
    pub entries_max: usize,
}

/// The running configuration, as the binary manages it.
pub trait ConfigControl: Send + Sync {
    fn view(&self) -> ConfigView;
    /// Validates, persists and applies changes of live keys, all or none; a `null` value drops
    /// the key's override (back to the file, environment or default). Blocking: call off the
    /// runtime's workers.
    fn patch(
        &self,
        changes: Vec<(String, serde_json::Value)>,
    ) -> Result<Vec<KeyChange>, ConfigRefusal>;
    fn ip_rules(&self) -> IpRulesView;
}

/// Keys whose values are secrets: shown as `"<redacted>"` when set. Paths to key files are
/// not secrets (their contents are).
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    if last.ends_with("_path") || last.ends_with("_file") || last.ends_with("_dir") {
        return false;
    }
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| last == *s || last.ends_with(&format!("_{s}")))
}

/// The value to show for `key`.
pub fn shown(key: &str, value: &serde_json::Value) -> serde_json::Value {
    let empty = match value {
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    };
    if is_secret_key(key) && !empty {
        serde_json::Value::String("<redacted>".to_owned())
    } else {
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name_and_paths_are_not() {
        for k in [
            "email.smtp.password",
            "push.secret",
            "push.hmac_secret",
            "x.api_key",
            "x.token",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "admin.tls.key_path",
            "gateway.tls.cert_path",
            "email.smtp.username",
            "login.token_ttl_s",
            "limits.messages_per_s_max",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        assert_eq!(
            shown("email.smtp.password", &serde_json::json!("hunter2")),
            serde_json::json!("<redacted>")
        );
        assert_eq!(
            shown("email.smtp.password", &serde_json::json!("")),
            serde_json::json!("")
        );
    }
}

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

    /// Records a configuration change made without an operator (`SIGHUP`) in the audit log,
    /// as an admin action: waits for room in the audit queue, never dropped. Blocking: call it
    /// off the runtime's workers (the reload runs on a blocking thread).
    pub fn audit_config_change(&self, actor: &str, change: &KeyChange) {
        self.audit.record_admin_blocking(
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

/// The value to show for `key`: a secret key's as `"<redacted>"` when set, any other text
/// with its credentials hidden (`credentials_hidden`).
pub fn shown(key: &str, value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let empty = match value {
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        _ => false,
    };
    if is_secret_key(key) && !empty {
        return Value::String("<redacted>".to_owned());
    }
    match value {
        Value::String(s) => Value::String(credentials_hidden(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| shown(key, v)).collect()),
        _ => value.clone(),
    }
}

/// A configuration value as text, to echo in a problem or a log line: `"<redacted>"` for a
/// secret key, anything else with its credentials hidden.
pub fn shown_text(key: &str, value: &str) -> String {
    if is_secret_key(key) && !value.is_empty() {
        "<redacted>".to_owned()
    } else {
        credentials_hidden(value)
    }
}

/// What replaces a hidden credential.
const HIDDEN: &str = "(hidden)";

/// `text` with the credentials it may carry replaced by `(hidden)`: the password of a URL's
/// `user:password@` (`postgres://…`, `redis://…`, a sentinel's `user:password@host:port`)
/// and the value of a `password=`, `…secret=` or `…token=` parameter (a URL's query or
/// PostgreSQL's `key=value` form, quoted or not). Where a value is ambiguous, more is hidden,
/// never less. The one rule for every URL-like value echoed to operators (configuration
/// problems, `GET /api/config`, a SIGHUP's log lines, `ringchat migrate`'s output, the log
/// lines naming `push.url` or `observe.otlp.endpoint`).
pub fn credentials_hidden(text: &str) -> String {
    hidden_params(&hidden_userinfo(text))
}

/// `scheme://user:password@host` → `scheme://user:(hidden)@host`, word by word.
fn hidden_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // A word: up to white space or a quote (a TOML list is `["a", "b"]`).
        let start = rest
            .find(|c: char| !(c.is_whitespace() || c == '"' || c == '\''))
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        out.push_str(&word_without_password(word));
        rest = after;
    }
    out
}

fn word_without_password(word: &str) -> String {
    let authority_at = word.find("://").map_or(0, |i| i + 3);
    let Some(at) = word[authority_at..].rfind('@').map(|i| i + authority_at) else {
        return word.to_owned();
    };
    // Without a `user:` in front of the `@` (an e-mail address), nothing is hidden.
    match word[authority_at..at].find(':') {
        Some(colon) => {
            let user_end = authority_at + colon + 1;
            format!("{}{HIDDEN}{}", &word[..user_end], &word[at..])
        }
        None => word.to_owned(),
    }
}

/// `password=S`, `sslpassword='S T'`, `?secret=S&…` → the value `(hidden)`.
fn hidden_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        out.push_str(before);
        out.push('=');
        let after = &after[1..];
        // After the last character that is no part of a name (it may be more than one byte).
        let name_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = before[name_start..].to_ascii_lowercase();
        let secret = ["password", "secret", "token"]
            .iter()
            .any(|s| name.ends_with(s));
        if !secret {
            rest = after;
            continue;
        }
        let value_len = if let Some(quoted) = after.strip_prefix('\'') {
            // To the closing quote (`\'` inside is escaped), or to the end.
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(after.len(), |(i, _)| i + 2)
        } else {
            after
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | ',' | ';' | '#'))
                .unwrap_or(after.len())
        };
        if value_len > 0 {
            out.push_str(HIDDEN);
        }
        rest = &after[value_len..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn credentials_are_hidden_in_every_form_and_nothing_else_is() {
        for (text, expect) in [
            (
                "postgres://u:topsecret@db:5432x/r",
                "postgres://u:(hidden)@db:5432x/r",
            ),
            ("redis://:topsecret@r:6379/0", "redis://:(hidden)@r:6379/0"),
            ("u:topsecret@10.0.0.1:26379", "u:(hidden)@10.0.0.1:26379"),
            // A password holding '@' or '/': everything up to the last '@' goes.
            (
                "postgres://u:a@b/topsecret@db/r",
                "postgres://u:(hidden)@db/r",
            ),
            (
                "host=db user=r password=topsecret dbname=r",
                "host=db user=r password=(hidden) dbname=r",
            ),
            (
                "host=db password='top secret\\' x' dbname=r",
                "host=db password=(hidden) dbname=r",
            ),
            (
                "postgresql://db/r?sslmode=require&password=topsecret&x=1",
                "postgresql://db/r?sslmode=require&password=(hidden)&x=1",
            ),
            (
                "[\"redis://u:topsecret@a:1\", \"b:2\"]",
                "[\"redis://u:(hidden)@a:1\", \"b:2\"]",
            ),
            ("ops@example.com", "ops@example.com"),
            (
                "postgres://ringchat@db/ringchat",
                "postgres://ringchat@db/ringchat",
            ),
            ("info,ringchat=debug", "info,ringchat=debug"),
            ("", ""),
            // Any text may come here (an admin's value in an error): never cut inside a
            // character.
            ("security.deny: \"Õ=x", "security.deny: \"Õ=x"),
            ("Õpassword=topsecret", "Õpassword=(hidden)"),
            ("é:Õ@ü", "é:(hidden)@ü"),
        ] {
            let shown = credentials_hidden(text);
            assert_eq!(shown, expect, "{text}");
            assert_eq!(credentials_hidden(&shown), shown, "idempotent: {text}");
        }
        assert_eq!(
            shown(
                "cluster.sentinel_addrs",
                &serde_json::json!(["redis://u:topsecret@a:1"])
            ),
            serde_json::json!(["redis://u:(hidden)@a:1"])
        );
        assert_eq!(shown_text("push.secret", "x"), "<redacted>");
    }
}

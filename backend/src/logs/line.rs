//! One log event as a JSON line: the format of the files, of the console in `json` format, of
//! the live tail and of search results. Written and read by the same type.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An event's level, ordered from the most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Severity {
    /// `info`, `INFO`, `warning` …
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl From<tracing::Level> for Severity {
    fn from(level: tracing::Level) -> Self {
        match level {
            tracing::Level::TRACE => Self::Trace,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::INFO => Self::Info,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::ERROR => Self::Error,
        }
    }
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// When, RFC 3339 in UTC with microseconds (`2026-12-02T10:00:00.123456Z`): fixed width,
    /// so that text order is time order.
    pub ts: String,
    pub level: Severity,
    /// The module that logged it (`ringchat_backend::accounts`, `fjall::db` …).
    pub target: String,
    /// The logging thread's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    pub msg: String,
    /// The event's other fields.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

impl LogLine {
    /// The line as written: JSON, no newline. Past `bytes_max` the fields are dropped and the
    /// message cut (at a character boundary), saying how long the whole was.
    pub fn to_json(&self, bytes_max: usize) -> String {
        self.clone().fit(bytes_max)
    }

    /// [`Self::to_json`], cutting the line itself too, so that what keeps it (the live tail)
    /// holds no more than the JSON says.
    pub fn fit(&mut self, bytes_max: usize) -> String {
        let json = serde_json::to_string(self).expect("a log line serialises");
        if json.len() <= bytes_max {
            return json;
        }
        let short = self;
        short.fields = Map::new();
        short
            .fields
            .insert("truncated_from_bytes".into(), Value::from(json.len()));
        let mut cut = (bytes_max / 2).min(short.msg.len());
        while !short.msg.is_char_boundary(cut) {
            cut -= 1;
        }
        short.msg.truncate(cut);
        short.msg.push('…');
        short.msg.shrink_to_fit();
        serde_json::to_string(&short).expect("a log line serialises")
    }

    /// Whether the message or any field's value contains `needle`, ignoring ASCII case.
    /// `needle` must be lower case.
    pub fn contains_text(&self, needle: &str) -> bool {
        contains_ignore_case(&self.msg, needle)
            || self.fields.values().any(|v| match v {
                Value::String(s) => contains_ignore_case(s, needle),
                other => contains_ignore_case(&other.to_string(), needle),
            })
    }
}

/// Timestamps in the lines' own format.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// Whether `hay` contains `needle` (lower case), ignoring ASCII case; no allocation.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay.windows(needle.len()).any(|w| {
            w.iter()
                .zip(needle)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(msg: &str) -> LogLine {
        LogLine {
            ts: timestamp(SystemTime::UNIX_EPOCH),
            level: Severity::Info,
            target: "t".into(),
            thread: None,
            msg: msg.into(),
            fields: Map::new(),
        }
    }

    #[test]
    fn round_trips_and_orders() {
        let mut l = line("hello");
        l.fields.insert("user_id".into(), Value::from(7));
        let json = l.to_json(1024);
        assert_eq!(
            json,
            r#"{"ts":"1970-01-01T00:00:00.000000Z","level":"INFO","target":"t","msg":"hello","fields":{"user_id":7}}"#
        );
        assert_eq!(serde_json::from_str::<LogLine>(&json).unwrap(), l);
        assert!(Severity::Warn > Severity::Info && Severity::Error > Severity::Warn);
        assert_eq!(Severity::parse("WARNING"), Some(Severity::Warn));
        assert_eq!(Severity::parse("loud"), None);
    }

    #[test]
    fn long_lines_are_cut_within_the_limit() {
        let json = line(&"é".repeat(1000)).to_json(300);
        assert!(json.len() <= 300, "{}", json.len());
        let back: LogLine = serde_json::from_str(&json).unwrap();
        assert!(back.fields.contains_key("truncated_from_bytes"));
    }

    #[test]
    fn text_matches_message_and_fields_ignoring_case() {
        let mut l = line("Account Registered");
        l.fields.insert("name".into(), Value::from("Alice"));
        l.fields.insert("n".into(), Value::from(12345));
        assert!(l.contains_text("registered"));
        assert!(l.contains_text("alice"));
        assert!(l.contains_text("234"));
        assert!(!l.contains_text("bob"));
    }
}

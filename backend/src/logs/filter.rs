//! Which lines a reader wants: the one rule shared by the live tail, the search and the export.

use std::time::{Duration, SystemTime};

use super::line::{LogLine, Severity, timestamp};

/// Longest `target` prefix or `q` text accepted, in bytes.
pub const FILTER_TEXT_BYTES_MAX: usize = 256;
/// How far out of time order the files may hold lines: a thread stamps its event, then queues
/// it for the one writer, so lines of busy threads may be written a little late. A scan ends
/// at a time bound only past it by more than this.
pub const TIME_ORDER_SLACK: Duration = Duration::from_secs(10);

/// A reader's filter; every part is optional.
#[derive(Debug, Clone, Default)]
pub struct LineFilter {
    /// This level or a more severe one.
    pub level: Option<Severity>,
    /// The target starts with this.
    pub target: Option<String>,
    /// The message or a field contains this, ignoring ASCII case (kept in lower case).
    text: Option<String>,
    /// `ts` at or after this (in the lines' format, so text order is time order).
    pub since: Option<String>,
    /// `ts` at or before this.
    pub until: Option<String>,
    /// `since` as a time, for skipping whole files by their modification time.
    pub since_time: Option<SystemTime>,
    /// A line stamped after this is past `until` by more than [`TIME_ORDER_SLACK`]: no later
    /// line matches, and a scan forwards ends there.
    past_until: Option<String>,
    /// A line stamped before this is before `since` by more than the slack: a scan backwards
    /// ends there.
    before_since: Option<String>,
}

impl LineFilter {
    /// Builds a filter from a request's parameters, or says what is wrong with them.
    pub fn parse(
        level: Option<&str>,
        target: Option<&str>,
        text: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Self, String> {
        let level = nonempty(level)
            .map(|l| {
                Severity::parse(l).ok_or_else(|| {
                    format!("level {l:?} is not one of trace, debug, info, warn, error")
                })
            })
            .transpose()?;
        for (name, v) in [("target", target), ("q", text)] {
            if v.is_some_and(|v| v.len() > FILTER_TEXT_BYTES_MAX) {
                return Err(format!(
                    "{name} is longer than {FILTER_TEXT_BYTES_MAX} bytes"
                ));
            }
        }
        let time = |name: &str, v: Option<&str>| {
            nonempty(v)
                .map(|v| {
                    humantime::parse_rfc3339_weak(v).map_err(|_| {
                        format!("{name} {v:?} is not an RFC 3339 time (2026-12-02T10:00:00Z)")
                    })
                })
                .transpose()
        };
        let since_time = time("since", since)?;
        let until_time = time("until", until)?;
        if let (Some(s), Some(u)) = (since_time, until_time)
            && s > u
        {
            return Err("since is after until".into());
        }
        Ok(Self {
            level,
            target: nonempty(target).map(str::to_owned),
            text: nonempty(text).map(str::to_ascii_lowercase),
            since: since_time.map(timestamp),
            until: until_time.map(timestamp),
            since_time,
            past_until: until_time.map(|u| timestamp(u + TIME_ORDER_SLACK)),
            before_since: since_time
                .and_then(|s| s.checked_sub(TIME_ORDER_SLACK))
                .map(timestamp),
        })
    }

    /// Whether a scan forwards (oldest first) can stop at `line`: it is well past `until`.
    pub fn ends_forward_scan(&self, line: &LogLine) -> bool {
        self.past_until
            .as_deref()
            .is_some_and(|u| line.ts.as_str() > u)
    }

    /// Whether a scan backwards (newest first) can stop at `line`: it is well before `since`.
    pub fn ends_backward_scan(&self, line: &LogLine) -> bool {
        self.before_since
            .as_deref()
            .is_some_and(|s| line.ts.as_str() < s)
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        self.level.is_none_or(|l| line.level >= l)
            && self
                .target
                .as_deref()
                .is_none_or(|t| line.target.starts_with(t))
            && self.since.as_deref().is_none_or(|s| line.ts.as_str() >= s)
            && self.until.as_deref().is_none_or(|u| line.ts.as_str() <= u)
            && self.text.as_deref().is_none_or(|q| line.contains_text(q))
    }
}

/// An empty parameter (`?level=`) is no filter.
fn nonempty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn every_part_narrows() {
        let line = LogLine {
            ts: "2026-12-02T10:00:00.000000Z".into(),
            level: Severity::Warn,
            target: "ringchat_backend::admin::auth".into(),
            thread: None,
            msg: "admin login failed".into(),
            fields: Map::new(),
        };
        let f = |l, t, q, s, u| LineFilter::parse(l, t, q, s, u).unwrap().matches(&line);
        assert!(f(None, None, None, None, None));
        assert!(f(
            Some("info"),
            Some("ringchat_backend::admin"),
            Some("LOGIN"),
            None,
            None
        ));
        assert!(!f(Some("error"), None, None, None, None));
        assert!(!f(None, Some("fjall"), None, None, None));
        assert!(!f(None, None, Some("logout"), None, None));
        assert!(f(
            None,
            None,
            None,
            Some("2026-12-02T09:59:59Z"),
            Some("2026-12-02T10:00:00Z")
        ));
        assert!(!f(None, None, None, Some("2026-12-02T10:00:01Z"), None));
        assert!(!f(None, None, None, None, Some("2026-12-02T09:00:00Z")));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(LineFilter::parse(Some("loud"), None, None, None, None).is_err());
        assert!(LineFilter::parse(None, None, None, Some("yesterday"), None).is_err());
        let long = "x".repeat(FILTER_TEXT_BYTES_MAX + 1);
        assert!(LineFilter::parse(None, None, Some(&long), None, None).is_err());
        let backwards = LineFilter::parse(
            None,
            None,
            None,
            Some("2026-12-02T10:00:00Z"),
            Some("2026-12-01T10:00:00Z"),
        );
        assert!(backwards.is_err());
    }
}

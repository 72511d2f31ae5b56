//! What free text a client (or an operator) sends may hold, one rule for every field that is
//! stored as text and shown to people: no control characters, newlines only in the fields that
//! are several lines long (a bio, an intro, a request's message). A field that passes is
//! storable by every store (PostgreSQL refuses NUL in text), so one such field can never fail a
//! commit group of other people's writes.

/// Whether `s` holds no control characters (but newlines, when `newlines`).
pub(crate) fn no_controls(s: &str, newlines: bool) -> bool {
    s.chars()
        .all(|c| !c.is_control() || (newlines && c == '\n'))
}

/// Whether `url` is a picture's address as profiles and groups take it: empty (none), or an
/// http(s) URL of at most `max` bytes without whitespace or control characters.
pub(crate) fn avatar_url_ok(url: &str, max: usize) -> bool {
    let scheme = url.starts_with("https://") || url.starts_with("http://");
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    url.len() <= max && (url.is_empty() || scheme && clean)
}

//! The download's headers: byte ranges (RFC 9110 §14), the served type, and
//! `Content-Disposition` with the name encoded (RFC 6266, RFC 5987).

use std::fmt::Write as _;
use std::ops::Range;

/// Types a browser may show in the page (media that runs no script); every other file is
/// sent as `application/octet-stream`, as an attachment.
const INLINE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "audio/mp4",
    "audio/aac",
    "audio/flac",
    "video/mp4",
    "video/webm",
    "video/ogg",
];

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range, or one this server ignores (another unit, several ranges, bad syntax).
    Whole,
    /// These bytes (end exclusive, within the file, never empty).
    Part(Range<u64>),
    /// 416.
    Unsatisfiable,
}

/// One range: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match number(n) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(size - n.min(size)..size),
        },
        (a, "") => match number(a) {
            None => RangeAsk::Whole,
            Some(a) if a >= size => RangeAsk::Unsatisfiable,
            Some(a) => RangeAsk::Part(a..size),
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part(a..b.saturating_add(1).min(size))
                }
            }
            _ => RangeAsk::Whole,
        },
    }
}

/// The `Content-Type` to send, and whether the file may be shown inline.
pub fn served_type(mime: &str) -> (&str, bool) {
    if INLINE_TYPES.contains(&mime) {
        (mime, true)
    } else {
        ("application/octet-stream", false)
    }
}

/// `inline` or `attachment`, with an ASCII `filename` for old clients and the exact name in
/// `filename*`. Only printable ASCII comes out: no name can add or break a header.
pub fn content_disposition(inline: bool, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '%') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 5987 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let ask = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(ask("bytes=0-99"), RangeAsk::Part(0..100));
        assert_eq!(ask("bytes=500-"), RangeAsk::Part(500..1000));
        assert_eq!(ask("bytes=-100"), RangeAsk::Part(900..1000));
        assert_eq!(ask("bytes=-5000"), RangeAsk::Part(0..1000));
        assert_eq!(ask("bytes=990-5000"), RangeAsk::Part(990..1000));
        assert_eq!(ask("bytes=1000-"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=1000-1001"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-0"), RangeAsk::Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(ask(ignored), RangeAsk::Whole, "{ignored}");
        }
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
    }

    #[test]
    fn dispositions_cannot_inject_headers() {
        assert_eq!(
            content_disposition(false, "report 2024.pdf"),
            "attachment; filename=\"report 2024.pdf\"; filename*=UTF-8''report%202024.pdf"
        );
        let tricky = content_disposition(true, "a\"b\\c%d;é\r\nSet-Cookie: x");
        assert!(
            tricky.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{tricky}"
        );
        assert!(
            tricky.starts_with("inline; filename=\"a_b_c_d;___Set-Cookie: x\""),
            "{tricky}"
        );
        assert!(
            tricky.contains("filename*=UTF-8''a%22b%5Cc%25d%3B%C3%A9%0D%0ASet-Cookie%3A%20x"),
            "{tricky}"
        );
    }

    #[test]
    fn only_media_is_inline() {
        assert_eq!(served_type("image/png"), ("image/png", true));
        for other in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "application/javascript",
        ] {
            assert_eq!(
                served_type(other),
                ("application/octet-stream", false),
                "{other}"
            );
        }
    }
}

//! docs/PROTOCOL.md against the protocol itself: every `ErrorCode` has its row in the "Errors"
//! table (and every row names a code by its number), and every link into a heading of the
//! document (or of another document in the repository) finds that heading.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ringchat_proto::v1::ErrorCode;

const DOC: &str = "docs/PROTOCOL.md";
/// Above every `ErrorCode` value (they are below 100): the scan for them stops here.
const ERROR_CODE_SCAN_MAX: i32 = 1_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The text of the `## {title}` section, up to the next `## ` heading.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let head = format!("\n## {title}\n");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("{DOC} has no \"## {title}\" section"))
        + head.len();
    let len = text[start..].find("\n## ").unwrap_or(text.len() - start);
    &text[start..start + len]
}

/// The `(name, number)` of each row of the errors table: rows start "| `NAME` (N) |".
fn error_rows(table: &str) -> Vec<(String, i32)> {
    table
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (name, rest) = rest.split_once("` (")?;
            let (number, _) = rest.split_once(") |")?;
            Some((name.to_owned(), number.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_error_code_has_its_row_in_the_errors_table() {
    let text = read(&repo_root().join(DOC));
    let rows = error_rows(section(&text, "Errors"));
    let mut missing = Vec::new();
    for value in 0..=ERROR_CODE_SCAN_MAX {
        let Ok(code) = ErrorCode::try_from(value) else {
            continue;
        };
        let name = code
            .as_str_name()
            .strip_prefix("ERROR_CODE_")
            .expect("every ErrorCode name starts with ERROR_CODE_");
        if !rows.iter().any(|(n, v)| n == name && *v == value) {
            missing.push(format!("`{name}` ({value})"));
        }
    }
    assert!(
        missing.is_empty(),
        "{DOC} \"Errors\" has no row for {}",
        missing.join(", ")
    );
    for (name, value) in &rows {
        let code = ErrorCode::try_from(*value)
            .unwrap_or_else(|_| panic!("{DOC} \"Errors\" row `{name}` ({value}): no such code"));
        assert_eq!(
            code.as_str_name().strip_prefix("ERROR_CODE_"),
            Some(name.as_str()),
            "{DOC} \"Errors\": code {value} is named differently in the proto"
        );
    }
}

/// The anchors GitHub gives a Markdown file's headings (code blocks skipped): lower case,
/// spaces to `-`, every character but letters, digits, `-` and `_` dropped, and `-1`, `-2`…
/// after a repeated one.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        if in_code {
            continue;
        }
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut unique = slug.clone();
        for n in 1.. {
            if !found.contains(&unique) {
                break;
            }
            unique = format!("{slug}-{n}");
        }
        found.insert(unique);
    }
    found
}

/// The `(file, anchor)` of every link with an anchor: `](#a)` (file empty: this document) and
/// `](some/file.md#a)`.
fn anchored_links(text: &str) -> Vec<(String, String)> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| {
            let target = &rest[..rest.find(')')?];
            let (file, anchor) = target.split_once('#')?;
            (file.is_empty() || file.ends_with(".md")).then(|| (file.to_owned(), anchor.to_owned()))
        })
        .collect()
}

#[test]
fn every_link_to_a_heading_finds_it() {
    let doc = repo_root().join(DOC);
    let text = read(&doc);
    let links = anchored_links(&text);
    assert!(
        links.iter().any(|(file, _)| file.is_empty()),
        "{DOC}: no link to its own headings found; is the link syntax still `](#anchor)`?"
    );
    let mut broken = Vec::new();
    for (file, anchor) in &links {
        let target = if file.is_empty() {
            doc.clone()
        } else {
            doc.parent().expect("docs/").join(file)
        };
        if !anchors(&read(&target)).contains(anchor) {
            broken.push(format!("{file}#{anchor}"));
        }
    }
    assert!(
        broken.is_empty(),
        "{DOC} links to headings that do not exist: {}",
        broken.join(", ")
    );
}

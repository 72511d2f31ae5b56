//! The rule every Prometheus family a server publishes keeps, one box or cluster node: one
//! `# HELP` line, a `ringchat_` or `process_` name, `_total` on counters and only on them, and
//! the same label names on all its series (two meanings under one name show as two label
//! sets). One place for it: `observe_overview.rs` and `cluster_metrics.rs` both apply it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Checks every family of a `/metrics` page against the rule, naming every family that breaks
/// it at once; returns each family's type (`counter`, `gauge`, `histogram`).
pub fn check_families(page: &str) -> HashMap<String, String> {
    let mut help = BTreeSet::new();
    let mut helped_twice = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default().to_owned();
            if !help.insert(name.clone()) {
                helped_twice.push(format!("{name} has two # HELP lines"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut broken: Vec<String> = types
        .iter()
        .flat_map(|(name, kind)| {
            let mut why = Vec::new();
            if !help.contains(name) {
                why.push(format!("{name} has no # HELP"));
            }
            if !name.starts_with("ringchat_") && !name.starts_with("process_") {
                why.push(format!("{name}: not a ringchat_ or process_ family"));
            }
            match (kind.as_str(), name.ends_with("_total")) {
                ("counter", false) => why.push(format!("counter {name} does not end in _total")),
                (kind, true) if kind != "counter" => {
                    why.push(format!("{kind} {name} ends in _total"));
                }
                _ => {}
            }
            why
        })
        .collect();
    broken.extend(helped_twice);
    for (family, sets) in label_sets(page, &types) {
        if sets.len() > 1 {
            broken.push(format!(
                "{family} has series with different label names: {sets:?}"
            ));
        }
    }
    broken.sort();
    assert!(
        broken.is_empty(),
        "families break the rule:\n{}",
        broken.join("\n")
    );
    types
}

/// Each family's label-name sets over its series (a histogram's `le` left out).
fn label_sets(
    page: &str,
    types: &HashMap<String, String>,
) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let mut sets: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| {
                types
                    .get(*base)
                    .is_some_and(|k| k == "histogram" || k == "summary")
            })
            .unwrap_or(name);
        let mut labels: Vec<String> = Vec::new();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            // `name="value",…}`: a value may hold `,` or `=`, so step over quoted values.
            let mut rest = rest;
            while let Some(eq) = rest.find('=') {
                let label = rest[..eq].trim_start_matches(',').trim();
                if label.is_empty() || label.starts_with('}') {
                    break;
                }
                if label != "le" && label != "quantile" {
                    labels.push(label.to_owned());
                }
                let value = &rest[eq + 1..];
                let Some(value) = value.strip_prefix('"') else {
                    break;
                };
                let mut escaped = false;
                let close = value
                    .char_indices()
                    .find(|&(_, c)| {
                        let end = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        end
                    })
                    .map_or(value.len(), |(i, _)| i + 1);
                rest = &value[close..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
        labels.sort();
        sets.entry(family.to_owned()).or_default().insert(labels);
    }
    sets
}

//! The rule every Prometheus family a server publishes keeps, one box or cluster node: a
//! `# HELP` line, a `ringchat_` or `process_` name, and `_total` on counters and only on them.
//! One place for it: `observe_overview.rs` and `cluster_metrics.rs` both apply it.

use std::collections::{BTreeSet, HashMap};

/// Checks every family of a `/metrics` page against the rule, naming every family that breaks
/// it at once; returns each family's type (`counter`, `gauge`, `histogram`).
pub fn check_families(page: &str) -> HashMap<String, String> {
    let mut help = BTreeSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.insert(rest.split(' ').next().unwrap_or_default().to_owned());
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
    broken.sort();
    assert!(
        broken.is_empty(),
        "families break the rule:\n{}",
        broken.join("\n")
    );
    types
}

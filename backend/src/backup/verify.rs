//! The verification pass: per-part record counts and checksums of two stores (or of a store
//! and a backup's manifest), compared.

use super::BackupError;
use crate::store::dump::{Part, Tally};

/// One part on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub part: Part,
    pub expected: Tally,
    pub found: Tally,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.expected == self.found
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, x) = (self.expected, self.found);
        if self.matches() {
            write!(
                f,
                "{:<18} {:>12} records  checksum {:016x}  ok",
                self.part.name(),
                e.records,
                e.checksum
            )
        } else {
            write!(
                f,
                "{:<18} expected {} records (checksum {:016x}), found {} (checksum {:016x})  MISMATCH",
                self.part.name(),
                e.records,
                e.checksum,
                x.records,
                x.checksum
            )
        }
    }
}

/// Every part of `expected` beside the same part of `found` (a part missing on one side counts
/// as empty there).
pub fn compare(expected: &[(Part, Tally)], found: &[(Part, Tally)]) -> Vec<Comparison> {
    let get = |side: &[(Part, Tally)], part| {
        side.iter()
            .find(|(p, _)| *p == part)
            .map_or(Tally::default(), |(_, t)| *t)
    };
    Part::ALL
        .into_iter()
        .map(|part| Comparison {
            part,
            expected: get(expected, part),
            found: get(found, part),
        })
        .collect()
}

/// `Ok` when every part matches; else the parts that do not, in one error.
pub fn check(comparisons: &[Comparison]) -> Result<(), BackupError> {
    let bad: Vec<String> = comparisons
        .iter()
        .filter(|c| !c.matches())
        .map(ToString::to_string)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(BackupError::Mismatch(format!(
        "{} part(s) differ: {}",
        bad.len(),
        bad.join("; ")
    )))
}

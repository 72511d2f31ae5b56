//! Conformance: the audit log.

use super::*;
use crate::store::{AuditRecord, AuditStore};

fn entry(i: u64) -> AuditRecord {
    AuditRecord {
        at_ms: 1_000 + i,
        actor: format!("admin:ålice{i}"),
        action: "user.disable".into(),
        target: format!("user:{}", ALICE + i),
        from: "127.0.0.1:5000".into(),
        detail: "x".repeat(i as usize),
    }
}

pub(crate) fn audit_entries_are_appended_in_batches_and_paged_newest_first<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let store = A::open(dir.path());
    assert_eq!(store.last_audit_id().unwrap(), 0);
    assert!(store.audit_page(u64::MAX, 10).unwrap().is_empty());
    let first: Vec<_> = (1..=3).map(entry).collect();
    store.append_audit(1, &first).unwrap();
    store.append_audit(4, &[entry(4), entry(5)]).unwrap();
    store.append_audit(6, &[]).unwrap();
    assert_eq!(store.last_audit_id().unwrap(), 5);
    drop(store);

    let store = A::open(dir.path());
    assert_eq!(store.last_audit_id().unwrap(), 5, "kept across a restart");
    let page = store.audit_page(u64::MAX, 2).unwrap();
    assert_eq!(page, vec![(5, entry(5)), (4, entry(4))]);
    let next = store.audit_page(4, 2).unwrap();
    assert_eq!(next, vec![(3, entry(3)), (2, entry(2))]);
    assert_eq!(store.audit_page(2, 10).unwrap(), vec![(1, entry(1))]);
    assert!(
        store.audit_page(1, 10).unwrap().is_empty(),
        "nothing before the first"
    );
    assert!(store.audit_page(0, 10).unwrap().is_empty());
    assert!(store.audit_page(u64::MAX, 0).unwrap().is_empty());
}

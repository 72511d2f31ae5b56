//! A write's fdatasync is made in the hold of fjall's journal lock that wrote it
//! (`FjallStore::batch` says why: a sync in a hold of its own can be vouched for by the failed
//! sync of fjall's flush worker). Seen through fjall's own trace lines (fjall =3.1.13, pinned):
//! a batch's commit logs when it takes and frees the journal writer, and the writer logs every
//! persist with its mode. The lines are read on the writing thread only.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::Once;

use super::FjallStore;
use crate::config::Durability;
use crate::store::{
    AuditRecord, AuditStore, CommitGroup, ContactStore, ConversationLog, ProfileRecord,
    PushTokenRecord, PushTokenStore,
};

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// fjall's log lines of the threads that are recording; every other thread's are dropped.
struct FjallLines;

impl log::Log for FjallLines {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("fjall") && RECORDING.with(Cell::get)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            LINES.with(|l| l.borrow_mut().push(record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

static FJALL_LINES: FjallLines = FjallLines;

/// fjall's log lines written on this thread while `write` runs.
fn fjall_lines(write: impl FnOnce()) -> Vec<String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&FJALL_LINES).expect("no other `log` logger in the backend's tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
    LINES.with(|l| l.borrow_mut().clear());
    RECORDING.with(|r| r.set(true));
    write();
    RECORDING.with(|r| r.set(false));
    LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// The journal syncs in `lines` (fjall 3.1.13's `Writer::persist`), each with whether it was
/// made while the writer's batch held the journal lock.
fn syncs(lines: &[String]) -> Vec<(String, bool)> {
    let mut held = false;
    let mut out = Vec::new();
    for line in lines {
        if line == "batch: Acquiring journal writer" {
            held = true;
        } else if line == "batch: Freed journal writer" {
            held = false;
        } else if line.starts_with("Persisting journal at ")
            && (line.ends_with("mode=SyncData") || line.ends_with("mode=SyncAll"))
        {
            out.push((line.clone(), held));
        }
    }
    out
}

/// A kind of write, named.
type Write<'a> = (&'static str, Box<dyn Fn() + 'a>);

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(dir, Durability::Fsync).unwrap()
}

/// Every kind of write (a commit group, a batch of the accounts' kind, the one-key writes)
/// makes exactly one fdatasync, in the hold of the journal lock that wrote its bytes.
#[test]
fn each_write_is_fdatasynced_in_the_journal_lock_hold_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let token = PushTokenRecord {
        provider: 1,
        token: "t".into(),
        updated_ms: 1,
    };
    let audit = AuditRecord {
        at_ms: 1,
        actor: "system".into(),
        action: "test.write".into(),
        target: String::new(),
        from: String::new(),
        detail: String::new(),
    };
    let writes: [Write<'_>; 5] = [
        (
            "a commit group",
            Box::new(|| {
                let group = CommitGroup {
                    next_msg_id: Some(7),
                    ..CommitGroup::default()
                };
                store.append(&group).unwrap();
            }),
        ),
        (
            "a profile",
            Box::new(|| store.put_profile(5, &ProfileRecord::default()).unwrap()),
        ),
        (
            "a push token",
            Box::new(|| store.put_push_token(5, "d", &token).unwrap()),
        ),
        (
            "a push token's removal",
            Box::new(|| assert!(store.remove_push_token(5, "d").unwrap())),
        ),
        (
            "an audit record",
            Box::new(|| store.append_audit(1, std::slice::from_ref(&audit)).unwrap()),
        ),
    ];
    let wrong: Vec<String> = writes
        .into_iter()
        .filter_map(|(what, write)| {
            let lines = fjall_lines(write);
            match syncs(&lines)[..] {
                [(_, true)] => None,
                _ => Some(format!("{what}: {lines:#?}")),
            }
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "not one fdatasync inside the write's hold of the journal lock:\n{}",
        wrong.join("\n")
    );
}

/// What the test above reads fjall's lines for: a sync that does not follow a write is seen
/// as outside the hold (here, the store's own `persist`, as `flush` makes it).
#[test]
fn a_sync_of_its_own_is_seen_outside_any_writes_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let lines = fjall_lines(|| store.persist().unwrap());
    let syncs = syncs(&lines);
    assert_eq!(syncs.len(), 1, "{lines:#?}");
    assert!(!syncs[0].1, "{lines:#?}");
}

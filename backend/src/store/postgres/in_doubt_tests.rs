//! A commit whose answer was lost, for real: a deferred trigger on `counters` makes COMMIT wait
//! for a lock this test holds (statement_timeout does not cut a COMMIT's work), so the call's
//! time runs out while the database is still committing, and the COMMIT lands once the lock is
//! released.

use std::time::{Duration, Instant};

use super::tests::{Session, open_test_store_timed};
use crate::store::{CommitGroup, ConversationLog, StoreError};

/// The advisory lock the trigger waits for (any number no other test takes; "ringtest").
const HOLD: i64 = 0x7269_6e67_7465_7374;

fn counter(next_msg_id: u64) -> CommitGroup {
    CommitGroup {
        next_msg_id: Some(next_msg_id),
        ..CommitGroup::default()
    }
}

#[test]
fn a_commit_whose_answer_was_lost_is_waited_for_and_counters_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test_store_timed(dir.path(), 300);
    let session = Session::open(dir.path());
    session.run(&format!(
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_advisory_xact_lock({HOLD}); RETURN NULL; END $$"
    ));
    session.run(
        "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT OR UPDATE ON counters \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()",
    );
    store.append(&counter(10)).unwrap();
    assert_eq!(store.next_msg_id().unwrap(), 10);

    session.run(&format!("SELECT pg_advisory_lock({HOLD})"));
    match store.append(&counter(20)) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected the call's time to run out, got {other:?}"),
    }
    // The COMMIT still runs on the database: a read now would miss it (and the sequencer would
    // hand ids 10.. out again).
    match store.next_msg_id() {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("read {other:?} while a commit was in doubt"),
    }
    session.run(&format!("SELECT pg_advisory_unlock({HOLD})"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        match store.next_msg_id() {
            Ok(n) => break n,
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                tracing::debug!(%e, "the commit is still in doubt");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        next, 20,
        "the commit landed, and the store saw it before answering"
    );

    // A group carrying a smaller value (written from a stale read) never takes ids back.
    store.append(&counter(15)).unwrap();
    assert_eq!(store.next_msg_id().unwrap(), 20);
}

/// After a crash of the database, a commit in doubt may be one the database lost with its
/// unwritten WAL: its xid is then at or past the restarted server's next xid. It is settled
/// (it can never commit), not waited for until the xid counter reaches it.
#[test]
fn a_commit_the_database_lost_in_a_crash_is_settled_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test_store_timed(dir.path(), 300);
    let session = Session::open(dir.path());
    store.append(&counter(10)).unwrap();
    // An xid this server has not handed out, as a lost transaction's is after the restart.
    let next = session.count("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint");
    store.in_doubt.add(next + 1_000);
    assert_eq!(
        store.next_msg_id().unwrap(),
        10,
        "the lost commit is settled at once, and the store answers"
    );
}

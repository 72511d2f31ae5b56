//! After a failed commit: the store may hold none of the group or all of it (a COMMIT whose
//! answer was lost when the database went away), so nothing the sequencer kept in memory for
//! it may be trusted. `discard` already dropped the cached heads and rows (each is read again
//! from the store when next needed: a conversation's next seq follows its *stored* head, so
//! seqs stay gap-free and none is handed out twice, and a resend finds the stored dedup entry
//! and gets the original ack). On PostgreSQL such a COMMIT may even land after the failure was
//! reported; the store answers no call until it has finished (`store/postgres/in_doubt.rs`),
//! so what is read here includes it. The id counters are read again here, before the next group;
//! while the store does not answer, every operation of a group is refused UNAVAILABLE
//! unapplied (nothing was taken for it).

use super::*;
use crate::notifications::SystemOutcome;

impl Writer {
    /// Re-reads the counters a failed commit may have advanced in the store, if one failed.
    pub(super) fn reload_after_failure(&mut self) -> Result<(), StoreError> {
        if !self.reload {
            return Ok(());
        }
        let next = self.log.next_msg_id()?;
        self.groups.reload_next_id()?;
        self.next_msg_id = next;
        self.pending_next_msg_id = next;
        self.reload = false;
        Ok(())
    }
}

/// An operation's answer when its group could not even start: the store is away.
pub(super) fn refused_unapplied(op: WriteOp, why: &StoreError) -> Outcome {
    let refusal = match why {
        StoreError::Unavailable(_) => Refusal::store_away(why),
        _ => Refusal::unavailable(why),
    };
    refused(op, refusal)
}

/// An operation refused before it was applied.
pub(super) fn refused(op: WriteOp, refusal: Refusal) -> Outcome {
    match op.write {
        Write::System(batch) => Outcome::System(SystemOutcome {
            reply: batch.reply,
            result: Err(refusal),
            messages: Vec::new(),
        }),
        _ => Outcome::Refused {
            conn: op.conn,
            request_id: op.request_id,
            refusal,
        },
    }
}

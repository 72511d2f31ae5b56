//! An operator's write, audited by one rule: every write that may have taken effect leaves an
//! entry. Writes through the sequencer (`Backend::operator_write`: a group dissolved) and
//! account changes written to the store (a disable, an enable, a password set:
//! `accounts/operator.rs`; a user created: `Accounts::create_by_operator`; a profile edited:
//! `Contacts::write_profile`; an invite created or revoked: `accounts/policy.rs`) all follow
//! it. A committed write is audited with its outcome; one whose answer did not
//! come in time, or whose store write failed, is audited as "outcome unknown", since it may
//! have landed or still land, and a retry would then be refused as already done, leaving no
//! entry at all. A refused or never-queued write changed nothing: no entry.

use ringchat_proto::Body;

use super::Admin;
use super::error::ApiResult;
use crate::audit::Entry;
use crate::messaging::operator::OperatorWriteError;
use crate::messaging::writer::Write;

/// Runs `write` for the operator of `entry` and records `entry` whenever the write may have
/// taken effect, its detail from `landed` for an answer that is not a refusal. The answer
/// (a refusal included) is the caller's to read.
pub(super) async fn audited(
    admin: &Admin,
    entry: Entry,
    write: Write,
    landed: impl FnOnce(&Body) -> String,
) -> ApiResult<Body> {
    let outcome = admin.backend.operator_write(write).await;
    record(admin, entry, &outcome, |body| match body {
        // Refused by the sequencer: nothing changed.
        Body::Error(_) => None,
        body => Some(landed(body)),
    })
    .await;
    Ok(outcome.map_err(crate::accounts::Refusal::from)?)
}

/// Records `entry` for a write's `outcome` whenever it may have taken effect; `landed` gives
/// the detail of an answer, or `None` for one that says nothing changed.
pub(super) async fn record<T>(
    admin: &Admin,
    entry: Entry,
    outcome: &Result<T, OperatorWriteError>,
    landed: impl FnOnce(&T) -> Option<String>,
) {
    if let Some(detail) = audit_detail(outcome, landed) {
        admin.backend.audit.record_admin(entry.detail(detail)).await;
    }
}

/// What the audit entry of a write's outcome says; `None` when the write changed nothing.
fn audit_detail<T>(
    outcome: &Result<T, OperatorWriteError>,
    landed: impl FnOnce(&T) -> Option<String>,
) -> Option<String> {
    match outcome {
        Ok(answer) => landed(answer),
        // Never queued, or refused before the store was written: nothing changed.
        Err(OperatorWriteError::NotQueued(_)) => None,
        Err(unanswered @ OperatorWriteError::Unanswered(_)) => {
            Some(format!("outcome unknown: {}", unanswered.refusal().message))
        }
    }
}

#[cfg(test)]
mod tests {
    use ringchat_proto::v1::{self, ErrorCode};

    use super::*;
    use crate::accounts::Refusal;

    fn detail(outcome: Result<Body, OperatorWriteError>) -> Option<String> {
        audit_detail(&outcome, |body| match body {
            Body::Error(_) => None,
            Body::GroupOk(ok) => Some(format!("event seq {}", ok.event_seq)),
            other => Some(format!("unexpected answer {other:?}")),
        })
    }

    #[test]
    fn every_write_that_may_have_landed_is_audited_and_no_other() {
        let committed = Body::GroupOk(v1::GroupOk {
            event_seq: 7,
            ..Default::default()
        });
        assert_eq!(detail(Ok(committed)).as_deref(), Some("event seq 7"));
        // Not answered in time: it may still land, so the operator's request is on record.
        let late = Refusal::new(
            ErrorCode::Unavailable,
            "the write was not answered within 10 s; it may still take effect",
        );
        let unknown = detail(Err(OperatorWriteError::Unanswered(late))).unwrap();
        assert!(unknown.starts_with("outcome unknown: "), "{unknown}");
        assert!(unknown.contains("not answered within 10 s"), "{unknown}");
        // Refused, or never queued: nothing changed, nothing to audit.
        let refused = Body::Error(v1::Error {
            code: ErrorCode::GroupDissolved as i32,
            ..Default::default()
        });
        assert_eq!(detail(Ok(refused)), None);
        let busy = Refusal::new(ErrorCode::Unavailable, "too many operator writes in flight");
        assert_eq!(detail(Err(OperatorWriteError::NotQueued(busy))), None);
    }
}

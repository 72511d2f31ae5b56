//! A contacts write checked on the shard (what needs no storage) and typed for the sequencer.

use ringchat_proto::v1::ErrorCode;

use super::ops::ContactOp;
use super::policy_from_wire;
use crate::accounts::Refusal;
use crate::api::ContactWrite;
use crate::store::{USER_ID_FIRST, USER_ID_LAST, UserId};

/// The other user of a contacts write: a 9-digit id that is not the caller's.
fn other_user(user: UserId, other: UserId) -> Result<UserId, Refusal> {
    if other == user {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "user_id is yourself",
        ));
    }
    if !(USER_ID_FIRST..=USER_ID_LAST).contains(&other) {
        return Err(Refusal::new(
            ErrorCode::UserNotFound,
            format!("no user {other}"),
        ));
    }
    Ok(other)
}

pub(crate) fn op_of(
    user: UserId,
    write: ContactWrite,
    request_message_bytes_max: usize,
) -> Result<ContactOp, Refusal> {
    Ok(match write {
        ContactWrite::FriendRequest(r) => {
            if r.message.len() > request_message_bytes_max
                || !crate::text::no_controls(&r.message, true)
            {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "message: at most {request_message_bytes_max} bytes, no control characters but newlines"
                    ),
                ));
            }
            ContactOp::Request {
                user,
                other: other_user(user, r.user_id)?,
                message: r.message,
            }
        }
        ContactWrite::FriendRespond(r) => ContactOp::Respond {
            user,
            other: other_user(user, r.user_id)?,
            accept: r.accept,
        },
        ContactWrite::FriendCancel(r) => ContactOp::Cancel {
            user,
            other: other_user(user, r.user_id)?,
        },
        ContactWrite::FriendDelete(r) => ContactOp::Delete {
            user,
            other: other_user(user, r.user_id)?,
        },
        ContactWrite::Block(r) => ContactOp::Block {
            user,
            other: other_user(user, r.user_id)?,
        },
        ContactWrite::Unblock(r) => ContactOp::Unblock {
            user,
            other: other_user(user, r.user_id)?,
        },
        ContactWrite::SetPrivacy(r) => ContactOp::SetPrivacy {
            user,
            policy: policy_from_wire(r.dm_policy)?,
        },
    })
}

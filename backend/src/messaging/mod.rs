//! 1:1 messaging: writes checked on the shard and queued straight to the commit thread
//! (`submit`), reads from the store, and delivery of acks, pushes and receipts once a write is
//! durable.

pub mod conversations;
pub(crate) mod delivery;
mod dispatch;
pub(crate) mod in_flight;
pub(crate) mod operator;
pub mod reads;
pub(crate) mod resume;
mod submit;
pub(crate) mod writer;

pub use submit::{PendingCheck, PendingWrite, Submitted, Writes};

use ringchat_proto::v1::{self, ContentType, ErrorCode};

use crate::accounts::Refusal;
use crate::store::{ConvId, ConvKind, Members, MessageRecord, USER_ID_FIRST, USER_ID_LAST, UserId};

/// Longest `client_msg_id`.
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 64;

pub fn to_wire(m: MessageRecord) -> v1::Message {
    // A recalled message names nobody: who it mentioned went with its content.
    let mentions = if m.recalled { None } else { m.mentions };
    v1::Message {
        msg_id: m.msg_id,
        conversation_id: m.conv_id.to_wire(),
        seq: m.seq,
        from_user_id: m.from,
        client_msg_id: m.client_msg_id,
        content_type: m.content_type,
        content: m.content,
        server_time_ms: m.server_time_ms,
        recalled: m.recalled,
        to_user_id: m.to,
        recall_of_seq: m.recall_of_seq,
        mention_all: mentions.as_ref().is_some_and(|x| x.all),
        mention_user_ids: mentions.map(|x| x.user_ids).unwrap_or_default(),
    }
}

/// Where a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A direct conversation with this user (named by `to_user_id` or by the conversation id).
    User(UserId),
    Group(ConvId),
}

/// A direct (or system) conversation's members, if `user` is one of them, from the id with no
/// read. Groups'
/// members are stored: the sequencer (`groups/`) and the group reads check them.
pub(crate) fn members_with(conv: ConvId, user: UserId) -> Result<Members, Refusal> {
    let members = match conv.kind() {
        ConvKind::Direct | ConvKind::System => conv.implied_members(),
        ConvKind::Group => None,
    };
    members
        .filter(|m| m.contains(user))
        .ok_or_else(|| Refusal::new(ErrorCode::NotFound, "no such conversation"))
}

/// What a client's send or typing into its own system conversation is told.
pub(crate) fn system_read_only() -> Refusal {
    Refusal::new(
        ErrorCode::Forbidden,
        "the system conversation is read-only: only the server writes into it",
    )
}

/// A conversation id a client sent, if it is one a conversation can have.
pub(crate) fn conv_from_wire(raw: u64) -> Result<ConvId, Refusal> {
    ConvId::from_wire(raw).ok_or_else(|| Refusal::new(ErrorCode::NotFound, "no such conversation"))
}

/// Checks what can be checked without storage, and says where the send goes.
pub fn validate_send(
    from: UserId,
    send: &v1::Send,
    message_bytes_max: usize,
) -> Result<Target, Refusal> {
    let invalid = |m: &str| Err(Refusal::new(ErrorCode::InvalidArgument, m));
    if send.client_msg_id.is_empty() || send.client_msg_id.len() > CLIENT_MSG_ID_BYTES_MAX {
        return invalid("client_msg_id must be 1 to 64 bytes");
    }
    let target = match (send.to_user_id, send.conversation_id) {
        (to, 0) if to != 0 => {
            if to == from {
                return invalid("to_user_id is yourself");
            }
            if !(USER_ID_FIRST..=USER_ID_LAST).contains(&to) {
                return Err(Refusal::new(
                    ErrorCode::UserNotFound,
                    format!("no user {to}"),
                ));
            }
            Target::User(to)
        }
        (0, raw) if raw != 0 => {
            let conv = conv_from_wire(raw)?;
            match conv.kind() {
                ConvKind::Group => Target::Group(conv),
                ConvKind::System => {
                    members_with(conv, from)?;
                    return Err(system_read_only());
                }
                ConvKind::Direct => {
                    let members = members_with(conv, from)?;
                    match members.others(from).next() {
                        Some(to) => Target::User(to),
                        None => return invalid("not a conversation you can send to"),
                    }
                }
            }
        }
        // Both, or neither (not a send to user 0).
        _ => return invalid("set exactly one of to_user_id and conversation_id"),
    };
    if matches!(target, Target::User(_)) && (send.mention_all || !send.mention_user_ids.is_empty())
    {
        return invalid("mentions are for groups");
    }
    validate_content(send.content_type, &send.content, message_bytes_max)?;
    Ok(target)
}

/// What a client may send as a message's content, wherever it goes (conversations, rooms).
pub(crate) fn validate_content(
    content_type: i32,
    content: &[u8],
    message_bytes_max: usize,
) -> Result<(), Refusal> {
    let invalid = |m: &str| Err(Refusal::new(ErrorCode::InvalidArgument, m));
    if content.len() > message_bytes_max {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!(
                "content is {} bytes, the limit is {message_bytes_max}",
                content.len()
            ),
        ));
    }
    match ContentType::try_from(content_type) {
        Ok(ContentType::Text) => {
            if content.is_empty() || std::str::from_utf8(content).is_err() {
                return invalid("text content must be non-empty UTF-8");
            }
        }
        // IMAGE, FILE and AUDIO: a FileRef in conversations, checked with storage on the
        // backend's runtime (`files/media.rs`); rooms take any bytes.
        Ok(ContentType::Image | ContentType::File | ContentType::Audio | ContentType::Custom) => {}
        _ => return invalid("content_type must be TEXT, IMAGE, FILE, AUDIO or CUSTOM"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn send(to: u64, text: &str) -> v1::Send {
        v1::Send {
            client_msg_id: "c1".into(),
            to_user_id: to,
            content_type: ContentType::Text as i32,
            content: Bytes::copy_from_slice(text.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn send_validation() {
        let me = 100_000_001;
        assert!(validate_send(me, &send(100_000_002, "hi"), 10).is_ok());
        let code = |r: Result<Target, Refusal>| r.unwrap_err().code;
        assert_eq!(
            code(validate_send(me, &send(me, "hi"), 10)),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(validate_send(me, &send(5, "hi"), 10)),
            ErrorCode::UserNotFound
        );
        assert_eq!(
            code(validate_send(me, &send(100_000_002, "far too long"), 10)),
            ErrorCode::MessageTooLarge
        );
        let mut bad = send(100_000_002, "hi");
        bad.content = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(
            code(validate_send(me, &bad, 10)),
            ErrorCode::InvalidArgument
        );
        bad.content_type = ContentType::Recall as i32;
        assert_eq!(
            code(validate_send(me, &bad, 10)),
            ErrorCode::InvalidArgument
        );
        let mut system = send(0, "hi");
        system.conversation_id = crate::store::ConvId::system(me).unwrap().to_wire();
        assert_eq!(code(validate_send(me, &system, 10)), ErrorCode::Forbidden);
        system.conversation_id = crate::store::ConvId::system(me + 1).unwrap().to_wire();
        assert_eq!(
            code(validate_send(me, &system, 10)),
            ErrorCode::NotFound,
            "another user's system conversation is not yours to know of"
        );
        assert_eq!(
            code(validate_send(me, &send(0, "hi"), 10)),
            ErrorCode::InvalidArgument,
            "neither to_user_id nor conversation_id"
        );
        let mut both = send(100_000_002, "hi");
        both.conversation_id = crate::store::ConvId::system(me).unwrap().to_wire();
        assert_eq!(
            code(validate_send(me, &both, 10)),
            ErrorCode::InvalidArgument
        );
        let mut no_id = send(100_000_002, "hi");
        no_id.client_msg_id.clear();
        assert_eq!(
            code(validate_send(me, &no_id, 10)),
            ErrorCode::InvalidArgument
        );
    }
}

//! What crosses a link besides frames: a client's write as the Frame body it came in (the
//! owner types it again, with the same code as a local write), and a connection on another
//! node as a `ConnRef` the sequencer and delivery carry like any other.

/// Bytes a link item may add around the client frame it carries (ids, the origin connection,
/// a traceparent, a push's recipients), at most.
const ITEM_ENVELOPE_BYTES: usize = 64 << 10;
/// Bytes a batch adds around its items (the sender's node id, the flags), at most.
const BATCH_ENVELOPE_BYTES: usize = 1 << 10;

/// The largest item a link carries, in bytes: one client frame (`limits.frame_bytes_max`)
/// with its envelope. A bigger one is dropped by the sender's queue, never sent.
pub(crate) fn item_bytes_max(frame_bytes_max: usize) -> usize {
    frame_bytes_max + ITEM_ENVELOPE_BYTES
}

/// The gRPC message limit of a link, both ways and on both ends, in bytes: a batch is at most
/// `peer_batch_bytes_max`, or one item alone when that item is bigger.
pub(crate) fn message_bytes_max(peer_batch_bytes_max: usize, frame_bytes_max: usize) -> usize {
    peer_batch_bytes_max + item_bytes_max(frame_bytes_max) + BATCH_ENVELOPE_BYTES
}

use bytes::Bytes;
use prost::Message;
use ringchat_proto::v1::OriginConn;
use ringchat_proto::{Body, Frame};

use crate::api::{ClientRequest, ConnRef, ContactWrite, GroupWrite, WriteRequest};

/// Set in `ConnRef::shard` for a connection on another node: `shard & !REMOTE_BIT` is the
/// link's slot (`Link::peers`), `conn` packs the origin's shard (high 16 bits) and connection.
/// `u16::MAX` (the operator's and the notifications' sentinel) is never a slot.
const REMOTE_BIT: u16 = 0x8000;
/// Slots a node hands out, at most (peers ever seen).
pub(crate) const SLOTS_MAX: u16 = 0x7ffe;
const CONN_BITS: u32 = crate::api::CONN_ID_BITS;

pub(crate) fn is_remote(conn: ConnRef) -> bool {
    conn.shard & REMOTE_BIT != 0 && conn.shard != u16::MAX
}

/// The origin connection `origin` on the peer at `slot`, as the owner's sequencer names it.
pub(crate) fn remote(slot: u16, origin: &OriginConn) -> Option<ConnRef> {
    let shard = u16::try_from(origin.shard).ok()?;
    (slot < SLOTS_MAX && origin.conn >> CONN_BITS == 0).then_some(ConnRef {
        shard: REMOTE_BIT | slot,
        conn: (u64::from(shard) << CONN_BITS) | origin.conn,
    })
}

/// The slot and origin connection of a remote `ConnRef`.
pub(crate) fn origin_of(conn: ConnRef) -> Option<(u16, OriginConn)> {
    is_remote(conn).then(|| {
        (
            conn.shard & !REMOTE_BIT,
            OriginConn {
                shard: u32::try_from(conn.conn >> CONN_BITS).unwrap_or(u32::MAX),
                conn: conn.conn & ((1 << CONN_BITS) - 1),
            },
        )
    })
}

/// Gateway shards a cluster node may have: an `OriginConn.shard` is the shard in its low 8
/// bits and the naming process's tag (`Link::tag`) in the 8 above.
pub(crate) const SHARDS_MAX: usize = 1 << TAG_SHIFT;
const TAG_SHIFT: u32 = 8;

/// A connection of this process named by `origin`, if `tag` says this process named it.
pub(crate) fn local(origin: &OriginConn, tag: u8) -> Option<ConnRef> {
    (origin.shard >> TAG_SHIFT == u32::from(tag)).then_some(ConnRef {
        shard: (origin.shard & (SHARDS_MAX as u32 - 1)) as u16,
        conn: origin.conn,
    })
}

/// A connection of this process (tagged `tag`) as other nodes name it.
pub(crate) fn origin(conn: ConnRef, tag: u8) -> OriginConn {
    debug_assert!(usize::from(conn.shard) < SHARDS_MAX, "checked by Link::new");
    OriginConn {
        shard: u32::from(conn.shard) | u32::from(tag) << TAG_SHIFT,
        conn: conn.conn,
    }
}

/// A write, encoded as the Frame body a client sends for it (request id 0).
pub(crate) fn encode_write(request: WriteRequest) -> Bytes {
    let body = match request {
        WriteRequest::Send(b) => Body::Send(b),
        WriteRequest::DeliveryAck(b) => Body::DeliveryAck(b),
        WriteRequest::Read(b) => Body::Read(b),
        WriteRequest::Recall(b) => Body::Recall(b),
        WriteRequest::Contact(c) => match c {
            ContactWrite::FriendRequest(b) => Body::FriendRequest(b),
            ContactWrite::FriendRespond(b) => Body::FriendRespond(b),
            ContactWrite::FriendCancel(b) => Body::FriendCancel(b),
            ContactWrite::FriendDelete(b) => Body::FriendDelete(b),
            ContactWrite::Block(b) => Body::Block(b),
            ContactWrite::Unblock(b) => Body::Unblock(b),
            ContactWrite::SetPrivacy(b) => Body::SetPrivacy(b),
        },
        WriteRequest::Group(g) => match g {
            GroupWrite::Create(b) => Body::GroupCreate(b),
            GroupWrite::Update(b) => Body::GroupUpdate(b),
            GroupWrite::Invite(b) => Body::GroupInvite(b),
            GroupWrite::Join(b) => Body::GroupJoin(b),
            GroupWrite::Approve(b) => Body::GroupApprove(b),
            GroupWrite::Leave(b) => Body::GroupLeave(b),
            GroupWrite::Remove(b) => Body::GroupRemove(b),
            GroupWrite::SetRole(b) => Body::GroupSetRole(b),
            GroupWrite::Mute(b) => Body::GroupMute(b),
            GroupWrite::Transfer(b) => Body::GroupTransfer(b),
            GroupWrite::Dissolve(b) => Body::GroupDissolve(b),
            GroupWrite::SetNotify(b) => Body::GroupSetNotify(b),
        },
    };
    Frame {
        request_id: 0,
        body: Some(body),
    }
    .encode_to_vec()
    .into()
}

/// A forwarded write as the owner types it; `None` for anything but a write (a peer bug).
pub(crate) fn decode_write(frame: &[u8]) -> Option<WriteRequest> {
    let frame = Frame::decode(frame).ok()?;
    match ClientRequest::from_body(frame.body) {
        Ok(ClientRequest::Write(w)) => Some(w),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_proto::v1;

    #[test]
    fn remote_conns_round_trip_and_never_meet_local_or_sentinel_ones() {
        let o = OriginConn {
            shard: 3,
            conn: 123_456,
        };
        let r = remote(7, &o).expect("fits");
        assert!(is_remote(r));
        assert_eq!(origin_of(r), Some((7, o)));
        assert!(!is_remote(ConnRef { shard: 3, conn: 1 }));
        assert!(!is_remote(crate::notifications::NO_CONN));
        assert!(remote(SLOTS_MAX, &OriginConn { shard: 0, conn: 1 }).is_none());
        // A tagged origin comes back to the process that tagged it, and to no other.
        let mine = origin(ConnRef { shard: 5, conn: 77 }, 9);
        let there = remote(3, &mine).expect("fits");
        let (_, back) = origin_of(there).expect("remote");
        assert_eq!(local(&back, 9), Some(ConnRef { shard: 5, conn: 77 }));
        assert_eq!(local(&back, 10), None, "a later process of the node");
        // Every id a shard hands out crosses a link: the highest serial in the highest slot.
        let last = OriginConn {
            shard: u32::from(u16::MAX - 1),
            conn: (1 << crate::api::CONN_ID_BITS) - 1,
        };
        assert_eq!(origin_of(remote(1, &last).expect("fits")), Some((1, last)));
        assert!(
            remote(
                1,
                &OriginConn {
                    shard: 0,
                    conn: 1 << 50
                }
            )
            .is_none()
        );
    }

    #[test]
    fn a_write_crosses_as_the_body_it_came_in() {
        let send = WriteRequest::Send(v1::Send {
            client_msg_id: "c1".into(),
            to_user_id: 100_000_002,
            content: bytes::Bytes::from_static(b"hi"),
            ..Default::default()
        });
        assert_eq!(decode_write(&encode_write(send.clone())), Some(send));
        let leave = WriteRequest::Group(GroupWrite::Leave(v1::GroupLeave::default()));
        assert_eq!(decode_write(&encode_write(leave.clone())), Some(leave));
        assert_eq!(decode_write(b"\xff\xff"), None);
    }
}

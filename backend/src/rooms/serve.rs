//! Room requests turned into answers and broadcasts. Runs on the backend's request loop (see
//! `mod.rs` for why that keeps `room_seq` in order on every shard).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

use super::name::valid_room_name;
use super::registry::RoomError;
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, RoomRequest, ShardEvent, UserId};
use crate::messaging::validate_content;
use crate::time::now_ms;

impl From<RoomError> for Refusal {
    fn from(e: RoomError) -> Self {
        let message = e.to_string();
        match e {
            RoomError::NotIn => Refusal::new(ErrorCode::NotFound, message),
            RoomError::Full(_) => Refusal::new(ErrorCode::RoomFull, message),
            RoomError::UserHasTooMany(_)
            | RoomError::ServerHasTooMany(_)
            | RoomError::NetworkHasTooMany(_) => Refusal::new(ErrorCode::TooManyRooms, message),
            RoomError::RoomRate { retry_after_ms, .. }
            | RoomError::UserRate { retry_after_ms, .. } => Refusal {
                code: ErrorCode::RoomRateLimited,
                message,
                retry_after_ms,
            },
            RoomError::Unsettled | RoomError::JoinAsked => Refusal {
                code: ErrorCode::Unavailable,
                message,
                retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
            },
        }
    }
}

pub(super) fn check_name(room: &str) -> Result<(), Refusal> {
    if valid_room_name(room) {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "a room name is 1 to 64 bytes of a-z, 0-9, '_', '.' and '-'",
        ))
    }
}

impl Backend {
    pub(crate) async fn room(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        request: RoomRequest,
    ) {
        if self.rooms.cluster().is_some() {
            return self.room_in_cluster(conn, user, request_id, request).await;
        }
        let answer = match request {
            RoomRequest::Join(v1::RoomJoin { room }) => check_name(&room).and_then(|()| {
                let peer = self.peer_of(user, conn);
                let member_count =
                    self.rooms
                        .lock()
                        .join(conn, user, peer, &room, self.rooms.now_ms())?;
                Ok(Some(Body::RoomJoined(v1::RoomJoined {
                    room,
                    member_count,
                })))
            }),
            RoomRequest::Leave(v1::RoomLeave { room }) => check_name(&room).map(|()| {
                let now_ms = self.rooms.now_ms();
                self.rooms.lock().leave(conn, user, &room, now_ms);
                Some(Body::RoomLeft(v1::RoomLeft { room }))
            }),
            RoomRequest::Info(v1::RoomInfo { room }) => check_name(&room).and_then(|()| {
                let member_count = self.rooms.lock().info(conn, &room)?;
                Ok(Some(Body::RoomJoined(v1::RoomJoined {
                    room,
                    member_count,
                })))
            }),
            RoomRequest::Send(send) => self.room_send(conn, user, request_id, send).await,
        };
        match answer {
            Ok(Some(body)) => self.reply(conn, request_id, body).await,
            Ok(None) => {}
            Err(refusal) => self.refuse(conn, request_id, refusal).await,
        }
    }

    /// What a room send must be on any node, before membership and budgets: a valid name and
    /// content (the same rules as `Send`).
    pub(super) fn check_send_input(&self, send: &v1::RoomSend) -> Result<(), Refusal> {
        check_name(&send.room)?;
        validate_content(
            send.content_type,
            &send.content,
            self.settings.limits.message_bytes_max,
        )
    }

    /// The client address of a session, for `rooms.per_network_max`.
    pub(super) fn peer_of(&self, user: UserId, conn: ConnRef) -> IpAddr {
        // A session is registered before its first request is served; the fallback (all
        // such sessions counted as one network) never lets one through unbounded.
        self.sessions
            .read()
            .session(user, conn)
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |s| s.peer)
    }

    /// Numbers the message, encodes it once and hands each shard with an audience one event
    /// carrying its shared connection list. The answer is `RoomSent`, or nothing for
    /// `request_id` 0.
    async fn room_send(
        &self,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        send: v1::RoomSend,
    ) -> Result<Option<Body>, Refusal> {
        self.check_send_input(&send)?;
        let out = self
            .rooms
            .lock()
            .send(conn, user, &send.room, self.rooms.now_ms())?;
        let sent = (request_id != 0).then(|| {
            Body::RoomSent(v1::RoomSent {
                room: send.room.clone(),
                room_seq: out.room_seq,
            })
        });
        let frame = crate::api::encoded(
            0,
            Body::RoomMessage(v1::RoomMessage {
                room: send.room,
                room_seq: out.room_seq,
                from_user_id: user,
                content_type: send.content_type,
                content: send.content,
                server_time_ms: now_ms(),
            }),
        );
        for (shard, conns) in out.targets {
            let except = (shard == conn.shard).then_some(conn.conn);
            let event = ShardEvent::Frames(vec![Outgoing::Shared {
                conns,
                except,
                frame: frame.clone(),
            }]);
            self.send_to_shard(shard, event).await;
        }
        Ok(sent)
    }
}

//! Room requests in cluster mode, on the backend's request loop: what this node decides
//! (names, membership, `rooms.max`, `per_user_max`, `per_network_max`, the user's budget) is
//! decided here at once; what the room's owner decides is asked, and the answer awaited in a
//! task of its own (at most `cluster.forward_timeout_ms`), so the loop never waits on a peer.
//! Items for the owner are queued from the loop itself: a connection's room requests reach
//! the owner in the order it sent them.

use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1;

use super::Asked;
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, RoomRequest, UserId};
use crate::rooms::serve::check_name;

/// What a client is answered once the owner's answer is in.
enum Then {
    Joined {
        room: String,
        /// The join made the session a member (taken back on a refusal).
        fresh: bool,
        /// The join made the user new to the room here: the owner admits them or not, and
        /// their other joins of it wait for that (`Registry::join_to_ask`).
        new_user: bool,
    },
    Info(String),
    Left(String),
    Sent(String),
}

impl Backend {
    pub(crate) async fn room_in_cluster(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        request: RoomRequest,
    ) {
        let asked = match request {
            RoomRequest::Join(v1::RoomJoin { room }) => self.join_here(conn, user, room),
            RoomRequest::Leave(v1::RoomLeave { room }) => check_name(&room).map(|()| {
                let now_ms = self.rooms.now_ms();
                self.rooms.lock().leave(conn, user, &room, now_ms);
                self.rooms.report(&room);
                (
                    Asked::Now(Ok(v1::NodeRoomAnswer::default())),
                    Then::Left(room),
                )
            }),
            RoomRequest::Info(v1::RoomInfo { room }) => check_name(&room).and_then(|()| {
                self.rooms.lock().info(conn, &room)?;
                Ok((self.rooms.ask_part(&room, false), Then::Info(room)))
            }),
            RoomRequest::Send(send) => match self.send_checks(conn, user, &send) {
                Ok(()) => Ok((
                    self.rooms.send_clustered(conn, user, &send).await,
                    Then::Sent(send.room),
                )),
                Err(refusal) => Err(refusal),
            },
        };
        let (asked, then) = match asked {
            Ok(pair) => pair,
            Err(refusal) => return self.refuse(conn, request_id, refusal).await,
        };
        match asked {
            Asked::Now(result) => {
                let result = result.map_err(Refusal::from);
                self.room_answered(conn, user, request_id, then, result)
                    .await;
            }
            Asked::Later(id, rx) => {
                let backend = Arc::clone(self);
                tokio::spawn(async move {
                    let result = backend.rooms.answer(id, rx).await;
                    backend
                        .room_answered(conn, user, request_id, then, result)
                        .await;
                });
            }
        }
    }

    /// A join, made here first (this node's limits); the owner is asked for the rest.
    fn join_here(
        &self,
        conn: ConnRef,
        user: UserId,
        room: String,
    ) -> Result<(Asked, Then), Refusal> {
        check_name(&room)?;
        let peer = self.peer_of(user, conn);
        let now_ms = self.rooms.now_ms();
        let made = self
            .rooms
            .lock()
            .join_to_ask(conn, user, peer, &room, now_ms)?;
        let asked = self.rooms.ask_part(&room, made.new_user);
        Ok((
            asked,
            Then::Joined {
                room,
                fresh: made.fresh,
                new_user: made.new_user,
            },
        ))
    }

    /// A send's checks on this node: the name, the content, membership, the user's budget.
    fn send_checks(&self, conn: ConnRef, user: UserId, send: &v1::RoomSend) -> Result<(), Refusal> {
        self.check_send_input(send)?;
        let now_ms = self.rooms.now_ms();
        self.rooms.lock().may_send(conn, user, &send.room, now_ms)?;
        Ok(())
    }

    async fn room_answered(
        &self,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        then: Then,
        result: Result<v1::NodeRoomAnswer, Refusal>,
    ) {
        if let Then::Joined {
            room,
            fresh,
            new_user,
        } = &then
        {
            // Under one lock, so that no other join of the user finds them in the room and
            // no longer waiting before a refused session is out.
            let take_back = *fresh && result.is_err();
            let now_ms = self.rooms.now_ms();
            {
                let mut registry = self.rooms.lock();
                if *new_user {
                    registry.join_answered(room, user);
                }
                if take_back {
                    // Not a member after all: out here, and the owner told.
                    registry.leave(conn, user, room, now_ms);
                }
            }
            if take_back {
                self.rooms.report(room);
            }
        }
        let body = match (then, result) {
            (Then::Left(room), _) => Body::RoomLeft(v1::RoomLeft { room }),
            (Then::Info(room) | Then::Joined { room, .. }, Ok(a)) => {
                Body::RoomJoined(v1::RoomJoined {
                    room,
                    member_count: a.member_count,
                })
            }
            (Then::Sent(room), Ok(a)) => {
                if request_id == 0 {
                    return;
                }
                Body::RoomSent(v1::RoomSent {
                    room,
                    room_seq: a.room_seq,
                })
            }
            (then, Err(refusal)) => {
                if let Then::Sent(room) = &then
                    && refusal.code == v1::ErrorCode::Unavailable
                {
                    // The owner may lack this node's part (ownership has just moved): sent
                    // again, so that the client's retry finds it.
                    self.rooms.report(room);
                }
                return self.refuse(conn, request_id, refusal).await;
            }
        };
        self.reply(conn, request_id, body).await;
    }
}

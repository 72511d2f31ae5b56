//! Helpers for the room tests (one box and cluster): requests by body, expected replies.

use std::time::Duration;

use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType};

use super::contacts::ask;

/// How long a test waits for one room message.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn join(c: &mut Client, room: &str) -> Body {
    ask(c, Body::RoomJoin(v1::RoomJoin { room: room.into() })).await
}

/// Joins and returns the member count.
pub async fn joined(c: &mut Client, room: &str) -> u32 {
    match join(c, room).await {
        Body::RoomJoined(j) => {
            assert_eq!(j.room, room);
            j.member_count
        }
        other => panic!("expected RoomJoined, got {other:?}"),
    }
}

pub async fn info(c: &mut Client, room: &str) -> Body {
    ask(c, Body::RoomInfo(v1::RoomInfo { room: room.into() })).await
}

pub async fn count(c: &mut Client, room: &str) -> u32 {
    match info(c, room).await {
        Body::RoomJoined(j) => j.member_count,
        other => panic!("expected RoomJoined, got {other:?}"),
    }
}

pub async fn leave(c: &mut Client, room: &str) {
    match ask(c, Body::RoomLeave(v1::RoomLeave { room: room.into() })).await {
        Body::RoomLeft(l) => assert_eq!(l.room, room),
        other => panic!("expected RoomLeft, got {other:?}"),
    }
}

pub fn text(room: &str, text: &str) -> Body {
    Body::RoomSend(v1::RoomSend {
        room: room.into(),
        content_type: ContentType::Text as i32,
        content: text.as_bytes().to_vec().into(),
    })
}

/// Sends a text and returns its `room_seq`.
pub async fn say(c: &mut Client, room: &str, words: &str) -> u64 {
    match ask(c, text(room, words)).await {
        Body::RoomSent(s) => {
            assert_eq!(s.room, room);
            s.room_seq
        }
        other => panic!("expected RoomSent, got {other:?}"),
    }
}

/// The next room message, within `WAIT`.
pub async fn next_message(c: &mut Client) -> v1::RoomMessage {
    let frame = tokio::time::timeout(WAIT, c.next_event_untimed())
        .await
        .expect("a room message in time")
        .unwrap()
        .expect("open");
    match frame.body {
        Some(Body::RoomMessage(m)) => m,
        other => panic!("expected RoomMessage, got {other:?}"),
    }
}

/// Asks RoomInfo until the count is `want`, within `WAIT`: a close reaches the rooms a
/// moment after the socket closed (and, in a cluster, the room's owner after that).
pub async fn wait_for_count(c: &mut Client, room: &str, want: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = match info(c, room).await {
            Body::RoomJoined(j) => Some(j.member_count),
            // A cluster's owner moving: asked again.
            Body::Error(e) if e.code == v1::ErrorCode::Unavailable as i32 => None,
            other => panic!("expected RoomJoined, got {other:?}"),
        };
        if now == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member count stayed {now:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Helpers for the group tests: requests by body, expected replies, events.

use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, GroupEventKind};

use super::contacts::ask;

pub async fn create(
    c: &mut Client,
    name: &str,
    members: &[u64],
    policy: v1::JoinPolicy,
    history: bool,
) -> v1::GroupCreated {
    match ask(
        c,
        Body::GroupCreate(v1::GroupCreate {
            name: name.into(),
            member_ids: members.to_vec(),
            join_policy: policy as i32,
            history_visible: history,
            ..Default::default()
        }),
    )
    .await
    {
        Body::GroupCreated(g) => g,
        other => panic!("expected GroupCreated, got {other:?}"),
    }
}

/// Creates a group and returns its conversation id.
pub async fn create_id(c: &mut Client, members: &[u64], policy: v1::JoinPolicy) -> u64 {
    create(c, "g", members, policy, false)
        .await
        .group
        .expect("a group")
        .conversation_id
}

pub fn send_body(g: u64, id: &str, text: &str, mentions: &[u64], all: bool) -> Body {
    Body::Send(v1::Send {
        client_msg_id: id.into(),
        conversation_id: g,
        content_type: v1::ContentType::Text as i32,
        content: text.as_bytes().to_vec().into(),
        mention_user_ids: mentions.to_vec(),
        mention_all: all,
        ..Default::default()
    })
}

pub async fn send(c: &mut Client, g: u64, id: &str, text: &str) -> Body {
    ask(c, send_body(g, id, text, &[], false)).await
}

pub fn ack(reply: Body) -> v1::SendAck {
    match reply {
        Body::SendAck(a) => a,
        other => panic!("expected SendAck, got {other:?}"),
    }
}

pub fn ok(reply: Body) -> v1::GroupOk {
    match reply {
        Body::GroupOk(o) => o,
        other => panic!("expected GroupOk, got {other:?}"),
    }
}

pub fn event_of(m: &v1::Message) -> v1::GroupEvent {
    assert_eq!(m.content_type, v1::ContentType::GroupEvent as i32, "{m:?}");
    prost::Message::decode(m.content.as_ref()).expect("a GroupEvent")
}

/// The event kind of a message, if it is a group event.
pub fn event_kind(m: &v1::Message) -> Option<GroupEventKind> {
    (m.content_type == v1::ContentType::GroupEvent as i32)
        .then(|| GroupEventKind::try_from(event_of(m).kind).expect("a known kind"))
}

pub fn texts(messages: &[v1::Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.content_type == v1::ContentType::Text as i32)
        .map(|m| String::from_utf8_lossy(&m.content).into_owned())
        .collect()
}

pub async fn sync(c: &mut Client, g: u64) -> Vec<v1::Message> {
    c.sync_all(g, 0).await.expect("sync")
}

pub fn join(g: u64) -> Body {
    Body::GroupJoin(v1::GroupJoin {
        conversation_id: g,
        message: String::new(),
    })
}

pub fn invite(g: u64, users: &[u64]) -> Body {
    Body::GroupInvite(v1::GroupInvite {
        conversation_id: g,
        user_ids: users.to_vec(),
    })
}

pub fn approve(g: u64, user: u64, accept: bool) -> Body {
    Body::GroupApprove(v1::GroupApprove {
        conversation_id: g,
        user_id: user,
        accept,
    })
}

pub fn remove(g: u64, users: &[u64]) -> Body {
    Body::GroupRemove(v1::GroupRemove {
        conversation_id: g,
        user_ids: users.to_vec(),
    })
}

pub fn set_role(g: u64, user: u64, role: v1::GroupRole) -> Body {
    Body::GroupSetRole(v1::GroupSetRole {
        conversation_id: g,
        user_id: user,
        role: role as i32,
    })
}

pub fn mute(g: u64, user: u64, until_ms: u64) -> Body {
    Body::GroupMute(v1::GroupMute {
        conversation_id: g,
        user_id: user,
        until_ms,
    })
}

pub fn update_name(g: u64, name: &str) -> Body {
    Body::GroupUpdate(v1::GroupUpdate {
        conversation_id: g,
        name: Some(name.into()),
        ..Default::default()
    })
}

pub fn transfer(g: u64, user: u64) -> Body {
    Body::GroupTransfer(v1::GroupTransfer {
        conversation_id: g,
        user_id: user,
    })
}

pub fn dissolve(g: u64) -> Body {
    Body::GroupDissolve(v1::GroupDissolve { conversation_id: g })
}

pub fn leave(g: u64) -> Body {
    Body::GroupLeave(v1::GroupLeave { conversation_id: g })
}

pub fn applications(g: u64) -> Body {
    Body::GroupApplications(v1::GroupApplications {
        conversation_id: g,
        ..Default::default()
    })
}

pub fn recall(g: u64, seq: u64) -> Body {
    Body::Recall(v1::Recall {
        conversation_id: g,
        seq,
    })
}

pub async fn read_count(c: &mut Client, g: u64, seq: u64) -> v1::GroupReadCountOk {
    match ask(
        c,
        Body::GroupReadCount(v1::GroupReadCount {
            conversation_id: g,
            seq,
        }),
    )
    .await
    {
        Body::GroupReadCountOk(r) => r,
        other => panic!("expected GroupReadCountOk, got {other:?}"),
    }
}

/// Pushes until one of conversation `g` with a seq at or past `seq` (panics on a deadline).
pub async fn push_at(c: &mut Client, g: u64, seq: u64) -> v1::Message {
    loop {
        let m = c.next_push().await.expect("a push before the deadline");
        if m.conversation_id == g && m.seq >= seq {
            return m;
        }
    }
}

/// A ping round trip, then every frame that came before its answer: what the server sent the
/// client up to now.
pub async fn frames_so_far(c: &mut Client) -> Vec<v1::Frame> {
    c.ping().await.expect("ping");
    let mut frames = Vec::new();
    while c.pending_events() > 0 {
        frames.push(c.next_event().await.expect("a parked frame").expect("open"));
    }
    frames
}

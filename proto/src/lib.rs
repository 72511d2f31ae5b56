//! The ringchat wire protocol: generated protobuf types (`v1`) and the length-prefixed frame codec.
//!
//! This crate is pure: bytes in, frames out, no I/O.

pub mod codec;

/// Generated from `proto/ringchat/v1/ringchat.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ringchat.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ringchat.v1.serde.rs"));
}

pub use codec::{CodecError, LEN_PREFIX_BYTES, decode, encode, encode_to_bytes};
pub use v1::Frame;
pub use v1::frame::Body;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Shorthand for a frame with a body.
pub fn frame(request_id: u64, body: Body) -> Frame {
    Frame {
        request_id,
        body: Some(body),
    }
}

/// Shorthand for an error reply.
pub fn error_frame(request_id: u64, code: v1::ErrorCode, message: impl Into<String>) -> Frame {
    frame(
        request_id,
        Body::Error(v1::Error {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
        }),
    )
}

/// Shorthand for a kick notice.
pub fn kicked_frame(reason: v1::KickReason, message: impl Into<String>) -> Frame {
    frame(
        0,
        Body::Kicked(v1::Kicked {
            reason: reason as i32,
            message: message.into(),
        }),
    )
}

/// The `body` member's protobuf name, for logs and metrics labels.
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "hello",
        Body::HelloOk(_) => "hello_ok",
        Body::Register(_) => "register",
        Body::RegisterOk(_) => "register_ok",
        Body::Login(_) => "login",
        Body::LoginOk(_) => "login_ok",
        Body::Ping(_) => "ping",
        Body::Pong(_) => "pong",
        Body::Error(_) => "error",
        Body::Kicked(_) => "kicked",
        Body::Resumed(_) => "resumed",
        Body::Send(_) => "send",
        Body::SendAck(_) => "send_ack",
        Body::Push(_) => "push",
        Body::DeliveryAck(_) => "delivery_ack",
        Body::Read(_) => "read",
        Body::Receipt(_) => "receipt",
        Body::Sync(_) => "sync",
        Body::SyncBatch(_) => "sync_batch",
        Body::History(_) => "history",
        Body::HistoryBatch(_) => "history_batch",
        Body::Conversations(_) => "conversations",
        Body::ConversationList(_) => "conversation_list",
        Body::Typing(_) => "typing",
        Body::Recall(_) => "recall",
        Body::RecallOk(_) => "recall_ok",
        Body::CursorOk(_) => "cursor_ok",
        Body::SyncNeeded(_) => "sync_needed",
        Body::SearchUsers(_) => "search_users",
        Body::UserList(_) => "user_list",
        Body::GetProfiles(_) => "get_profiles",
        Body::ProfileList(_) => "profile_list",
        Body::UpdateProfile(_) => "update_profile",
        Body::Profile(_) => "profile",
        Body::FriendRequest(_) => "friend_request",
        Body::FriendRespond(_) => "friend_respond",
        Body::FriendCancel(_) => "friend_cancel",
        Body::FriendDelete(_) => "friend_delete",
        Body::FriendOk(_) => "friend_ok",
        Body::ListFriends(_) => "list_friends",
        Body::FriendList(_) => "friend_list",
        Body::ListFriendRequests(_) => "list_friend_requests",
        Body::FriendRequestList(_) => "friend_request_list",
        Body::Block(_) => "block",
        Body::Unblock(_) => "unblock",
        Body::BlockOk(_) => "block_ok",
        Body::ListBlocks(_) => "list_blocks",
        Body::BlockList(_) => "block_list",
        Body::FriendEvent(_) => "friend_event",
        Body::SetPrivacy(_) => "set_privacy",
        Body::Privacy(_) => "privacy",
        Body::RequestEmailCode(_) => "request_email_code",
        Body::EmailCodeSent(_) => "email_code_sent",
        Body::ResetPassword(_) => "reset_password",
        Body::ResetPasswordOk(_) => "reset_password_ok",
        Body::ChangePassword(_) => "change_password",
        Body::ChangePasswordOk(_) => "change_password_ok",
        Body::Logout(_) => "logout",
        Body::LogoutOk(_) => "logout_ok",
        Body::ListDevices(_) => "list_devices",
        Body::DeviceList(_) => "device_list",
        Body::RevokeDevice(_) => "revoke_device",
        Body::RevokeDeviceOk(_) => "revoke_device_ok",
        Body::SetPresence(_) => "set_presence",
        Body::SetPresenceOk(_) => "set_presence_ok",
        Body::Presence(_) => "presence",
        Body::GroupCreate(_) => "group_create",
        Body::GroupCreated(_) => "group_created",
        Body::GroupInfo(_) => "group_info",
        Body::Group(_) => "group",
        Body::GroupUpdate(_) => "group_update",
        Body::GroupInvite(_) => "group_invite",
        Body::GroupJoin(_) => "group_join",
        Body::GroupApprove(_) => "group_approve",
        Body::GroupLeave(_) => "group_leave",
        Body::GroupRemove(_) => "group_remove",
        Body::GroupSetRole(_) => "group_set_role",
        Body::GroupMute(_) => "group_mute",
        Body::GroupTransfer(_) => "group_transfer",
        Body::GroupDissolve(_) => "group_dissolve",
        Body::GroupOk(_) => "group_ok",
        Body::GroupMembers(_) => "group_members",
        Body::GroupMemberList(_) => "group_member_list",
        Body::ListGroups(_) => "list_groups",
        Body::GroupList(_) => "group_list",
        Body::GroupReadCount(_) => "group_read_count",
        Body::GroupReadCountOk(_) => "group_read_count_ok",
        Body::GroupApplications(_) => "group_applications",
        Body::GroupApplicationList(_) => "group_application_list",
        Body::GroupSetNotify(_) => "group_set_notify",
        Body::RoomJoin(_) => "room_join",
        Body::RoomJoined(_) => "room_joined",
        Body::RoomLeave(_) => "room_leave",
        Body::RoomLeft(_) => "room_left",
        Body::RoomSend(_) => "room_send",
        Body::RoomSent(_) => "room_sent",
        Body::RoomMessage(_) => "room_message",
        Body::RoomInfo(_) => "room_info",
        Body::RegisterPushToken(_) => "register_push_token",
        Body::UnregisterPushToken(_) => "unregister_push_token",
        Body::PushTokenOk(_) => "push_token_ok",
        Body::CreateInvite(_) => "create_invite",
        Body::InviteCreated(_) => "invite_created",
        Body::ListInvites(_) => "list_invites",
        Body::InviteList(_) => "invite_list",
        Body::RevokeInvite(_) => "revoke_invite",
        Body::RevokeInviteOk(_) => "revoke_invite_ok",
    }
}

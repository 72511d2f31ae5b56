//! A client frame's body, typed once at the edge. This is the one place that decides which
//! bodies a client may send and which of them need a login: a `SessionRequest` exists only
//! for a logged-in connection to forward, so nothing downstream checks it again.
//!
//! Adding a client request: a new `Body` variant fails to compile in `from_body` until it is
//! classified here, and a new `WriteRequest` or `SessionRequest` variant fails to compile where
//! it is served (`Writes::submit`, the backend's dispatch) until it is.

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// Everything a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// First frame of every connection.
    Hello(v1::Hello),
    /// Liveness, answered by the shard in any state after hello.
    Ping(v1::Ping),
    /// Before login only.
    Register(v1::Register),
    /// Before login only.
    Login(v1::Login),
    /// Before login only: e-mail codes and password reset.
    Account(AccountRequest),
    /// After login only: queued by the shard straight to the sequencer (`Writes`).
    Write(WriteRequest),
    /// After login only: served by the backend's request loop.
    Session(SessionRequest),
}

/// The writes of a logged-in session: each becomes part of a commit group.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteRequest {
    Send(v1::Send),
    DeliveryAck(v1::DeliveryAck),
    Read(v1::Read),
    Recall(v1::Recall),
    /// Friendship, blocks and the DM policy: ordered with sends by the sequencer.
    Contact(ContactWrite),
    /// Group lifecycle, membership and roles: ordered with the group's messages.
    Group(GroupWrite),
}

/// The group writes (`backend/src/groups/`): each is a GROUP_EVENT in the group's log.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupWrite {
    Create(v1::GroupCreate),
    Update(v1::GroupUpdate),
    Invite(v1::GroupInvite),
    Join(v1::GroupJoin),
    Approve(v1::GroupApprove),
    Leave(v1::GroupLeave),
    Remove(v1::GroupRemove),
    SetRole(v1::GroupSetRole),
    Mute(v1::GroupMute),
    Transfer(v1::GroupTransfer),
    Dissolve(v1::GroupDissolve),
    SetNotify(v1::GroupSetNotify),
}

/// The group reads, served on the read pool.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupQuery {
    Info(v1::GroupInfo),
    Members(v1::GroupMembers),
    List(v1::ListGroups),
    ReadCount(v1::GroupReadCount),
    Applications(v1::GroupApplications),
}

/// The contacts writes (`backend/src/contacts/`): relations between users, which a send must
/// see in the order the sequencer commits them.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactWrite {
    FriendRequest(v1::FriendRequest),
    FriendRespond(v1::FriendRespond),
    FriendCancel(v1::FriendCancel),
    FriendDelete(v1::FriendDelete),
    Block(v1::Block),
    Unblock(v1::Unblock),
    SetPrivacy(v1::SetPrivacy),
}

/// The contacts reads and profile writes, served off the sequencer.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactQuery {
    SearchUsers(v1::SearchUsers),
    GetProfiles(v1::GetProfiles),
    UpdateProfile(v1::UpdateProfile),
    ListFriends(v1::ListFriends),
    ListFriendRequests(v1::ListFriendRequests),
    ListBlocks(v1::ListBlocks),
}

/// The other requests of a logged-in session: reads and typing.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionRequest {
    Sync(v1::Sync),
    History(v1::History),
    Conversations(v1::Conversations),
    Typing(v1::Typing),
    Contacts(ContactQuery),
    SetPresence(v1::SetPresence),
    Account(AccountSessionRequest),
    Group(GroupQuery),
    /// Ephemeral chat rooms: never stored, never through the sequencer.
    Room(RoomRequest),
    /// This device's push token for offline push (`backend/src/push/`).
    PushToken(PushTokenRequest),
    /// Invite codes the user issues (`backend/src/accounts/user_invites.rs`).
    Invite(InviteRequest),
    /// Never a client's frame: the shard asks it right after sending the `LoginOk` of a login
    /// that carried `Login.resume` (`messaging/resume.rs`), with the login's request id.
    Resume(v1::Resume),
}

/// A user's own invite codes (`backend/src/accounts/user_invites.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum InviteRequest {
    Create(v1::CreateInvite),
    List(v1::ListInvites),
    Revoke(v1::RevokeInvite),
}

/// A device's push token (`backend/src/push/tokens.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum PushTokenRequest {
    Register(v1::RegisterPushToken),
    Unregister(v1::UnregisterPushToken),
}

/// The chat room requests (`backend/src/rooms/`).
#[derive(Debug, Clone, PartialEq)]
pub enum RoomRequest {
    Join(v1::RoomJoin),
    Leave(v1::RoomLeave),
    Send(v1::RoomSend),
    Info(v1::RoomInfo),
}

/// Account requests before login, served by the backend like Register.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountRequest {
    RequestEmailCode(v1::RequestEmailCode),
    ResetPassword(v1::ResetPassword),
}

/// A logged-in user's password, sessions and devices.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountSessionRequest {
    ChangePassword(v1::ChangePassword),
    Logout(v1::Logout),
    ListDevices(v1::ListDevices),
    RevokeDevice(v1::RevokeDevice),
}

/// A frame that is no request at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("frame has no body")]
    NoBody,
    #[error("{0} is sent by the server only")]
    ServerOnly(&'static str),
    #[error("{0} is not served by this server yet")]
    NotServed(&'static str),
}

impl RequestError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::UnexpectedBody
    }
}

impl ClientRequest {
    /// Types a frame's body. No wildcard arm: every body is classified by name.
    pub fn from_body(body: Option<Body>) -> Result<Self, RequestError> {
        let body = body.ok_or(RequestError::NoBody)?;
        Ok(match body {
            Body::Hello(b) => Self::Hello(b),
            Body::Ping(b) => Self::Ping(b),
            Body::Register(b) => Self::Register(b),
            Body::Login(b) => Self::Login(b),
            Body::Send(b) => Self::Write(WriteRequest::Send(b)),
            Body::DeliveryAck(b) => Self::Write(WriteRequest::DeliveryAck(b)),
            Body::Read(b) => Self::Write(WriteRequest::Read(b)),
            Body::Sync(b) => Self::Session(SessionRequest::Sync(b)),
            Body::History(b) => Self::Session(SessionRequest::History(b)),
            Body::Conversations(b) => Self::Session(SessionRequest::Conversations(b)),
            Body::Typing(b) => Self::Session(SessionRequest::Typing(b)),
            Body::Recall(b) => Self::Write(WriteRequest::Recall(b)),
            // Contacts: writes to the sequencer, reads to the backend.
            Body::FriendRequest(b) => {
                Self::Write(WriteRequest::Contact(ContactWrite::FriendRequest(b)))
            }
            Body::FriendRespond(b) => {
                Self::Write(WriteRequest::Contact(ContactWrite::FriendRespond(b)))
            }
            Body::FriendCancel(b) => {
                Self::Write(WriteRequest::Contact(ContactWrite::FriendCancel(b)))
            }
            Body::FriendDelete(b) => {
                Self::Write(WriteRequest::Contact(ContactWrite::FriendDelete(b)))
            }
            Body::Block(b) => Self::Write(WriteRequest::Contact(ContactWrite::Block(b))),
            Body::Unblock(b) => Self::Write(WriteRequest::Contact(ContactWrite::Unblock(b))),
            Body::SetPrivacy(b) => Self::Write(WriteRequest::Contact(ContactWrite::SetPrivacy(b))),
            Body::SearchUsers(b) => {
                Self::Session(SessionRequest::Contacts(ContactQuery::SearchUsers(b)))
            }
            Body::GetProfiles(b) => {
                Self::Session(SessionRequest::Contacts(ContactQuery::GetProfiles(b)))
            }
            Body::UpdateProfile(b) => {
                Self::Session(SessionRequest::Contacts(ContactQuery::UpdateProfile(b)))
            }
            Body::ListFriends(b) => {
                Self::Session(SessionRequest::Contacts(ContactQuery::ListFriends(b)))
            }
            Body::ListFriendRequests(b) => Self::Session(SessionRequest::Contacts(
                ContactQuery::ListFriendRequests(b),
            )),
            Body::ListBlocks(b) => {
                Self::Session(SessionRequest::Contacts(ContactQuery::ListBlocks(b)))
            }
            Body::RequestEmailCode(b) => Self::Account(AccountRequest::RequestEmailCode(b)),
            Body::ResetPassword(b) => Self::Account(AccountRequest::ResetPassword(b)),
            Body::ChangePassword(b) => Self::Session(SessionRequest::Account(
                AccountSessionRequest::ChangePassword(b),
            )),
            Body::Logout(b) => {
                Self::Session(SessionRequest::Account(AccountSessionRequest::Logout(b)))
            }
            Body::ListDevices(b) => Self::Session(SessionRequest::Account(
                AccountSessionRequest::ListDevices(b),
            )),
            Body::RevokeDevice(b) => Self::Session(SessionRequest::Account(
                AccountSessionRequest::RevokeDevice(b),
            )),
            Body::SetPresence(b) => Self::Session(SessionRequest::SetPresence(b)),
            // Groups: writes to the sequencer, reads to the backend.
            Body::GroupCreate(b) => Self::Write(WriteRequest::Group(GroupWrite::Create(b))),
            Body::GroupUpdate(b) => Self::Write(WriteRequest::Group(GroupWrite::Update(b))),
            Body::GroupInvite(b) => Self::Write(WriteRequest::Group(GroupWrite::Invite(b))),
            Body::GroupJoin(b) => Self::Write(WriteRequest::Group(GroupWrite::Join(b))),
            Body::GroupApprove(b) => Self::Write(WriteRequest::Group(GroupWrite::Approve(b))),
            Body::GroupLeave(b) => Self::Write(WriteRequest::Group(GroupWrite::Leave(b))),
            Body::GroupRemove(b) => Self::Write(WriteRequest::Group(GroupWrite::Remove(b))),
            Body::GroupSetRole(b) => Self::Write(WriteRequest::Group(GroupWrite::SetRole(b))),
            Body::GroupMute(b) => Self::Write(WriteRequest::Group(GroupWrite::Mute(b))),
            Body::GroupTransfer(b) => Self::Write(WriteRequest::Group(GroupWrite::Transfer(b))),
            Body::GroupDissolve(b) => Self::Write(WriteRequest::Group(GroupWrite::Dissolve(b))),
            Body::GroupSetNotify(b) => Self::Write(WriteRequest::Group(GroupWrite::SetNotify(b))),
            Body::GroupInfo(b) => Self::Session(SessionRequest::Group(GroupQuery::Info(b))),
            Body::GroupMembers(b) => Self::Session(SessionRequest::Group(GroupQuery::Members(b))),
            Body::ListGroups(b) => Self::Session(SessionRequest::Group(GroupQuery::List(b))),
            Body::GroupReadCount(b) => {
                Self::Session(SessionRequest::Group(GroupQuery::ReadCount(b)))
            }
            Body::GroupApplications(b) => {
                Self::Session(SessionRequest::Group(GroupQuery::Applications(b)))
            }
            // Rooms: in the backend's memory only (`backend/src/rooms/`).
            Body::RoomJoin(b) => Self::Session(SessionRequest::Room(RoomRequest::Join(b))),
            Body::RoomLeave(b) => Self::Session(SessionRequest::Room(RoomRequest::Leave(b))),
            Body::RoomSend(b) => Self::Session(SessionRequest::Room(RoomRequest::Send(b))),
            Body::RoomInfo(b) => Self::Session(SessionRequest::Room(RoomRequest::Info(b))),
            Body::RegisterPushToken(b) => {
                Self::Session(SessionRequest::PushToken(PushTokenRequest::Register(b)))
            }
            Body::UnregisterPushToken(b) => {
                Self::Session(SessionRequest::PushToken(PushTokenRequest::Unregister(b)))
            }
            Body::CreateInvite(b) => {
                Self::Session(SessionRequest::Invite(InviteRequest::Create(b)))
            }
            Body::ListInvites(b) => Self::Session(SessionRequest::Invite(InviteRequest::List(b))),
            Body::RevokeInvite(b) => {
                Self::Session(SessionRequest::Invite(InviteRequest::Revoke(b)))
            }
            Body::HelloOk(_)
            | Body::RegisterOk(_)
            | Body::LoginOk(_)
            | Body::Pong(_)
            | Body::Error(_)
            | Body::Kicked(_)
            | Body::Resumed(_)
            | Body::SendAck(_)
            | Body::Push(_)
            | Body::Receipt(_)
            | Body::SyncBatch(_)
            | Body::HistoryBatch(_)
            | Body::ConversationList(_)
            | Body::RecallOk(_)
            | Body::CursorOk(_)
            | Body::SyncNeeded(_)
            | Body::UserList(_)
            | Body::ProfileList(_)
            | Body::Profile(_)
            | Body::FriendOk(_)
            | Body::FriendList(_)
            | Body::FriendRequestList(_)
            | Body::BlockOk(_)
            | Body::BlockList(_)
            | Body::FriendEvent(_)
            | Body::Privacy(_)
            | Body::EmailCodeSent(_)
            | Body::ResetPasswordOk(_)
            | Body::ChangePasswordOk(_)
            | Body::LogoutOk(_)
            | Body::DeviceList(_)
            | Body::RevokeDeviceOk(_)
            | Body::SetPresenceOk(_)
            | Body::Presence(_)
            | Body::GroupCreated(_)
            | Body::Group(_)
            | Body::GroupOk(_)
            | Body::GroupMemberList(_)
            | Body::GroupList(_)
            | Body::GroupReadCountOk(_)
            | Body::GroupApplicationList(_)
            | Body::RoomJoined(_)
            | Body::RoomLeft(_)
            | Body::RoomSent(_)
            | Body::RoomMessage(_)
            | Body::PushTokenOk(_)
            | Body::InviteCreated(_)
            | Body::InviteList(_)
            | Body::RevokeInviteOk(_) => {
                return Err(RequestError::ServerOnly(ringchat_proto::body_name(&body)));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified() {
        let send = v1::Send::default();
        assert_eq!(
            ClientRequest::from_body(Some(Body::Send(send.clone()))),
            Ok(ClientRequest::Write(WriteRequest::Send(send)))
        );
        assert!(matches!(
            ClientRequest::from_body(Some(Body::Login(v1::Login::default()))),
            Ok(ClientRequest::Login(_))
        ));
        assert_eq!(
            ClientRequest::from_body(Some(Body::Push(v1::Push::default()))),
            Err(RequestError::ServerOnly("push"))
        );
        assert_eq!(ClientRequest::from_body(None), Err(RequestError::NoBody));
    }
}

//! The boundary between the gateway and the backend: typed requests in, encoded frames out.
//!
//! Invariant: the backend never touches a socket; the gateway never touches storage. Everything
//! that crosses is one of these types, over bounded channels. This module depends on the
//! protocol crate only, never on storage.

mod request;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use ringchat_proto::v1;
use ringchat_proto::{Body, Frame};
use tokio::sync::{mpsc, oneshot};

pub use crate::time::now_ms;
pub use request::{
    AccountRequest, AccountSessionRequest, ClientRequest, ContactQuery, ContactWrite, GroupQuery,
    GroupWrite, InviteRequest, PushTokenRequest, RequestError, RoomRequest, SessionRequest,
    WriteRequest,
};

/// A user's public id: 9 digits, never reused.
pub type UserId = u64;
/// Index of a gateway shard.
pub type ShardId = u16;
/// A connection's id on its shard; a closed connection's id comes back only after 2^24 more
/// connections on the shard.
pub type ConnId = u64;

/// A `ConnId` is a shard's slot in its low `CONN_SLOT_BITS` and a serial number above them, in
/// `CONN_ID_BITS` in all, so that a link can name a connection of another node with its shard
/// in one `u64` (`cluster::link::wire`).
pub const CONN_SLOT_BITS: u32 = 24;
pub const CONN_ID_BITS: u32 = 48;
/// Connections one shard can hold at most: `gateway.conns_per_shard_max` stays below it.
pub const CONN_SLOTS_MAX: usize = 1 << CONN_SLOT_BITS;

/// Names one connection anywhere in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRef {
    pub shard: ShardId,
    pub conn: ConnId,
}

/// What a logged-in connection is.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub user_id: UserId,
    /// The login's device: the shard keeps it for the connection's writes (a delivery ack's
    /// device cursor), so that they need no lookup in the sessions registry.
    pub device_id: std::sync::Arc<str>,
    /// The login's `Login.resume`, checked: the shard asks for it (`SessionRequest::Resume`)
    /// once it has sent the `LoginOk`, so that what it carries comes after it.
    pub resume: Option<v1::Resume>,
}

/// Outcome of a login: the reply body (`LoginOk` or `Error`) and, on success, the session.
#[derive(Debug)]
pub struct LoginReply {
    pub body: Body,
    pub session: Option<SessionInfo>,
}

/// Gateway -> backend.
#[derive(Debug)]
pub enum Request {
    /// Reply body: `RegisterOk` or `Error`.
    Register {
        peer: IpAddr,
        body: v1::Register,
        reply: oneshot::Sender<Body>,
    },
    /// Before login: e-mail codes, password reset. Reply body: the request's `…Ok` or `Error`.
    Account {
        peer: IpAddr,
        request: AccountRequest,
        reply: oneshot::Sender<Body>,
    },
    Login {
        conn: ConnRef,
        peer: IpAddr,
        body: v1::Login,
        reply: oneshot::Sender<LoginReply>,
    },
    /// A request of a logged-in session; the reply comes back as `ShardEvent::Frame`.
    Session {
        conn: ConnRef,
        user_id: UserId,
        request_id: u64,
        request: SessionRequest,
    },
    /// A logged-in connection has gone.
    Closed { conn: ConnRef, user_id: UserId },
}

/// One frame of a commit group for this shard's connections.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// For one connection.
    One(ConnId, Bytes),
    /// For each connection of a shared list (a group's online connections on this shard) but
    /// `except` (the sender's): the list is shared with the index, not copied per message.
    Shared {
        conns: Arc<Vec<ConnId>>,
        except: Option<ConnId>,
        frame: Bytes,
    },
}

/// Backend -> one shard. Frames are encoded once (length prefix included) and shared.
#[derive(Debug)]
pub enum ShardEvent {
    /// One encoded frame for one connection.
    Frame { conn: ConnId, frame: Bytes },
    /// One encoded frame for several connections of this shard.
    Fanout { conns: Vec<ConnId>, frame: Bytes },
    /// Encoded frames for connections of this shard, in order: what one commit group sends
    /// this shard.
    Frames(Vec<Outgoing>),
    /// Send `Kicked` and close.
    Kick {
        conn: ConnId,
        reason: v1::KickReason,
    },
    /// Stop accepting, kick every connection with `server_shutdown`, flush, and exit.
    Shutdown,
    /// The binary published new live settings for the shards (`PATCH /api/config`, SIGHUP):
    /// take them, then say so on `applied`, so that the change is in force before it is
    /// answered.
    Reconfigure {
        applied: std::sync::mpsc::SyncSender<ShardId>,
    },
}

pub type RequestSender = mpsc::Sender<Request>;
pub type ShardSender = mpsc::Sender<ShardEvent>;

/// Encodes a reply once for the shard.
pub fn encoded(request_id: u64, body: Body) -> Bytes {
    ringchat_proto::encode_to_bytes(&Frame {
        request_id,
        body: Some(body),
    })
}

/// Test support: every frame in a shard's event, decoded, with the connection it is for.
#[cfg(test)]
pub(crate) fn decoded_frames(event: ShardEvent) -> Vec<(u64, Body)> {
    let decode = |bytes: &[u8]| {
        (ringchat_proto::decode(&mut bytes.into(), 1 << 20).expect("a frame"))
            .expect("whole")
            .body
            .expect("a body")
    };
    match event {
        ShardEvent::Frame { conn, frame } => vec![(conn, decode(&frame))],
        ShardEvent::Fanout { conns, frame } => conns.iter().map(|c| (*c, decode(&frame))).collect(),
        ShardEvent::Frames(out) => out
            .into_iter()
            .flat_map(|o| match o {
                Outgoing::One(c, frame) => vec![(c, decode(&frame))],
                Outgoing::Shared {
                    conns,
                    except,
                    frame,
                } => (conns.iter().filter(|c| Some(**c) != except))
                    .map(|c| (*c, decode(&frame)))
                    .collect(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

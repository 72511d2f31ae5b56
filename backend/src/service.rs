//! The backend's front door: drains requests from all shards in batches and runs each service.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use tokio::sync::mpsc;

use crate::accounts::{Accounts, Refusal};
use crate::api::{ConnId, ConnRef, LoginReply, Request, SessionInfo, ShardEvent, ShardSender};
use crate::config::{DevicePolicy, PLATFORM_NAMES, Settings};
use crate::messaging::writer::{CursorKind, Outcome, WriteOp, Writer};
use crate::messaging::{reads, validate_send};
use crate::sessions::{OpenError, Session, Sessions};
use crate::store::{FjallStore, Store, StoreError, UserId, peer_of};
use crate::time::now_ms;

/// Requests taken from the queue in one go.
const REQUEST_BATCH_MAX: usize = 256;
/// Commit groups waiting for delivery.
const OUTCOME_GROUPS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("opening storage in {dir}: {source}")]
    Storage {
        dir: std::path::PathBuf,
        source: StoreError,
    },
    #[error("starting the commit thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The commit thread and the ends of its queues, until `serve` takes them.
struct Commit {
    ops: Option<mpsc::Sender<WriteOp>>,
    outcomes: Option<mpsc::Receiver<Vec<Outcome>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Backend {
    pub(crate) settings: Settings,
    pub(crate) store: Arc<FjallStore>,
    accounts: Accounts,
    pub(crate) sessions: Mutex<Sessions>,
    shards: Vec<ShardSender>,
    commit: Mutex<Commit>,
}

impl Backend {
    pub fn open(settings: Settings, shards: Vec<ShardSender>) -> Result<Arc<Self>, BackendError> {
        let store = FjallStore::open(&settings.storage.data_dir, settings.storage.durability)
            .map_err(|source| BackendError::Storage {
                dir: settings.storage.data_dir.clone(),
                source,
            })?;
        let store = Arc::new(store);
        let accounts = Accounts::new(
            Arc::clone(&store) as Arc<dyn Store>,
            settings.accounts.clone(),
            settings.login.clone(),
        );
        let replace_on = settings
            .login
            .policy
            .iter()
            .filter(|(_, policy)| **policy == DevicePolicy::Replace)
            .filter_map(|(name, _)| platform_by_name(name))
            .collect();
        let sessions = Mutex::new(Sessions::new(settings.login.devices_max, replace_on));
        let writer = Writer::new(
            Arc::clone(&store) as Arc<dyn Store>,
            settings.limits.recall_window_s.saturating_mul(1000),
            settings.storage.commit_group_max,
            settings.storage.dedup_filter_items,
        )
        .map_err(|source| BackendError::Storage {
            dir: settings.storage.data_dir.clone(),
            source,
        })?;
        let (ops_tx, ops_rx) = mpsc::channel(settings.storage.commit_group_max * 4);
        let (outcomes_tx, outcomes_rx) = mpsc::channel(OUTCOME_GROUPS_MAX);
        let cores = settings.backend.cores.clone();
        let thread = std::thread::Builder::new()
            .name("ringchat-commit".into())
            .spawn(move || {
                if let Some(&core) = cores.first() {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                }
                writer.run(ops_rx, outcomes_tx);
            })?;
        Ok(Arc::new(Self {
            settings,
            store,
            accounts,
            sessions,
            shards,
            commit: Mutex::new(Commit {
                ops: Some(ops_tx),
                outcomes: Some(outcomes_rx),
                thread: Some(thread),
            }),
        }))
    }

    /// Serves requests until `stop` resolves (the shards have stopped) or every sender is gone.
    pub async fn serve(
        self: Arc<Self>,
        mut requests: mpsc::Receiver<Request>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let (writer, outcomes) = {
            let mut commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            (commit.ops.take(), commit.outcomes.take())
        };
        let (Some(writer), Some(outcomes)) = (writer, outcomes) else {
            tracing::error!("serve called twice");
            return;
        };
        let this = Arc::clone(&self);
        tokio::spawn(async move { this.deliver(outcomes).await });
        let mut batch = Vec::with_capacity(REQUEST_BATCH_MAX);
        let mut stop = std::pin::pin!(stop);
        loop {
            let received = tokio::select! {
                n = requests.recv_many(&mut batch, REQUEST_BATCH_MAX) => n,
                () = &mut stop => break,
            };
            if received == 0 {
                break;
            }
            for request in batch.drain(..) {
                self.handle(request, &writer).await;
            }
        }
        // Dropping the last sender lets the commit thread finish its queue and stop.
        drop(writer);
        tracing::info!("backend stopped serving requests");
    }

    /// Waits for the commit thread to make everything queued durable. Call after `serve` ends.
    pub async fn finish(&self) {
        let thread = self
            .commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .thread
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn handle(self: &Arc<Self>, request: Request, writer: &mpsc::Sender<WriteOp>) {
        match request {
            Request::Register { body, reply, .. } => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let body = match this.accounts.register(body).await {
                        Ok(ok) => Body::RegisterOk(ok),
                        Err(refusal) => Body::Error(refusal.into_error()),
                    };
                    // The connection may have gone meanwhile; nothing to do then.
                    let _ = reply.send(body);
                });
            }
            Request::Login {
                conn,
                peer,
                body,
                reply,
            } => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = this.login(conn, peer, body).await;
                    let session = outcome.session.clone();
                    if reply.send(outcome).is_err()
                        && let Some(session) = session
                    {
                        this.lock_sessions().close(session.user_id, conn);
                    }
                });
            }
            Request::Session {
                conn,
                user_id,
                request_id,
                body,
            } => {
                self.session(writer, conn, user_id, request_id, body).await;
            }
            Request::Closed { conn, user_id } => self.lock_sessions().close(user_id, conn),
        }
    }

    async fn session(
        self: &Arc<Self>,
        writer: &mpsc::Sender<WriteOp>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        body: Body,
    ) {
        let op = match body {
            Body::Send(send) => {
                if let Err(refusal) =
                    validate_send(user, &send, self.settings.limits.message_bytes_max)
                {
                    self.refuse(conn, request_id, refusal).await;
                    return;
                }
                WriteOp::Send {
                    conn,
                    request_id,
                    from: user,
                    to: send.to_user_id,
                    client_msg_id: send.client_msg_id,
                    content_type: send.content_type,
                    content: send.content,
                }
            }
            Body::DeliveryAck(ack) => WriteOp::Cursor {
                conn,
                request_id,
                user,
                device_id: self
                    .lock_sessions()
                    .device_of(user, conn)
                    .unwrap_or_default()
                    .to_owned(),
                conv: ack.conversation_id,
                kind: CursorKind::Delivered,
                seq: ack.seq,
            },
            Body::Read(read) => WriteOp::Cursor {
                conn,
                request_id,
                user,
                device_id: String::new(),
                conv: read.conversation_id,
                kind: CursorKind::Read,
                seq: read.seq,
            },
            Body::Recall(recall) => WriteOp::Recall {
                conn,
                request_id,
                user,
                conv: recall.conversation_id,
                seq: recall.seq,
            },
            Body::Typing(typing) => {
                self.relay_typing(conn, user, request_id, typing).await;
                return;
            }
            body @ (Body::Sync(_) | Body::History(_) | Body::Conversations(_)) => {
                self.spawn_read(conn, user, request_id, body);
                return;
            }
            other => {
                let name = ringchat_proto::body_name(&other);
                let refusal = Refusal::new(
                    ErrorCode::UnexpectedBody,
                    format!("{name} is not a request"),
                );
                self.refuse(conn, request_id, refusal).await;
                return;
            }
        };
        if writer.send(op).await.is_err() {
            let refusal = Refusal::new(ErrorCode::Unavailable, "server is shutting down");
            self.refuse(conn, request_id, refusal).await;
        }
    }

    fn spawn_read(self: &Arc<Self>, conn: ConnRef, user: UserId, request_id: u64, body: Body) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let store = Arc::clone(&this.store);
            let page_max = this.settings.limits.sync_page_max;
            let answer = tokio::task::spawn_blocking(move || {
                let store: &dyn Store = store.as_ref();
                match body {
                    Body::Sync(req) => {
                        reads::sync(store, user, &req, page_max).map(Body::SyncBatch)
                    }
                    Body::History(req) => {
                        reads::history(store, user, &req, page_max).map(Body::HistoryBatch)
                    }
                    _ => reads::conversations(store, user).map(Body::ConversationList),
                }
            })
            .await;
            let body = match answer {
                Ok(Ok(body)) => body,
                Ok(Err(refusal)) => Body::Error(refusal.into_error()),
                Err(join) => Body::Error(Refusal::unavailable(join).into_error()),
            };
            this.reply(conn, request_id, body).await;
        });
    }

    /// Typing is relayed to the peer's sessions and never stored; it has no reply.
    async fn relay_typing(&self, conn: ConnRef, user: UserId, request_id: u64, typing: v1::Typing) {
        let Some(peer) = peer_of(typing.conversation_id, user) else {
            let refusal = Refusal::new(ErrorCode::NotFound, "no such conversation");
            self.refuse(conn, request_id, refusal).await;
            return;
        };
        let frame = crate::api::encoded(
            0,
            Body::Typing(v1::Typing {
                conversation_id: typing.conversation_id,
                from_user_id: user,
            }),
        );
        let targets = self.sessions_of(&[peer], None);
        self.fanout(targets, frame).await;
    }

    async fn refuse(&self, conn: ConnRef, request_id: u64, refusal: Refusal) {
        self.reply(conn, request_id, Body::Error(refusal.into_error()))
            .await;
    }

    /// Every session of these users, but `except`.
    pub(crate) fn sessions_of(&self, users: &[UserId], except: Option<ConnRef>) -> Vec<ConnRef> {
        let sessions = self.lock_sessions();
        let mut out = Vec::new();
        for (i, user) in users.iter().enumerate() {
            if users[..i].contains(user) {
                continue;
            }
            out.extend(
                sessions
                    .of_user(*user)
                    .iter()
                    .map(|s| s.conn)
                    .filter(|c| Some(*c) != except),
            );
        }
        out
    }

    /// Sends one encoded frame to many connections: one event per shard.
    pub(crate) async fn fanout(&self, targets: Vec<ConnRef>, frame: Bytes) {
        match targets.as_slice() {
            [] => {}
            [one] => {
                let event = ShardEvent::Frame {
                    conn: one.conn,
                    frame,
                };
                self.send_to_shard(one.shard, event).await;
            }
            _ => {
                let mut per_shard: Vec<Vec<ConnId>> = vec![Vec::new(); self.shards.len()];
                for t in &targets {
                    if let Some(list) = per_shard.get_mut(usize::from(t.shard)) {
                        list.push(t.conn);
                    }
                }
                for (shard, conns) in per_shard.into_iter().enumerate() {
                    if conns.is_empty() {
                        continue;
                    }
                    let event = ShardEvent::Fanout {
                        conns,
                        frame: frame.clone(),
                    };
                    // Shard ids fit u16: they were made from u16 in the first place.
                    self.send_to_shard(shard as u16, event).await;
                }
            }
        }
    }

    async fn login(&self, conn: ConnRef, peer: std::net::IpAddr, body: v1::Login) -> LoginReply {
        let refused = |r: Refusal| LoginReply {
            body: Body::Error(r.into_error()),
            session: None,
        };
        let auth = match self.accounts.authenticate(peer, &body).await {
            Ok(auth) => auth,
            Err(refusal) => return refused(refusal),
        };
        let platform = v1::Platform::try_from(body.platform).unwrap_or(v1::Platform::Unspecified);
        let session = Session {
            conn,
            device_id: body.device_id.clone(),
            platform,
        };
        let replaced = match self.lock_sessions().open(auth.user_id, session) {
            Ok(replaced) => replaced,
            Err(OpenError::TooManyDevices { devices_max }) => {
                return refused(Refusal::new(
                    ErrorCode::TooManyDevices,
                    format!("already logged in on {devices_max} devices"),
                ));
            }
        };
        for old in replaced {
            self.send_to_shard(
                old.shard,
                ShardEvent::Kick {
                    conn: old.conn,
                    reason: KickReason::Replaced,
                },
            )
            .await;
        }
        LoginReply {
            body: Body::LoginOk(v1::LoginOk {
                user_id: auth.user_id,
                token: auth.token,
                token_expires_at_ms: auth.token_expires_at_ms,
                server_time_ms: now_ms(),
            }),
            session: Some(SessionInfo {
                user_id: auth.user_id,
                device_id: body.device_id,
                platform,
            }),
        }
    }

    pub(crate) fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn reply(&self, conn: ConnRef, request_id: u64, body: Body) {
        let frame = crate::api::encoded(request_id, body);
        self.send_to_shard(
            conn.shard,
            ShardEvent::Frame {
                conn: conn.conn,
                frame,
            },
        )
        .await;
    }

    pub(crate) async fn send_to_shard(&self, shard: u16, event: ShardEvent) {
        if let Some(tx) = self.shards.get(usize::from(shard)) {
            // A shard that has stopped (shutdown) takes nothing more; its clients resync later.
            let _ = tx.send(event).await;
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Makes every committed write durable; called once more at shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.persist()
    }
}

pub fn platform_by_name(name: &str) -> Option<v1::Platform> {
    let index = PLATFORM_NAMES.iter().position(|n| *n == name)?;
    v1::Platform::try_from(i32::try_from(index).ok()?).ok()
}

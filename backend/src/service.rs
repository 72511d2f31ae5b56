//! The backend's front door: drains requests from all shards in batches and runs each service.

use std::sync::{Arc, Mutex};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use tokio::sync::mpsc;

use crate::accounts::{Accounts, Refusal};
use crate::api::{ConnRef, LoginReply, Request, SessionInfo, ShardEvent, ShardSender};
use crate::config::{DevicePolicy, PLATFORM_NAMES, Settings};
use crate::messaging::writer::RowPolicy;
use crate::messaging::writer::{Committed, WriteOp, Writer};
use crate::sessions::{OpenError, Session, Sessions};
use crate::store::{FjallStore, Ports, StoreError, StoreHealth};
use crate::time::now_ms;

/// Requests taken from the queue in one go.
const REQUEST_BATCH_MAX: usize = 256;
/// Sync, history and conversation-list reads running at once, at most.
const READS_IN_FLIGHT_MAX: usize = 64;
/// Time the refusals of a failed commit get to reach the shards before the server stops.
const STORE_FAILURE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Commit groups waiting for delivery.
const OUTCOME_GROUPS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("opening storage in {dir}: {source}")]
    Storage {
        dir: std::path::PathBuf,
        source: StoreError,
    },
    /// Another ringchat has the data dir open.
    #[error("data dir in use by another ringchat: {}", .0.display())]
    DirInUse(std::path::PathBuf),
    #[error("starting the commit thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The commit thread and the ends of its queues, until `serve` takes them.
struct Commit {
    ops: Option<mpsc::Sender<WriteOp>>,
    outcomes: Option<mpsc::Receiver<Committed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Backend {
    pub(crate) settings: Settings,
    pub(crate) ports: Ports,
    /// Whether the store still takes writes.
    pub(crate) health: Arc<StoreHealth>,
    accounts: Accounts,
    pub(crate) sessions: Mutex<Sessions>,
    pub(crate) shards: Vec<ShardSender>,
    commit: Mutex<Commit>,
    /// Permits for sync, history and conversation-list reads in flight.
    pub(crate) reads: Arc<tokio::sync::Semaphore>,
}

impl Backend {
    pub fn open(settings: Settings, shards: Vec<ShardSender>) -> Result<Arc<Self>, BackendError> {
        let store = FjallStore::open(&settings.storage.data_dir, settings.storage.durability)
            .map_err(|source| match source {
                StoreError::DirInUse(dir) => BackendError::DirInUse(dir),
                source => BackendError::Storage {
                    dir: settings.storage.data_dir.clone(),
                    source,
                },
            })?;
        let ports = Ports::with_tail_cache(Arc::new(store), settings.storage.tail_cache_bytes);
        let accounts = Accounts::new(
            Arc::clone(&ports.accounts),
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
            &ports,
            settings.limits.recall_window_s.saturating_mul(1000),
            settings.storage.commit_group_max,
            RowPolicy {
                dedup_window: settings.storage.dedup_window_messages,
                device_cursor_ttl_ms: settings
                    .storage
                    .device_cursor_ttl_days
                    .saturating_mul(24 * 3600 * 1000),
            },
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
            health: ports.engine.health(),
            ports,
            accounts,
            sessions,
            shards,
            reads: Arc::new(tokio::sync::Semaphore::new(READS_IN_FLIGHT_MAX)),
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
                request,
            } => {
                self.session(writer, conn, user_id, request_id, request)
                    .await;
            }
            Request::Closed { conn, user_id } => self.lock_sessions().close(user_id, conn),
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
            device_id: body.device_id.as_str().into(),
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

    /// Resolves once the store has stopped taking writes (a full disk, an I/O error), with the
    /// reason. The server then stops, so that its supervisor restarts it once the cause is gone.
    pub async fn store_failed(&self) -> String {
        self.health.failed(STORE_FAILURE_GRACE).await
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Makes every committed write durable; called once more at shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.ports.engine.flush()
    }
}

pub(crate) fn platform_by_name(name: &str) -> Option<v1::Platform> {
    let index = PLATFORM_NAMES.iter().position(|n| *n == name)?;
    v1::Platform::try_from(i32::try_from(index).ok()?).ok()
}

//! The backend's front door: drains requests from all shards in batches and runs each service.

use std::sync::{Arc, Mutex};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use tokio::sync::mpsc;

use crate::accounts::{Accounts, Refusal};
use crate::api::{ConnRef, LoginReply, Request, SessionInfo, ShardEvent, ShardSender};
use crate::config::{PLATFORM_NAMES, Settings};
use crate::sessions::{OpenError, Session, Sessions};
use crate::store::{FjallStore, Store, StoreError};
use crate::time::now_ms;

/// Requests taken from the queue in one go.
const REQUEST_BATCH_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("opening storage in {dir}: {source}")]
    Storage {
        dir: std::path::PathBuf,
        source: StoreError,
    },
}

pub struct Backend {
    pub(crate) settings: Settings,
    pub(crate) store: Arc<FjallStore>,
    accounts: Accounts,
    pub(crate) sessions: Mutex<Sessions>,
    shards: Vec<ShardSender>,
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
            .replace_on_platforms
            .iter()
            .filter_map(|name| platform_by_name(name))
            .collect();
        let sessions = Mutex::new(Sessions::new(settings.login.devices_max, replace_on));
        Ok(Arc::new(Self {
            settings,
            store,
            accounts,
            sessions,
            shards,
        }))
    }

    /// Serves requests until `stop` resolves (the shards have stopped) or every sender is gone.
    pub async fn serve(
        self: Arc<Self>,
        mut requests: mpsc::Receiver<Request>,
        stop: impl std::future::Future<Output = ()>,
    ) {
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
                self.handle(request).await;
            }
        }
        tracing::info!("backend stopped serving requests");
    }

    async fn handle(self: &Arc<Self>, request: Request) {
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
                request_id,
                body,
                ..
            } => {
                let error = Refusal::new(
                    ErrorCode::UnexpectedBody,
                    format!("{} is not served yet", ringchat_proto::body_name(&body)),
                );
                self.reply(conn, request_id, Body::Error(error.into_error()))
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

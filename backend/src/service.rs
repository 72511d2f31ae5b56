//! The backend's front door: drains requests from all shards in batches and runs each service.

use std::sync::{Arc, Mutex};

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};
use tokio::sync::mpsc;

use crate::accounts::{Accounts, Refusal};
use crate::api::{ConnRef, LoginReply, Request, SessionInfo, ShardEvent, ShardSender};
use crate::config::{DevicePolicy, PLATFORM_NAMES, Settings};
use crate::contacts::Contacts;
use crate::groups::online::GroupOnline;
use crate::login_queue::{LoginQueue, QueuedLogin};
use crate::messaging::Writes;
use crate::messaging::delivery::{Delivery, ToDeliver};
use crate::messaging::writer::{RowPolicy, WriteOp, Writer};
use crate::presence::{DeviceState, LocalPresence, Tracker};
use crate::read_gate::{ReadGate, Ticket};
use crate::rooms::Rooms;
use crate::sessions::{Session, Sessions, SharedSessions};
use crate::store::{Ports, StoreError, StoreHealth};
use crate::time::now_ms;

/// Requests taken from the queue in one go.
const REQUEST_BATCH_MAX: usize = 256;
/// Reads waiting for one of those slots, at most; past that: `UNAVAILABLE`, retry.
const READS_WAITING_MAX: usize = 16_384;
/// Sync, history, contacts and account reads running at once, at most.
const READS_IN_FLIGHT_MAX: usize = 64;
/// Reads one connection has waiting or running, at most; past that: `RATE_LIMITED`. A client
/// pages one list at a time; a quarter of the slots leaves room for everyone else.
const READS_PER_CONN_MAX: u32 = 16;
/// Password changes hashing or waiting for the hasher at once, at most (one per connection);
/// past that: `UNAVAILABLE`, retry. A rare request: the bound is for a client that floods it.
const PASSWORD_CHANGES_IN_FLIGHT_MAX: usize = 2;
const PASSWORD_CHANGES_WAITING_MAX: usize = 64;
/// Profile updates writing at once, at most (each is a durable write of its own: fjall's
/// write lock and an fsync), and waiting for that; past that: `UNAVAILABLE`, retry. Each
/// user's are counted against `contacts.profile_updates_per_min_max` before they queue.
const PROFILE_UPDATES_IN_FLIGHT_MAX: usize = 2;
const PROFILE_UPDATES_WAITING_MAX: usize = 256;
/// Profile updates one connection has waiting or writing, at most; past that: `RATE_LIMITED`.
const PROFILE_UPDATES_PER_CONN_MAX: u32 = 2;
/// Time the refusals of a failed commit get to reach the shards before the server stops.
const STORE_FAILURE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Commit groups waiting for the delivery task.
const OUTCOME_GROUPS_MAX: usize = 64;
/// What `finish` waits for at most, step by step; `Backend::FINISH_MAX` is their sum.
/// Devices' last-seen times (a lost batch is refreshed at their next login).
const SEEN_FLUSH_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// The audit log's queue, into the store.
const AUDIT_FLUSH_MAX: std::time::Duration = std::time::Duration::from_secs(10);
/// The commit thread making what was queued durable.
const COMMIT_FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The activity counts' file.
const ACTIVITY_PERSIST_MAX: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// `[email]`: a template or the relay's settings.
    #[error("{0}")]
    Email(String),
    /// `[files]`: the storage of files could not be opened.
    #[error("opening file storage: {0}")]
    Files(String),
    #[error("opening the activity counts in {dir}: {source}")]
    Activity {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `[cluster]`: a node with more shards than a link can name.
    #[error("{0}")]
    Cluster(String),
    /// `[backup] dir` cannot be written.
    #[error(
        "backup.dir: {0}: the server could write no backup there (under systemd's ProtectSystem=strict, add the dir to ReadWritePaths= in a drop-in: deploy/README)"
    )]
    Backup(crate::backup::BackupError),
}

/// The commit thread and the ends of its queues. The shards hold clones of `ops` (`Writes`);
/// `finish` drops this one, and the thread stops once the shards' are gone too.
struct Commit {
    ops: Option<mpsc::Sender<WriteOp>>,
    /// Taken by `serve`, which runs the delivery task.
    to_deliver: Option<mpsc::Receiver<ToDeliver>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Backend {
    pub(crate) settings: Settings,
    pub(crate) ports: Ports,
    /// Whether the store still takes writes.
    pub(crate) health: Arc<StoreHealth>,
    pub(crate) accounts: Accounts,
    pub(crate) sessions: SharedSessions,
    pub(crate) shards: Vec<ShardSender>,
    pub(crate) delivery: Arc<Delivery>,
    /// Who of each group is online (maintained on login, close and membership changes).
    pub(crate) group_online: Arc<GroupOnline>,
    /// Who is shown present to their friends, and when friends are told.
    pub(crate) presence: Tracker,
    commit: Mutex<Commit>,
    /// Sync, history, contacts and account reads: in flight and waiting, bounded.
    pub(crate) reads: ReadGate,
    /// Password changes (each waits for the argon2 hasher): a gate of their own, so that they
    /// never hold the read slots while they wait.
    pub(crate) password_changes: ReadGate,
    /// Profile updates (durable writes): a gate of their own, so that a user pipelining them
    /// never holds the read slots.
    pub(crate) profile_updates: ReadGate,
    /// Logins, apart from the request loop and bounded (`login_queue.rs`).
    pub(crate) logins: LoginQueue,
    /// Backups this server writes (`backup/server.rs`).
    pub(crate) backups: Arc<crate::backup::server::Backups>,
    pub(crate) contacts: Contacts,
    /// Ephemeral chat rooms, in memory only (shared with the cluster link, which hands them
    /// the room items of other nodes).
    pub(crate) rooms: Arc<Rooms>,
    /// Admin actions and users' security events (`audit.rs`).
    pub(crate) audit: Arc<crate::audit::Audit>,
    /// Operators waiting for their sequencer writes (`messaging/operator.rs`).
    pub(crate) operator_replies: Arc<crate::messaging::operator::OperatorReplies>,
    /// Operators' system notifications and their jobs (`notifications/`).
    pub(crate) notifications: Arc<crate::notifications::Notifications>,
    /// Offline push, when `[push] url` is set (`push/`).
    pub(crate) push: Option<crate::push::Push>,
    /// The live keys, as `reconfigure` last set them (`live.rs`).
    pub(crate) live: Arc<crate::live::LiveSettings>,
    /// Counts, latencies and users' activity for the admin overview (`observe/`).
    pub(crate) observe: Arc<crate::observe::Observe>,
    /// Cluster mode: where this node's sessions are published (`cluster/hooks.rs`).
    pub(crate) routes: std::sync::OnceLock<Arc<crate::cluster::Routes>>,
    /// Cluster mode: presence shared through Redis (`cluster/presence/`).
    pub(crate) cluster_presence: std::sync::OnceLock<Arc<crate::cluster::ClusterPresence>>,
    /// Cluster mode: the catch-up checks after logins (`cluster/login_check.rs`), from the
    /// first login on.
    pub(crate) login_checks: std::sync::OnceLock<crate::cluster::login_check::LoginChecks>,
    /// Cluster mode: the links to the other nodes.
    pub(crate) link: Option<Arc<crate::cluster::link::Link>>,
    /// Uploads and downloads over HTTP, when `[files] enabled` (`files/`).
    pub(crate) files: Option<Arc<crate::files::FileService>>,
    /// Media messages' check and downloads through messages, with `files` (`files/media.rs`).
    media: Option<Arc<crate::files::media::Media>>,
}

impl Backend {
    pub fn open(settings: Settings, shards: Vec<ShardSender>) -> Result<Arc<Self>, BackendError> {
        crate::retry_after::configure(settings.storage.unavailable_retry_after_ms);
        let ports = crate::store::open(&settings.storage).map_err(|source| match source {
            StoreError::DirInUse(dir) => BackendError::DirInUse(dir),
            source => BackendError::Storage {
                dir: settings.storage.data_dir.clone(),
                source,
            },
        })?;
        let audit = Arc::new(crate::audit::Audit::new(Arc::clone(&ports.audit)));
        let live = Arc::new(crate::live::LiveSettings::new(settings.clone()));
        let replace_on = settings
            .login
            .policy
            .iter()
            .filter(|(_, policy)| **policy == DevicePolicy::Replace)
            .filter_map(|(name, _)| platform_by_name(name))
            .collect();
        let sessions = SharedSessions::new(Sessions::new(settings.login.devices_max, replace_on));
        let accounts = Accounts::new(
            Arc::clone(&ports.accounts),
            Arc::clone(&ports.account_admin),
            &settings,
            Arc::clone(&live),
            Arc::clone(&audit),
            sessions.clone(),
        )
        .map_err(BackendError::Email)?;
        let mut writer = Writer::new(
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
            settings.contacts.limits(),
            settings.groups.clone(),
        )
        .map_err(|source| BackendError::Storage {
            dir: settings.storage.data_dir.clone(),
            source,
        })?;
        writer.set_commit_delay(
            std::time::Duration::from_micros(settings.storage.commit_delay_us),
            settings.storage.commit_delay_min_ops,
        );
        // Cluster mode: conversations are claimed and every commit group fenced.
        let mut writer = if settings.cluster.enabled {
            writer.with_ownership(
                crate::cluster::rendezvous::node_number(&settings.cluster.node_id),
                Arc::clone(&ports.owners),
                settings.cluster.id_block_size,
            )?
        } else {
            writer
        };
        // The shards queue writes here directly: the same bound as the backend's request queue,
        // so that a sequencer waiting on an fsync does not make every sender wait for room
        // (each wait is a cross-thread wake-up per write).
        let (ops_tx, ops_rx) = mpsc::channel(
            settings
                .backend
                .queue_requests_max
                .max(settings.storage.commit_group_max),
        );
        let (deliver_tx, deliver_rx) = mpsc::channel(OUTCOME_GROUPS_MAX);
        let health = ports.engine.health();
        let group_online = Arc::new(GroupOnline::new(shards.len()));
        let push = crate::push::Push::new(&settings.push);
        let observe = Arc::new(crate::observe::Observe::open(&settings)?);
        // Cluster mode: the links to the other nodes (forwarded writes, cross-node delivery).
        let link = match settings.cluster.enabled {
            true => Some(
                crate::cluster::link::Link::new(
                    &settings.cluster,
                    shards.clone(),
                    sessions.clone(),
                    Arc::clone(&group_online),
                    settings.groups.typing_members_max as usize,
                    settings.limits.frame_bytes_max,
                )
                .map_err(BackendError::Cluster)?,
            ),
            false => None,
        };
        if let Some(link) = &link {
            writer.set_claim_gate(Arc::clone(link));
            link.set_kick_stores(crate::cluster::link::KickStores {
                accounts: Arc::clone(&ports.accounts),
                admin: Arc::clone(&ports.account_admin),
            });
        }
        let delivery = Arc::new(
            Delivery::new(
                sessions.clone(),
                Arc::clone(&group_online),
                shards.clone(),
                Arc::clone(&health),
                push.as_ref().map(|p| Arc::clone(&p.queue)),
                Arc::clone(&observe),
            )
            .with_link(link.clone()),
        );
        if link.is_some() {
            // Other nodes' membership changes can be lost on the way: the index is re-read,
            // and installed as a login's read is (once delivery has routed what it saw).
            group_online.set_repair_source(
                Arc::clone(&ports.groups),
                settings.groups.per_user_max as usize,
                Arc::clone(&delivery.in_flight),
                settings.backend.blocking_threads_max,
            );
        }
        let cores = settings.backend.cores.clone();
        let sequencer_delivery = Arc::clone(&delivery);
        let thread = std::thread::Builder::new()
            .name(crate::threads::COMMIT.into())
            .spawn(move || {
                if let Some(&core) = cores.first() {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                }
                writer.run(ops_rx, &sequencer_delivery, deliver_tx);
            })?;
        let files = if settings.files.enabled {
            let files = crate::files::open(&settings.files, &settings.storage.data_dir)
                .map_err(|e| BackendError::Files(e.to_string()))?;
            Some(files)
        } else {
            None
        };
        let media = match &files {
            Some(files) => {
                use crate::files::media::{Media, MessageAccess};
                let messages = Arc::new(MessageAccess::new(ports.clone()));
                files
                    .set_download_access(Arc::clone(&messages) as _)
                    .map_err(|e| BackendError::Files(e.to_string()))?;
                files
                    .set_message_refs(Arc::clone(&messages) as _)
                    .map_err(|e| BackendError::Files(e.to_string()))?;
                Some(Arc::new(Media::new(
                    Arc::clone(files),
                    messages,
                    settings.limits.message_bytes_max,
                )))
            }
            None => None,
        };
        let backups = Arc::new(crate::backup::server::Backups::new(
            settings.backup.clone(),
            &settings.storage.data_dir,
            files.as_ref().map(|f| (&settings.files, Arc::clone(f))),
        ));
        backups.check_at_start().map_err(BackendError::Backup)?;
        let (logins_waiting_max, logins_in_flight_max) = (
            settings.backend.queue_requests_max,
            settings.backend.logins_in_flight_max,
        );
        // Cluster mode: rooms span the nodes; the link hands them the room items peers send.
        let rooms = Arc::new(Rooms::new(
            settings.rooms.clone(),
            link.as_ref()
                .map(|link| {
                    crate::rooms::cluster::ClusterRooms::new(
                        Arc::clone(link),
                        shards.clone(),
                        &settings.rooms,
                        settings.cluster.nodes_max,
                        settings.cluster.forward_timeout_ms,
                    )
                })
                .transpose()
                .map_err(BackendError::Cluster)?,
        ));
        if let Some(link) = &link {
            link.set_rooms(Arc::downgrade(&rooms));
        }
        Ok(Arc::new(Self {
            link,
            files,
            media,
            operator_replies: delivery.operator_replies(),
            contacts: Contacts::new(settings.contacts.clone()),
            rooms,
            audit,
            notifications: Arc::new(crate::notifications::Notifications::new(
                settings.notifications.clone(),
            )),
            push,
            live,
            observe,
            routes: std::sync::OnceLock::new(),
            cluster_presence: std::sync::OnceLock::new(),
            login_checks: std::sync::OnceLock::new(),
            presence: Tracker::new(
                Arc::new(LocalPresence::default()),
                settings.presence.quiet_period_ms,
            ),
            settings,
            health,
            ports,
            accounts,
            sessions,
            shards,
            delivery,
            group_online,
            reads: ReadGate::new(READS_IN_FLIGHT_MAX, READS_WAITING_MAX, READS_PER_CONN_MAX),
            password_changes: ReadGate::new(
                PASSWORD_CHANGES_IN_FLIGHT_MAX,
                PASSWORD_CHANGES_WAITING_MAX,
                1,
            ),
            profile_updates: ReadGate::new(
                PROFILE_UPDATES_IN_FLIGHT_MAX,
                PROFILE_UPDATES_WAITING_MAX,
                PROFILE_UPDATES_PER_CONN_MAX,
            ),
            logins: LoginQueue::new(logins_waiting_max, logins_in_flight_max),
            backups,
            commit: Mutex::new(Commit {
                ops: Some(ops_tx),
                to_deliver: Some(deliver_rx),
                thread: Some(thread),
            }),
        }))
    }

    /// The sequencer's queue, for operators' writes; `None` once `finish` has run.
    pub(crate) fn commit_ops(&self) -> Option<mpsc::Sender<WriteOp>> {
        let commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        commit.ops.clone()
    }

    /// The shards' direct line to the sequencer, for their logged-in clients' writes. `None`
    /// once `finish` has run.
    pub fn writes(&self) -> Option<Writes> {
        let commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let ops = commit.ops.clone()?;
        Some(
            Writes::new(
                ops,
                self.settings.limits.message_bytes_max,
                self.settings.contacts.friend_request_message_bytes_max,
                Arc::new(self.settings.groups.clone()),
            )
            .with_link(self.link.clone())
            .with_media(self.media.clone()),
        )
    }

    /// The `/files` routes for the client listeners (`files/http.rs`); `None` when
    /// `[files] enabled = false`. Tokens are checked as the token login checks them.
    pub fn files_router(self: &Arc<Self>) -> Option<axum::Router> {
        let files = Arc::clone(self.files.as_ref()?);
        let auth = Arc::new(TokenAuth(Arc::clone(self)));
        Some(crate::files::http::router(files, auth))
    }

    /// The files service, when `[files] enabled`.
    pub fn files(&self) -> Option<&Arc<crate::files::FileService>> {
        self.files.as_ref()
    }

    /// Cluster mode: this node's links to the others (`cluster/link/`).
    pub fn link(&self) -> Option<Arc<crate::cluster::link::Link>> {
        self.link.clone()
    }

    /// The sequencer's queue, for the backend's own writes (notifications); `None` once
    /// `finish` has run. Hold it only while queueing: a held clone keeps the sequencer up.
    pub(crate) fn sequencer(&self) -> Option<mpsc::Sender<WriteOp>> {
        self.commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ops
            .clone()
    }

    /// Serves requests until `stop` resolves (the shards have stopped) or every sender is gone.
    pub async fn serve(
        self: Arc<Self>,
        mut requests: mpsc::Receiver<Request>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let to_deliver = self
            .commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_deliver
            .take();
        let Some(to_deliver) = to_deliver else {
            tracing::error!("serve called twice");
            return;
        };
        let delivery = Arc::clone(&self.delivery);
        tokio::spawn(async move { delivery.run(to_deliver).await });
        self.audit.start();
        LoginQueue::start(&self);
        self.audit
            .start_retention(self.settings.admin.audit_retention_days);
        let this = Arc::clone(&self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::accounts::SEEN_FLUSH_INTERVAL).await;
                this.accounts.flush_seen().await;
            }
        });
        tokio::spawn(Arc::clone(&self).run_presence_timer());
        tokio::spawn(Arc::clone(&self).run_token_expiry());
        if let Some(presence) = self.cluster_presence.get() {
            tokio::spawn(Arc::clone(&self).run_presence_elsewhere(Arc::clone(presence)));
        }
        crate::push::start(&self);
        crate::backup::server::start(&self.backups, Arc::clone(&self.ports.engine));
        tokio::spawn(crate::observe::persist_activity(Arc::clone(&self.observe)));
        if self.rooms.cluster().is_some() {
            tokio::spawn(Arc::clone(&self.rooms).watch_view());
        }
        if let Some(files) = &self.files {
            files.start_cleanup();
            files.start_gc();
        }
        if let Some(media) = &self.media {
            media.serve_on(tokio::runtime::Handle::current());
        }
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

    /// The longest `finish` takes: the sum of its steps' bounds, which a graceful stop's
    /// budget counts (the gateway's `server::graceful_stop_max`).
    pub const FINISH_MAX: std::time::Duration = SEEN_FLUSH_MAX
        .saturating_add(AUDIT_FLUSH_MAX)
        .saturating_add(COMMIT_FINISH_TIMEOUT)
        .saturating_add(ACTIVITY_PERSIST_MAX);

    /// Waits for the commit thread to make everything queued durable. Call after the shards
    /// (which hold `Writes`) have stopped and `serve` has ended. Each step is bounded
    /// ([`Self::FINISH_MAX`] in all).
    pub async fn finish(&self) {
        if tokio::time::timeout(SEEN_FLUSH_MAX, self.accounts.flush_seen())
            .await
            .is_err()
        {
            tracing::warn!("devices' last-seen times were not stored in time");
        }
        // `flush` starts the writer if `serve` never ran (tools, test harnesses), so their
        // entries are stored too rather than waited for until the timeout.
        if tokio::time::timeout(AUDIT_FLUSH_MAX, self.audit.flush())
            .await
            .is_err()
        {
            tracing::warn!("the audit log did not drain in time");
        }
        let thread = {
            let mut commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            // With the shards' handles gone, this was the last sender: the thread finishes
            // its queue and stops.
            commit.ops = None;
            commit.thread.take()
        };
        if let Some(thread) = thread {
            let joined = tokio::time::timeout(
                COMMIT_FINISH_TIMEOUT,
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            if joined.is_err() {
                tracing::warn!(
                    "the commit thread did not stop in time (a shard still holds its queue)"
                );
            }
        }
        let observe = Arc::clone(&self.observe);
        let persist = tokio::task::spawn_blocking(move || observe.activity.persist());
        match tokio::time::timeout(ACTIVITY_PERSIST_MAX, persist).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(%err, "writing the activity counts"),
            Ok(Err(err)) => tracing::warn!(%err, "writing the activity counts"),
            Err(_) => tracing::warn!("the activity counts were not written in time"),
        }
    }

    async fn handle(self: &Arc<Self>, request: Request) {
        match request {
            // Bounded, and dropped once their client has gone (`accounts/prelogin.rs`).
            Request::Register { peer, body, reply } => self.spawn_register(peer, body, reply),
            Request::Account {
                peer,
                request,
                reply,
            } => self.spawn_account(peer, request, reply),
            // Logins run apart, a bounded number at once (`login_queue.rs`).
            Request::Login {
                conn,
                peer,
                body,
                reply,
            } => self.logins.push(QueuedLogin {
                conn,
                peer,
                body,
                reply,
            }),
            Request::Session {
                conn,
                user_id,
                request_id,
                request,
            } => {
                self.session(conn, user_id, request_id, request).await;
            }
            Request::Closed { conn, user_id } => {
                // The only way out of rooms besides RoomLeave: a session that never got its
                // LoginOk (the other close paths) never joined one.
                self.rooms.close(conn, user_id);
                let closed = self.sessions.write().close(user_id, conn);
                self.group_online.close(user_id, conn);
                self.route_closed(user_id, conn); // cluster routes
                if let Some(session) = closed {
                    self.accounts.seen.record(session.token_hash, now_ms());
                }
                self.presence_changed(user_id, conn, None).await;
            }
        }
    }

    /// A login from the login queue, while it holds one of its slots.
    pub(crate) async fn serve_login(&self, login: QueuedLogin) {
        let QueuedLogin {
            conn,
            peer,
            body,
            reply,
        } = login;
        let presence = DeviceState::at_login(body.presence);
        let outcome = self.login(conn, peer, body).await;
        let session = outcome.session.clone();
        // Before the reply: the shard reports the connection closed only after it
        // has the reply, so a close is never overtaken by this device's arrival.
        if let Some(session) = &session {
            self.presence_changed(session.user_id, conn, Some(presence))
                .await;
        }
        if reply.send(outcome).is_err()
            && let Some(session) = session
        {
            self.sessions.write().close(session.user_id, conn);
            self.group_online.close(session.user_id, conn);
            self.route_closed(session.user_id, conn); // cluster routes
            self.presence_changed(session.user_id, conn, None).await;
        }
    }

    async fn login(&self, conn: ConnRef, peer: std::net::IpAddr, body: v1::Login) -> LoginReply {
        let refused = |r: Refusal| LoginReply {
            body: Body::Error(r.into_error()),
            session: None,
        };
        // A Resume the server would not serve costs no credential check.
        if let Some(resume) = &body.resume
            && let Err(refusal) = crate::messaging::resume::check(resume, &self.settings.login)
        {
            return refused(refusal);
        }
        let auth = match self.accounts.authenticate(peer, &body).await {
            Ok(auth) => auth,
            Err(refusal) => return refused(refusal),
        };
        if matches!(body.credential, Some(v1::login::Credential::Password(_))) {
            // A new login: the device is pushed to once it registers a token again (one left
            // from a login that expired or was pushed out would otherwise come back to life).
            // Before the reply, so that it never removes the registration that follows.
            self.forget_push_tokens(
                auth.user_id,
                crate::push::SignedOut::Device(&auth.device_id),
            )
            .await;
        }
        let platform = crate::sessions::session_platform(body.platform);
        // Cluster mode: the user's sessions on the other nodes count toward devices_max too.
        let elsewhere = self.accounts.sessions_elsewhere(auth.user_id).await;
        let (opened, opened_at_ms) = {
            let mut sessions = self.sessions.write();
            // Stamped under the lock: a device's sessions are stamped in the order they
            // register, the order that decides which replaces which here, and the REPLACED
            // kick's cut on the other nodes (`kick_replaced`) follows the same order.
            let opened_at_ms = now_ms();
            let session = Session {
                conn,
                device_id: auth.device_id.as_str().into(),
                platform,
                token_hash: auth.token_hash,
                peer,
                opened_at_ms,
                token_expires_at_ms: auth.token_expires_at_ms,
            };
            let opened = sessions.open_beside(auth.user_id, session, &elsewhere);
            (opened, opened_at_ms)
        };
        let replaced = match opened {
            Ok(replaced) => replaced,
            Err(refused_open) => {
                // Checked before the token was written (`Accounts::check_room`), so only a
                // login that took the last place meanwhile gets here.
                self.take_back_token(&auth, &body).await;
                self.kick_revoked(auth.user_id, &auth.revoked, conn, None)
                    .await;
                return refused(refused_open.into());
            }
        };
        // This device's sessions on other nodes get REPLACED below (whatever the outcome),
        // not DEVICE_REVOKED: the same end as on this node.
        self.kick_revoked(auth.user_id, &auth.revoked, conn, Some(&auth.device_id))
            .await;
        // From here on the session gets what is routed: anything stamped earlier and not yet
        // routed is newer than the time the login reports.
        let login_time = self.delivery.in_flight.login_time(now_ms());
        // The sessions this one replaces are kicked once it is ready: until then they hold the
        // user's groups installed in `group_online`, so the groups step below takes them from
        // there with no wait on lagging delivery. (Kicked first, an old session's close could
        // empty that entry, and the login was then refused "delivery is behind" with the
        // user's working connection already gone.) They left the sessions table above and
        // may have missed direct pushes since, so a refused login kicks them too.
        // A password change, a revocation or an operator's disable that landed after the
        // token (or the account's flags) was read kicked the sessions it found, not this one:
        // check both again now that the session is registered.
        let (store, hash) = (Arc::clone(&self.ports.accounts), auth.token_hash);
        let (flags, user_id) = (Arc::clone(&self.ports.account_admin), auth.user_id);
        let still_valid = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((store.token(&hash)?, flags.user_flags(user_id)?))
        })
        .await;
        // (refusal, whether the token is gone already)
        let revoked = match still_valid {
            Ok(Ok((Some(_), None))) => None,
            Ok(Ok((Some(_), Some(_)))) => Some((crate::accounts::disabled(), false)),
            Ok(Ok((None, _))) => Some((
                Refusal::new(
                    ErrorCode::InvalidCredentials,
                    "unknown account or wrong credentials",
                ),
                true,
            )),
            Ok(Err(e)) => Some((Refusal::from(e), false)),
            Err(e) => Some((Refusal::unavailable(e), false)),
        };
        if let Some((refusal, token_gone)) = revoked {
            self.sessions.write().close(auth.user_id, conn);
            self.kick_replaced(auth.user_id, &auth.device_id, &replaced, opened_at_ms)
                .await;
            if !token_gone {
                // Nobody got the new token: take it back (and put a refreshed one back).
                self.take_back_token(&auth, &body).await;
            }
            return refused(refusal);
        }
        let ready = match self.groups_online_login(auth.user_id, conn).await {
            Ok(()) => self.retire_refreshed(&auth, conn).await,
            refused => refused,
        };
        if let Err(refusal) = ready {
            self.sessions.write().close(auth.user_id, conn);
            self.group_online.close(auth.user_id, conn);
            self.kick_replaced(auth.user_id, &auth.device_id, &replaced, opened_at_ms)
                .await;
            self.take_back_token(&auth, &body).await;
            return refused(refusal);
        }
        self.kick_replaced(auth.user_id, &auth.device_id, &replaced, opened_at_ms)
            .await;
        self.observe.logged_in(auth.user_id);
        self.route_opened(auth.user_id, conn, &auth.device_id, platform); // cluster routes
        // A push in the routes' window may miss this node: checked once it closed (cluster).
        self.check_after_login(auth.user_id, conn, login_time);
        LoginReply {
            body: Body::LoginOk(v1::LoginOk {
                user_id: auth.user_id,
                token: auth.token,
                token_expires_at_ms: auth.token_expires_at_ms,
                server_time_ms: login_time,
                token_refreshed: auth.refreshed,
            }),
            session: Some(SessionInfo {
                user_id: auth.user_id,
                device_id: auth.device_id.as_str().into(),
                resume: body.resume,
            }),
        }
    }

    /// Ends the sessions a login replaced (`Sessions::open` took them out of the table), and
    /// in a cluster the (named) device's sessions on the other nodes opened before this one
    /// (`opened_at_ms`, its registration: `cluster/link/kicks.rs`), so never the new session,
    /// nor a login of the device registered there since, however long this login took after
    /// it registered. One rule on one node and across nodes: of a device's sessions, the one
    /// registered last stays (a password login revokes the device's older tokens before it
    /// registers, and checks its own once registered: so that one holds the valid token).
    /// Two logins of one device registered on two nodes within the
    /// kicks' time in transit (at most `NODE_CLOCKS_APART_MAX_MS` more) may end each other
    /// (the device logs in again, and that login stays); both never stay.
    async fn kick_replaced(
        &self,
        user_id: crate::store::UserId,
        device_id: &str,
        replaced: &[ConnRef],
        opened_at_ms: u64,
    ) {
        if !device_id.is_empty() {
            self.replace_elsewhere(user_id, device_id, opened_at_ms);
        }
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
    }

    /// A place in the read queue, or the client is told to retry and `None` comes back.
    pub(crate) async fn read_ticket(&self, conn: ConnRef, request_id: u64) -> Option<Ticket> {
        self.gate_ticket(&self.reads, "reads", conn, request_id)
            .await
    }

    /// A place in `gate`'s queue, or the client is told to retry (`UNAVAILABLE` when the
    /// server's queue is full, `RATE_LIMITED` when this connection holds its share) and `None`
    /// comes back. `what` names the requests the gate holds, for the message.
    pub(crate) async fn gate_ticket(
        &self,
        gate: &ReadGate,
        what: &str,
        conn: ConnRef,
        request_id: u64,
    ) -> Option<Ticket> {
        let refusal = match gate.ticket(conn) {
            Ok(ticket) => return Some(ticket),
            Err(full) => full.refusal(what, gate.per_conn_max()),
        };
        self.reply(conn, request_id, Body::Error(refusal.into_error()))
            .await;
        None
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

/// The file API's bearer tokens, checked by the accounts service.
struct TokenAuth(Arc<Backend>);

#[async_trait::async_trait]
impl crate::files::http::Authenticate for TokenAuth {
    async fn user_of(
        &self,
        token: &str,
        peer: std::net::IpAddr,
    ) -> Result<crate::api::UserId, crate::files::http::AuthError> {
        use crate::files::http::AuthError;
        self.0
            .accounts
            .token_user(token, peer)
            .await
            .map_err(|refusal| match refusal.code {
                ErrorCode::Unavailable => AuthError::Unavailable(refusal.message),
                ErrorCode::RateLimited => AuthError::Limited {
                    message: refusal.message,
                    retry_after_ms: refusal.retry_after_ms,
                },
                _ => AuthError::Invalid(refusal.message),
            })
    }
}

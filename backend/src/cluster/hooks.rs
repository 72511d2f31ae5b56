//! The backend's side of cluster mode: its sessions opening and closing reach the routes
//! (the call sites in `service.rs` are marked "cluster routes"). One box: nothing is set and
//! each call is one check of an empty `OnceLock`.

use std::sync::Arc;

use ringchat_proto::v1::Platform;

use super::{ClusterPresence, Routes};
use crate::Backend;
use crate::api::ConnRef;
use crate::store::UserId;

impl Backend {
    /// Cluster mode: this node's sessions are published in `routes` from now on. Call before
    /// the shards take clients; a second call is ignored.
    pub fn join_cluster(&self, routes: Arc<Routes>) {
        // The device rules (devices_max, REPLACED, ListDevices' `online`) count every node.
        self.accounts.share_routes(Arc::clone(&routes));
        if self.routes.set(routes).is_err() {
            tracing::warn!("join_cluster called twice; keeping the first routes");
        }
    }

    /// Cluster mode: presence is shared through Redis from now on (`cluster/presence/`). Call
    /// before the shards take clients and before `serve`; a second call is ignored.
    pub fn join_cluster_presence(&self, presence: Arc<ClusterPresence>) {
        if self.cluster_presence.set(Arc::clone(&presence)).is_err() {
            tracing::warn!("join_cluster_presence called twice; keeping the first store");
            return;
        }
        self.presence.use_store(presence);
    }

    /// Cluster mode: e-mail codes live in Redis from now on, so that any node redeems a code
    /// any node sent (`cluster/codes.rs`). Call before the shards take clients.
    pub fn join_cluster_codes(&self, codes: Arc<super::codes::SharedCodes>) {
        self.accounts.share_codes(codes);
    }

    /// Cluster mode: a user's upload creates take turns across the nodes, so that the user's
    /// file limits hold for the cluster (`files/service.rs`). Call before `serve`.
    pub fn join_cluster_leases(&self, leases: Arc<super::leases::Leases>) {
        if let Some(files) = &self.files {
            files.share_user_turns(leases);
        }
    }

    /// Cluster mode: users' presence changed on other nodes; friends here are told as the
    /// tracker decides. Runs until the backend stops.
    pub(crate) async fn run_presence_elsewhere(self: Arc<Self>, presence: Arc<ClusterPresence>) {
        loop {
            presence.elsewhere_changed.notified().await;
            for user in presence.take_elsewhere() {
                if let Some(push) = self.presence.elsewhere(user, crate::time::now_ms()) {
                    self.push_presence(push).await;
                }
                // Counted once the decision (and any push) is made: tests wait on it.
                metrics::counter!("ringchat_cluster_presence_decided_total").increment(1);
            }
        }
    }

    pub(crate) fn route_opened(
        &self,
        user: UserId,
        conn: ConnRef,
        device_id: &str,
        platform: Platform,
    ) {
        if let Some(routes) = self.routes.get() {
            routes.opened(user, conn, device_id, platform.as_str_name());
        }
    }

    pub(crate) fn route_closed(&self, user: UserId, conn: ConnRef) {
        if let Some(routes) = self.routes.get() {
            routes.closed(user, conn);
        }
    }
}

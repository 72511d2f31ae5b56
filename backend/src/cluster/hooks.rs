//! The backend's side of cluster mode: its sessions opening and closing reach the routes
//! (the call sites in `service.rs` are marked "cluster routes"). One box: nothing is set and
//! each call is one check of an empty `OnceLock`.

use std::sync::Arc;

use ringchat_proto::v1::Platform;

use super::Routes;
use crate::Backend;
use crate::api::ConnRef;
use crate::store::UserId;

impl Backend {
    /// Cluster mode: this node's sessions are published in `routes` from now on. Call before
    /// the shards take clients; a second call is ignored.
    pub fn join_cluster(&self, routes: Arc<Routes>) {
        if self.routes.set(routes).is_err() {
            tracing::warn!("join_cluster called twice; keeping the first routes");
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

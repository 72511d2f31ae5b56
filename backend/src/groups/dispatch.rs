//! A logged-in client's group reads, on the read pool like the other reads; and the login and
//! close hooks that keep the online-member index (`online.rs`) up to date.

use std::sync::Arc;

use ringchat_proto::Body;

use super::online::LoginStep;
use super::{read_counts, reads};
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, GroupQuery};
use crate::store::UserId;

/// A login re-reads the user's groups at most this often when membership changes keep landing
/// while it reads; past it the login is refused with `UNAVAILABLE` (retry).
const LOGIN_GROUP_READS_MAX: usize = 8;
/// How long a login waits for the commits its read saw to be routed, at most (a commit group's
/// fsync; seconds only when the disk stalls). Past it the login is refused with `UNAVAILABLE`.
pub(crate) const ROUTED_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Backend {
    pub(crate) async fn group_query(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        query: GroupQuery,
    ) {
        let Some(ticket) = self.read_ticket(conn, request_id).await else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let worker = Arc::clone(&this);
            let answer = tokio::task::spawn_blocking(move || {
                let ports = &worker.ports;
                let cfg = &worker.settings.groups;
                let contacts = &worker.contacts;
                let body = match query {
                    GroupQuery::Info(r) => Body::Group(reads::info(ports, user, &r)?),
                    GroupQuery::Members(r) => {
                        Body::GroupMemberList(reads::members(ports, cfg, contacts, user, &r)?)
                    }
                    GroupQuery::List(r) => Body::GroupList(reads::list(ports, cfg, user, &r)?),
                    GroupQuery::ReadCount(r) => {
                        Body::GroupReadCountOk(read_counts::read_count(ports, user, &r)?)
                    }
                    GroupQuery::Applications(r) => Body::GroupApplicationList(reads::applications(
                        ports, cfg, contacts, user, &r,
                    )?),
                };
                Ok::<Body, Refusal>(body)
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

    /// After a session registered: puts the user among its groups' online members (reading
    /// its groups, at most `groups.per_user_max`, unless another session did already).
    pub(crate) async fn groups_online_login(
        &self,
        user: UserId,
        conn: ConnRef,
    ) -> Result<(), Refusal> {
        for _ in 0..LOGIN_GROUP_READS_MAX {
            let epoch = match self.group_online.login(user, conn) {
                LoginStep::Done => return Ok(()),
                LoginStep::ReadGroups(epoch) => epoch,
            };
            let store = Arc::clone(&self.ports.groups);
            let max = self.settings.groups.per_user_max as usize;
            let groups =
                tokio::task::spawn_blocking(move || super::online::read_groups(&*store, user, max))
                    .await
                    .map_err(Refusal::unavailable)?
                    .map_err(Refusal::from)?;
            // Every commit the read saw has been routed before the user joins its groups'
            // audience: a group joined in a commit the delivery task had not yet reached would
            // otherwise be pushed that group's messages of the commits before (older than the
            // user's visible seqs). Counted after the read: every group the read could see has
            // begun by then (an embedded store's group may be readable before its fsync ends,
            // so "durable" would be too few); waiting also for one still in its fsync only
            // costs that fsync. Bounded: past the bound the login is refused (never installed
            // early: that is the leak), and the client retries after the jittered delay.
            // No groups: nothing to wait for (a token login costs no wait on a slow fsync).
            if !groups.is_empty() {
                let through = self.delivery.in_flight.begun();
                let routed = self.delivery.in_flight.routed_through(through);
                let wait_max = std::time::Duration::from_millis(
                    self.routed_wait_max_ms
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                if tokio::time::timeout(wait_max, routed).await.is_err() {
                    metrics::counter!("ringchat_groups_login_routed_wait_timeouts_total")
                        .increment(1);
                    tracing::warn!(
                        user,
                        "login refused: the commits its group read saw were not routed in time"
                    );
                    return Err(Refusal {
                        code: ringchat_proto::v1::ErrorCode::Unavailable,
                        message: "delivery is behind, retry later".into(),
                        retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
                    });
                }
            }
            if self.group_online.install(user, epoch, groups) {
                return Ok(());
            }
        }
        Err(Refusal::unavailable(
            "group memberships kept changing; retry",
        ))
    }
}

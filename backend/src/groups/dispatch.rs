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
            // Installed before the commits the read saw are routed, the user could be pushed
            // messages from before it joined (the rule: `InFlight::routed_since_read`); past
            // the wait the login is refused and the client retries after the jittered delay.
            if let Err(behind) = self
                .delivery
                .in_flight
                .routed_since_read(!groups.is_empty())
                .await
            {
                metrics::counter!("ringchat_groups_login_routed_wait_timeouts_total").increment(1);
                tracing::warn!(user, %behind, "login refused: the commits its group read saw were not routed in time");
                return Err(Refusal {
                    code: ringchat_proto::v1::ErrorCode::Unavailable,
                    message: "delivery is behind, retry later".into(),
                    retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
                });
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

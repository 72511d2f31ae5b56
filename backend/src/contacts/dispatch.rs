//! A logged-in client's contacts reads and profile updates: reads on the read pool, bounded
//! like the other reads; a profile update (a durable write of its own) is counted against the
//! user's budget first, then runs through a small gate of its own, so that updates never hold
//! the places everyone's Sync and History wait for.

use std::sync::Arc;

use ringchat_proto::Body;

use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, ContactQuery};
use crate::store::UserId;
use crate::time::now_ms;

impl Backend {
    pub(crate) async fn contacts_query(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        query: ContactQuery,
    ) {
        let ticket = if let ContactQuery::UpdateProfile(_) = &query {
            if let Err(refusal) = self.contacts.admit_update(user) {
                self.refuse(conn, request_id, refusal).await;
                return;
            }
            let gate = &self.profile_updates;
            self.gate_ticket(gate, "profile updates", conn, request_id)
                .await
        } else {
            self.read_ticket(conn, request_id).await
        };
        let Some(ticket) = ticket else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let worker = Arc::clone(&this);
            let answer = tokio::task::spawn_blocking(move || {
                let (c, ports) = (&worker.contacts, &worker.ports);
                let body = match query {
                    ContactQuery::SearchUsers(r) => Body::UserList(c.search(ports, user, &r)?),
                    ContactQuery::GetProfiles(r) => {
                        Body::ProfileList(c.get_profiles(ports, user, &r)?)
                    }
                    ContactQuery::UpdateProfile(r) => {
                        Body::Profile(c.update_profile(ports, user, &r, now_ms())?)
                    }
                    ContactQuery::ListFriends(r) => {
                        let mut list = c.list_friends(ports, user, &r)?;
                        worker.with_presence(&mut list);
                        Body::FriendList(list)
                    }
                    ContactQuery::ListFriendRequests(r) => {
                        Body::FriendRequestList(c.list_friend_requests(ports, user, &r)?)
                    }
                    ContactQuery::ListBlocks(r) => Body::BlockList(c.list_blocks(ports, user, &r)?),
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
}

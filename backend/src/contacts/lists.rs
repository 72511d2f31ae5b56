//! A user's own lists, paged in user id order: friends, pending requests, blocks. Read on the
//! read pool from committed state.

use ringchat_proto::v1::{self, FriendState, RequestDirection};

use super::Contacts;
use super::profiles::{bare_profile, base_profile, target_took_part};
use crate::store::{Ports, RelationKind, RelationRecord, StoreError, UserId};

impl Contacts {
    fn page_size(&self, limit: u32) -> usize {
        let page = match limit {
            0 => self.config.list_page_max,
            n => n.min(self.config.list_page_max),
        };
        page as usize
    }

    /// One page of `user`'s relations of `kind` with profiles (in the state given), and whether
    /// more follow.
    fn page(
        &self,
        ports: &Ports,
        user: UserId,
        kind: RelationKind,
        after: UserId,
        limit: u32,
        state: FriendState,
    ) -> Result<(Vec<(v1::Profile, RelationRecord)>, bool), StoreError> {
        let limit = self.page_size(limit);
        let mut rows = ports.contacts.relations(user, kind, after, limit + 1)?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let mut out = Vec::with_capacity(rows.len());
        for (other, record) in rows {
            let mut profile = base_profile(
                &*ports.accounts,
                &*ports.contacts,
                self.config.searchable_default,
                other,
            )?
            .unwrap_or_else(|| bare_profile(other));
            // A block or a request the user made alone shows a hidden user by id only.
            if !profile.searchable && !target_took_part(ports, user, other, state)? {
                profile = bare_profile(other);
            }
            profile.friend_state = state as i32;
            profile.blocked = kind == RelationKind::Block;
            out.push((profile, record));
        }
        Ok((out, has_more))
    }

    pub(crate) fn list_friends(
        &self,
        ports: &Ports,
        user: UserId,
        req: &v1::ListFriends,
    ) -> Result<v1::FriendList, StoreError> {
        let (rows, has_more) = self.page(
            ports,
            user,
            RelationKind::Friend,
            req.after_user_id,
            req.limit,
            FriendState::Friends,
        )?;
        Ok(v1::FriendList {
            friends: rows
                .into_iter()
                .map(|(profile, r)| v1::Friend {
                    profile: Some(profile),
                    since_ms: r.since_ms,
                    // Filled by the caller, which has the presence tracker.
                    presence: None,
                })
                .collect(),
            has_more,
        })
    }

    pub(crate) fn list_friend_requests(
        &self,
        ports: &Ports,
        user: UserId,
        req: &v1::ListFriendRequests,
    ) -> Result<v1::FriendRequestList, StoreError> {
        let incoming = req.direction() == RequestDirection::Incoming;
        let (kind, state) = if incoming {
            (RelationKind::RequestIn, FriendState::RequestReceived)
        } else {
            (RelationKind::RequestOut, FriendState::RequestSent)
        };
        let (rows, has_more) = self.page(ports, user, kind, req.after_user_id, req.limit, state)?;
        Ok(v1::FriendRequestList {
            requests: rows
                .into_iter()
                .map(|(profile, r)| v1::PendingFriendRequest {
                    profile: Some(profile),
                    message: r.message,
                    sent_at_ms: r.since_ms,
                    incoming,
                })
                .collect(),
            has_more,
        })
    }

    pub(crate) fn list_blocks(
        &self,
        ports: &Ports,
        user: UserId,
        req: &v1::ListBlocks,
    ) -> Result<v1::BlockList, StoreError> {
        let (rows, has_more) = self.page(
            ports,
            user,
            RelationKind::Block,
            req.after_user_id,
            req.limit,
            FriendState::None,
        )?;
        Ok(v1::BlockList {
            users: rows
                .into_iter()
                .map(|(profile, r)| v1::BlockedUser {
                    profile: Some(profile),
                    since_ms: r.since_ms,
                })
                .collect(),
            has_more,
        })
    }
}

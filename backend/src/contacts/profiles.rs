//! Profiles as others see them, who may see whom, profile updates, and search. Runs on
//! blocking threads, from the store's committed state: reads through the read pool, updates
//! through a gate of their own (`dispatch.rs`).

use ringchat_proto::v1::{self, ErrorCode, FriendState, search_users};

use super::{Contacts, wire_policy};
use crate::accounts::Refusal;
use crate::messaging::operator::OperatorWriteError;
use crate::store::{
    AccountStore, ContactStore, ConvId, Ports, ProfileRecord, RelationKey, RelationKind,
    StoreError, UserId, username_key,
};

/// Longest username prefix (a username's longest).
const PREFIX_CHARS_MAX: usize = crate::accounts::USERNAME_CHARS_MAX;
/// Username index entries one search reads, at most: non-searchable users are skipped, and a
/// page that needs more stops early with `has_more` (and the cursor where it stopped).
const SEARCH_SCAN_MAX: usize = 1_000;
/// Entries read from the index at a time.
const SEARCH_SCAN_BATCH: usize = 100;

/// Reads and conditional writes of one profile update before it gives up: each lost round
/// means another node wrote the same user's profile between the read and the write.
const PROFILE_WRITE_ROUNDS_MAX: usize = 8;
/// The base of `retry_after_ms` for an update that lost every round.
const PROFILE_WRITE_RETRY_AFTER_MS: u64 = 100;

/// Sets the fields `req` sets, onto `record`.
fn apply_update(req: &v1::UpdateProfile, record: &mut ProfileRecord) {
    if let Some(v) = &req.nickname {
        record.nickname.clone_from(v);
    }
    if let Some(v) = &req.avatar_url {
        record.avatar_url.clone_from(v);
    }
    if let Some(v) = &req.bio {
        record.bio.clone_from(v);
    }
    if let Some(v) = req.searchable {
        record.searchable = Some(v);
    }
    if let Some(v) = req.hide_last_seen {
        record.hide_last_seen = v;
    }
}

/// A user's public profile with no relation filled in; `None` if there is no such user.
pub(crate) fn base_profile(
    accounts: &dyn AccountStore,
    contacts: &dyn ContactStore,
    searchable_default: bool,
    user: UserId,
) -> Result<Option<v1::Profile>, StoreError> {
    let Some(account) = accounts.user_by_id(user)? else {
        return Ok(None);
    };
    let p = contacts.profile(user)?.unwrap_or_default();
    Ok(Some(v1::Profile {
        user_id: user,
        username: account.username,
        nickname: p.nickname,
        avatar_url: p.avatar_url,
        bio: p.bio,
        searchable: p.searchable.unwrap_or(searchable_default),
        hide_last_seen: p.hide_last_seen,
        ..v1::Profile::default()
    }))
}

/// Where `viewer` stands with `target`: the friend state and whether the viewer blocked them.
pub(crate) fn relation_of(
    contacts: &dyn ContactStore,
    viewer: UserId,
    target: UserId,
) -> Result<(FriendState, bool), StoreError> {
    let has = |kind| -> Result<bool, StoreError> {
        Ok(contacts
            .relation(RelationKey::new(viewer, kind, target))?
            .is_some())
    };
    let state = if has(RelationKind::Friend)? {
        FriendState::Friends
    } else if has(RelationKind::RequestOut)? {
        FriendState::RequestSent
    } else if has(RelationKind::RequestIn)? {
        FriendState::RequestReceived
    } else {
        FriendState::None
    };
    Ok((state, has(RelationKind::Block)?))
}

/// What a user who may not see `user`'s profile is shown of them in their own lists and
/// events: the id alone.
pub(crate) fn bare_profile(user: UserId) -> v1::Profile {
    v1::Profile {
        user_id: user,
        ..v1::Profile::default()
    }
}

/// Whether `target` took part in something with `viewer`: a friendship, a request from
/// `target`, or a direct conversation `target` has written or read in. What the viewer did
/// alone (a request, a block, a first message) does not count, or a block would show anyone.
pub(crate) fn target_took_part(
    ports: &Ports,
    viewer: UserId,
    target: UserId,
    state: FriendState,
) -> Result<bool, StoreError> {
    if matches!(state, FriendState::Friends | FriendState::RequestReceived) {
        return Ok(true);
    }
    let Some(conv) = ConvId::direct(viewer, target) else {
        return Ok(false);
    };
    Ok(ports
        .cursors
        .cursor_row(conv, target)?
        .is_some_and(|row| row.cursor.read_seq > 0))
}

impl Contacts {
    /// `target`'s profile as `viewer` sees it, if `viewer` may see it: the one rule for lookups
    /// by id (GetProfiles, search by id or e-mail). Visible: oneself, searchable users, and
    /// anyone who took part in something with the viewer ([`target_took_part`]). Anyone else
    /// is answered as if there were no such user.
    pub(crate) fn profile_seen_by(
        &self,
        ports: &Ports,
        viewer: UserId,
        target: UserId,
    ) -> Result<Option<v1::Profile>, StoreError> {
        let cfg = &self.config;
        let Some(mut profile) = base_profile(
            &*ports.accounts,
            &*ports.contacts,
            cfg.searchable_default,
            target,
        )?
        else {
            return Ok(None);
        };
        if viewer == target {
            let policy = ports
                .contacts
                .contact_summary(viewer)?
                .and_then(|s| s.dm_policy)
                .unwrap_or(cfg.dm_policy_default.into());
            profile.dm_policy = wire_policy(policy) as i32;
            return Ok(Some(profile));
        }
        let (state, blocked) = relation_of(&*ports.contacts, viewer, target)?;
        profile.friend_state = state as i32;
        profile.blocked = blocked;
        let visible = profile.searchable || target_took_part(ports, viewer, target, state)?;
        Ok(visible.then_some(profile))
    }

    /// `target` as `viewer` sees it in a list the viewer did not choose the people of (a
    /// group's members, its applications): [`Self::profile_seen_by`], or the id alone where
    /// that shows nothing. Being in a group together is not taking part in something: anyone
    /// may join an open group, and a hidden user would not stay hidden from them.
    pub(crate) fn profile_in_list(
        &self,
        ports: &Ports,
        viewer: UserId,
        target: UserId,
    ) -> Result<v1::Profile, StoreError> {
        Ok(self
            .profile_seen_by(ports, viewer, target)?
            .unwrap_or_else(|| bare_profile(target)))
    }

    pub(crate) fn get_profiles(
        &self,
        ports: &Ports,
        viewer: UserId,
        req: &v1::GetProfiles,
    ) -> Result<v1::ProfileList, Refusal> {
        let max = self.config.profiles_per_request_max;
        if req.user_ids.len() > max {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("at most {max} user_ids per request"),
            ));
        }
        let mut ids = req.user_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        self.profile_rate
            .take(viewer, u32::try_from(ids.len()).unwrap_or(u32::MAX))?;
        let mut profiles = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.profile_seen_by(ports, viewer, id)? {
                profiles.push(p);
            }
        }
        Ok(v1::ProfileList { profiles })
    }

    /// A client's UpdateProfile: [`Self::write_profile`], then the profile as the user sees it.
    pub(crate) fn update_profile(
        &self,
        ports: &Ports,
        user: UserId,
        req: &v1::UpdateProfile,
        now_ms: u64,
    ) -> Result<v1::Profile, Refusal> {
        self.write_profile(ports, user, req, now_ms)?;
        self.profile_seen_by(ports, user, user)?
            .ok_or_else(|| Refusal::new(ErrorCode::UserNotFound, "no such user"))
    }

    /// Validates `req` and writes the fields it sets (an operator's edit too, `admin/users/`):
    /// the one rule for changing a profile. A failed write may have landed
    /// (`OperatorWriteError::store_write`).
    pub(crate) fn write_profile(
        &self,
        ports: &Ports,
        user: UserId,
        req: &v1::UpdateProfile,
        now_ms: u64,
    ) -> Result<(), OperatorWriteError> {
        self.validate_profile(req)
            .map_err(OperatorWriteError::NotQueued)?;
        // Read, change, write back only if the row is still the one read: the lock keeps this
        // node's writers of one user in line, the store's check catches another node's.
        let _writing = self.profile_lock(user);
        for _ in 0..PROFILE_WRITE_ROUNDS_MAX {
            let stored = (ports.contacts.profile(user))
                .map_err(|e| OperatorWriteError::NotQueued(Refusal::from(e)))?;
            let before = stored.clone().unwrap_or_default();
            let mut record = before.clone();
            apply_update(req, &mut record);
            if record == before {
                return Ok(());
            }
            record.updated_ms = now_ms;
            let written = ports
                .contacts
                .put_profile_if(user, stored.as_ref(), &record)
                .map_err(OperatorWriteError::store_write)?;
            if written {
                return Ok(());
            }
        }
        // Each lost round is another writer's update landing first: nothing of this one did.
        Err(OperatorWriteError::NotQueued(Refusal::busy(
            format!(
                "the profile changed {PROFILE_WRITE_ROUNDS_MAX} times while it was written, retry"
            ),
            PROFILE_WRITE_RETRY_AFTER_MS,
        )))
    }

    fn validate_profile(&self, req: &v1::UpdateProfile) -> Result<(), Refusal> {
        let cfg = &self.config;
        let invalid = |m: String| Err(Refusal::new(ErrorCode::InvalidArgument, m));
        use crate::text::{avatar_url_ok, no_controls};
        if let Some(v) = &req.nickname
            && (v.len() > cfg.nickname_bytes_max || !no_controls(v, false))
        {
            return invalid(format!(
                "nickname: at most {} bytes, no control characters",
                cfg.nickname_bytes_max
            ));
        }
        if let Some(v) = &req.avatar_url
            && !avatar_url_ok(v, cfg.avatar_url_bytes_max)
        {
            return invalid(format!(
                "avatar_url: empty, or an http(s) URL of at most {} bytes without spaces",
                cfg.avatar_url_bytes_max
            ));
        }
        if let Some(v) = &req.bio
            && (v.len() > cfg.bio_bytes_max || !no_controls(v, true))
        {
            return invalid(format!(
                "bio: at most {} bytes, no control characters but newlines",
                cfg.bio_bytes_max
            ));
        }
        Ok(())
    }

    pub(crate) fn search(
        &self,
        ports: &Ports,
        viewer: UserId,
        req: &v1::SearchUsers,
    ) -> Result<v1::UserList, Refusal> {
        let exact = |target: Option<UserId>| -> Result<v1::UserList, Refusal> {
            let found = match target {
                Some(t) => self.profile_seen_by(ports, viewer, t)?,
                None => None,
            };
            Ok(v1::UserList {
                users: found.into_iter().collect(),
                ..v1::UserList::default()
            })
        };
        let invalid = |m: &str| Err(Refusal::new(ErrorCode::InvalidArgument, m));
        match &req.query {
            None => invalid("search by one of user_id, username_prefix, email"),
            Some(search_users::Query::UserId(id)) => {
                self.search_rate.take(viewer, 1)?;
                exact(Some(*id))
            }
            Some(search_users::Query::Email(email)) => {
                if email.is_empty()
                    || email.len() > crate::accounts::EMAIL_BYTES_MAX
                    || !crate::text::no_controls(email, false)
                {
                    return invalid("email: 1 to 254 bytes, no control characters");
                }
                self.search_rate.take(viewer, 1)?;
                exact(user_id_by_email(ports, email)?)
            }
            Some(search_users::Query::UsernamePrefix(prefix)) => {
                let chars = prefix.chars().count();
                if chars == 0
                    || chars > PREFIX_CHARS_MAX
                    || req.after.len() > 4 * PREFIX_CHARS_MAX
                    || !crate::text::no_controls(prefix, false)
                    || !crate::text::no_controls(&req.after, false)
                {
                    return invalid(
                        "username_prefix: 1 to 32 characters, after: a name; no control characters",
                    );
                }
                self.search_rate.take(viewer, 1)?;
                let limit = match req.limit {
                    0 => self.config.search_page_max,
                    n => n.min(self.config.search_page_max),
                };
                Ok(self.by_prefix(
                    ports,
                    viewer,
                    &username_key(prefix),
                    &username_key(&req.after),
                    limit as usize,
                )?)
            }
        }
    }

    /// Searchable users whose username starts with `prefix`, after the cursor `after`. The
    /// cursor handed back is always the name of a user the page shows: a hidden user's name
    /// never leaves the server. A page that reads `SEARCH_SCAN_MAX` names and shows nobody
    /// ends the search (more of the name narrows it).
    fn by_prefix(
        &self,
        ports: &Ports,
        viewer: UserId,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<v1::UserList, StoreError> {
        let mut cursor = after.to_owned();
        let mut last_shown = String::new();
        let mut users = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        'scan: while users.len() < limit {
            if scanned >= SEARCH_SCAN_MAX {
                break;
            }
            let batch = ports
                .contacts
                .usernames_with_prefix(prefix, &cursor, SEARCH_SCAN_BATCH)?;
            let full = batch.len() == SEARCH_SCAN_BATCH;
            for (name, id) in batch {
                scanned += 1;
                cursor = name;
                let searchable = ports
                    .contacts
                    .profile(id)?
                    .and_then(|p| p.searchable)
                    .unwrap_or(self.config.searchable_default);
                if searchable && let Some(p) = self.profile_seen_by(ports, viewer, id)? {
                    users.push(p);
                    last_shown.clone_from(&cursor);
                    if users.len() == limit {
                        break 'scan;
                    }
                }
            }
            if !full {
                exhausted = true;
                break;
            }
        }
        let has_more = !exhausted
            && !users.is_empty()
            && !ports
                .contacts
                .usernames_with_prefix(prefix, &last_shown, 1)?
                .is_empty();
        Ok(v1::UserList {
            users,
            has_more,
            next_after: if has_more { last_shown } else { String::new() },
        })
    }

    fn profile_lock(&self, user: UserId) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (user as usize) % self.profile_writes.len();
        self.profile_writes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The user with this e-mail address (the store folds its case).
fn user_id_by_email(ports: &Ports, email: &str) -> Result<Option<UserId>, StoreError> {
    ports.accounts.user_id_by_email(email)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Durability;
    use crate::contacts::ContactsConfig;
    use crate::store::{AccountStore, FjallStore};

    /// Another node's profile write landing between this node's read and write: the first
    /// read of `user`'s profile answers the row as it was, then the other node's row is stored.
    struct OtherNodeWrites {
        inner: Arc<FjallStore>,
        theirs: std::sync::Mutex<Option<(UserId, ProfileRecord)>>,
    }

    impl ContactStore for OtherNodeWrites {
        fn relation(
            &self,
            key: RelationKey,
        ) -> Result<Option<crate::store::RelationRecord>, StoreError> {
            self.inner.relation(key)
        }
        fn relations(
            &self,
            owner: UserId,
            kind: RelationKind,
            after: UserId,
            limit: usize,
        ) -> Result<Vec<(UserId, crate::store::RelationRecord)>, StoreError> {
            self.inner.relations(owner, kind, after, limit)
        }
        fn contact_summary(
            &self,
            user: UserId,
        ) -> Result<Option<crate::store::ContactSummary>, StoreError> {
            self.inner.contact_summary(user)
        }
        fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
            let read = self.inner.profile(user)?;
            if let Some((u, theirs)) = self.theirs.lock().unwrap().take() {
                assert_eq!(u, user);
                self.inner.put_profile(user, &theirs)?;
            }
            Ok(read)
        }
        fn put_profile(&self, user: UserId, profile: &ProfileRecord) -> Result<(), StoreError> {
            self.inner.put_profile(user, profile)
        }
        fn put_profile_if(
            &self,
            user: UserId,
            expected: Option<&ProfileRecord>,
            profile: &ProfileRecord,
        ) -> Result<bool, StoreError> {
            self.inner.put_profile_if(user, expected, profile)
        }
        fn usernames_with_prefix(
            &self,
            prefix: &str,
            after: &str,
            limit: usize,
        ) -> Result<Vec<(String, UserId)>, StoreError> {
            self.inner.usernames_with_prefix(prefix, after, limit)
        }
    }

    #[test]
    fn an_update_made_from_a_row_another_node_changed_is_applied_onto_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let user = store.create_user("alice", "x", "", 1).unwrap().user_id;
        let first = ProfileRecord {
            bio: "old".into(),
            updated_ms: 5,
            ..ProfileRecord::default()
        };
        store.put_profile(user, &first).unwrap();
        // Device 1, on another node, hides the user while device 2's bio edit is in flight.
        let hidden = ProfileRecord {
            searchable: Some(false),
            updated_ms: 7,
            ..first
        };
        let mut ports = Ports::of(Arc::clone(&store));
        ports.contacts = Arc::new(OtherNodeWrites {
            inner: Arc::clone(&store),
            theirs: std::sync::Mutex::new(Some((user, hidden))),
        });
        let contacts = Contacts::new(ContactsConfig::default());
        let edit = v1::UpdateProfile {
            bio: Some("new".into()),
            ..v1::UpdateProfile::default()
        };
        contacts.write_profile(&ports, user, &edit, 9).unwrap();
        let stored = store.profile(user).unwrap().unwrap();
        assert_eq!(
            (stored.bio.as_str(), stored.searchable, stored.updated_ms),
            ("new", Some(false), 9),
            "both changes hold"
        );
    }

    #[test]
    fn a_search_cursor_never_names_a_hidden_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FjallStore::open(dir.path(), Durability::None).unwrap());
        let viewer = store.create_user("viewer", "x", "", 1).unwrap().user_id;
        let shown = store.create_user("ann", "x", "", 1).unwrap().user_id;
        let hidden = ProfileRecord {
            searchable: Some(false),
            ..ProfileRecord::default()
        };
        // More hidden names in a row than a page reads, then one shown user.
        for i in 0..SEARCH_SCAN_MAX + 5 {
            let id = store
                .create_user(&format!("anx{i:05}"), "x", "", 1)
                .unwrap();
            store.put_profile(id.user_id, &hidden).unwrap();
        }
        store.create_user("anz", "x", "", 1).unwrap();
        let ports = Ports::of(store);
        let contacts = Contacts::new(ContactsConfig::default());
        let page = |after: &str| contacts.by_prefix(&ports, viewer, "an", after, 50).unwrap();
        let first = page("");
        let names: Vec<&str> = first.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["ann"]);
        assert_eq!(first.users[0].user_id, shown);
        // The page stopped among hidden names: it hands back the last shown name, not theirs.
        assert!(first.has_more);
        assert_eq!(first.next_after, "ann");
        // From there a page reads only hidden names: the search ends, naming none of them.
        let second = page(&first.next_after);
        assert!(second.users.is_empty() && !second.has_more);
        assert_eq!(second.next_after, "");
    }
}

//! Invite codes issued by users (`CreateInvite`, `ListInvites`, `RevokeInvite`): stored like an
//! operator's (`policy.rs`: only the code's SHA-256, bounded by `accounts.invites_max`), with
//! `user:ID` as the issuer, which is how a user's own invites are told apart.
//!
//! A user issues at most `accounts.user_invites_per_day` in any day. Counted twice, because
//! each count alone can be got round: in memory per user (a revoked invite still counts), and
//! from the stored invites created in the last day (a restart does not reset it).
//!
//! A user's invites are read through the store's index by issuer, newest first
//! (`AccountAdminStore::invites_of_issuer_before`): a page of ListInvites, or the day's count
//! of CreateInvite (which stops at the first invite older than a day), costs the user's own
//! invites, never a walk of every stored one.

use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

use super::limiter::WindowLimiter;
use super::{Accounts, Refusal, blocking};
use crate::Backend;
use crate::api::{ConnRef, InviteRequest};
use crate::audit::Entry;
use crate::config::{AccountsConfig, Registration};
use crate::store::{AccountAdminStore, InviteRecord, StoreError, UserId};
use crate::time::now_ms;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// A user's invites read from the store at a time while counting their day's.
const DAY_CHUNK: usize = 64;
/// How long to wait when the server holds `accounts.invites_max` usable invites (the base:
/// jittered up to twice it).
const FULL_RETRY_MS: u64 = 60_000;

/// Users' issues in the current day, per user; tracks at most `accounts.invites_max` users
/// (each of whom issued at least one stored invite), forgetting the oldest past that (the
/// stored invites are counted too, so that forgives nothing).
pub(crate) type UserInviteLimiter = WindowLimiter<UserId, UserId>;

pub(crate) fn new_limiter(cfg: &AccountsConfig) -> UserInviteLimiter {
    WindowLimiter::new(cfg.user_invites_per_day.max(1), DAY_MS, cfg.invites_max)
}

fn issuer(user: UserId) -> String {
    format!("user:{user}")
}

/// The user who issued an invite, when a user did (an operator's issuer is their actor).
pub(crate) fn issuing_user(issuer: &str) -> Option<UserId> {
    issuer.strip_prefix("user:")?.parse().ok()
}

fn refused(code: ErrorCode, message: impl Into<String>, retry_after_ms: u64) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        retry_after_ms,
    }
}

/// The answer while the server holds `accounts.invites_max` usable invites.
fn invites_full() -> Refusal {
    Refusal::busy(
        "the server holds as many invites as it keeps; try again later",
        FULL_RETRY_MS,
    )
}

fn day_spent(retry_after_ms: u64) -> Refusal {
    refused(
        ErrorCode::RateLimited,
        "you have issued the invites allowed in a day",
        retry_after_ms.max(1),
    )
}

fn wire(r: &InviteRecord, now: u64) -> v1::Invite {
    v1::Invite {
        invite_id: r.id,
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        uses_max: r.uses_max,
        uses: r.uses,
        usable: r.usable(now),
    }
}

/// How many stored invites `issuer` created in the day before `now`, and the oldest one's time.
fn issued_in_a_day(
    store: &dyn AccountAdminStore,
    issuer: &str,
    now: u64,
) -> Result<(u32, u64), StoreError> {
    let (mut count, mut oldest, mut before) = (0u32, now, u64::MAX);
    loop {
        let rows = store.invites_of_issuer_before(issuer, before, DAY_CHUNK)?;
        let full = rows.len() == DAY_CHUNK;
        for r in rows {
            // Ids follow creation: everything further is older still.
            if r.created_ms.saturating_add(DAY_MS) <= now {
                return Ok((count, oldest));
            }
            count += 1;
            oldest = oldest.min(r.created_ms);
            before = r.id;
        }
        if !full {
            return Ok((count, oldest));
        }
    }
}

/// Up to `limit` of `issuer`'s invites below `before`, newest first, and whether more follow.
fn own_page(
    store: &dyn AccountAdminStore,
    issuer: &str,
    before: u64,
    limit: usize,
) -> Result<(Vec<InviteRecord>, bool), StoreError> {
    // One more than the page: whether there is a next one.
    let mut own = store.invites_of_issuer_before(issuer, before, limit.saturating_add(1))?;
    let more = own.len() > limit;
    own.truncate(limit);
    Ok((own, more))
}

impl Accounts {
    async fn create_user_invite(
        &self,
        user: UserId,
        req: v1::CreateInvite,
    ) -> Result<v1::InviteCreated, Refusal> {
        let cfg = &self.accounts;
        if cfg.registration != Registration::Invite {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "registration on this server is not by invite",
            ));
        }
        let per_day = cfg.user_invites_per_day;
        if per_day == 0 {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "users do not issue invites on this server",
            ));
        }
        let uses_max = req.uses_max.max(1);
        if uses_max > cfg.user_invite_uses_max {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("uses_max: at most {}", cfg.user_invite_uses_max),
            ));
        }
        let ttl_s = if req.ttl_s == 0 {
            cfg.user_invite_ttl_s
        } else {
            req.ttl_s
        };
        if ttl_s > cfg.user_invite_ttl_s {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("ttl_s: at most {}", cfg.user_invite_ttl_s),
            ));
        }
        let now = now_ms();
        self.user_invites.take(user, user, now).map_err(day_spent)?;
        let store = Arc::clone(&self.admin_store);
        let (count, oldest) =
            blocking(move || issued_in_a_day(&*store, &issuer(user), now)).await?;
        if count >= per_day {
            return Err(day_spent((oldest + DAY_MS).saturating_sub(now)));
        }
        let expires_ms = now.saturating_add(ttl_s.saturating_mul(1000));
        let issued = self
            .issue_invite(issuer(user), uses_max, expires_ms, String::new())
            .await
            .map_err(Refusal::from)?;
        let Some((code, record)) = issued else {
            return Err(invites_full());
        };
        self.audit.record(
            Entry::new(issuer(user), "invite.create")
                .target(format!("invite:{}", record.id))
                .detail(format!("uses {uses_max}, ttl {ttl_s} s")),
        );
        Ok(v1::InviteCreated {
            invite: Some(wire(&record, now)),
            code,
        })
    }

    async fn list_user_invites(
        &self,
        user: UserId,
        req: v1::ListInvites,
    ) -> Result<v1::InviteList, Refusal> {
        let page_max = self.accounts.user_invites_page_max;
        let limit = if req.limit == 0 {
            page_max
        } else {
            req.limit.min(page_max)
        } as usize;
        let before = if req.before_id == 0 {
            u64::MAX
        } else {
            req.before_id
        };
        let store = Arc::clone(&self.admin_store);
        let (own, more) = blocking(move || own_page(&*store, &issuer(user), before, limit)).await?;
        let now = now_ms();
        Ok(v1::InviteList {
            next_before_id: if more {
                own.last().map_or(0, |r| r.id)
            } else {
                0
            },
            invites: own.iter().map(|r| wire(r, now)).collect(),
        })
    }

    async fn revoke_user_invite(
        &self,
        user: UserId,
        req: v1::RevokeInvite,
    ) -> Result<v1::RevokeInviteOk, Refusal> {
        let id = req.invite_id;
        let store = Arc::clone(&self.admin_store);
        // The issuer never changes, so reading it and then removing is safe.
        let removed = blocking(move || {
            let mine = store
                .invites_before(id.saturating_add(1), 1)?
                .first()
                .is_some_and(|r| r.id == id && r.issuer == issuer(user));
            Ok(mine && store.remove_invite(id)?)
        })
        .await?;
        if !removed {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("you have no invite {id}"),
            ));
        }
        self.audit
            .record(Entry::new(issuer(user), "invite.revoke").target(format!("invite:{id}")));
        Ok(v1::RevokeInviteOk { invite_id: id })
    }
}

impl Backend {
    /// A logged-in user's invite request, on a task of its own through the read gate.
    pub(crate) async fn user_invite(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        req: InviteRequest,
    ) {
        let Some(ticket) = self.read_ticket(conn, request_id).await else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let a = &this.accounts;
            let body = match req {
                InviteRequest::Create(r) => {
                    a.create_user_invite(user, r).await.map(Body::InviteCreated)
                }
                InviteRequest::List(r) => a.list_user_invites(user, r).await.map(Body::InviteList),
                InviteRequest::Revoke(r) => a
                    .revoke_user_invite(user, r)
                    .await
                    .map(Body::RevokeInviteOk),
            };
            let body = body.unwrap_or_else(|refusal| Body::Error(refusal.into_error()));
            this.reply(conn, request_id, body).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::Durability;
    use crate::store::{AccountFlags, FjallStore, InviteTake, UserRecord};

    /// The store, counting the invite records its listings hand out.
    struct Counting {
        inner: FjallStore,
        read: AtomicUsize,
    }

    impl Counting {
        fn counted(
            &self,
            rows: Result<Vec<InviteRecord>, StoreError>,
        ) -> Result<Vec<InviteRecord>, StoreError> {
            if let Ok(rows) = &rows {
                self.read.fetch_add(rows.len(), Ordering::Relaxed);
            }
            rows
        }

        fn take_read(&self) -> usize {
            self.read.swap(0, Ordering::Relaxed)
        }
    }

    impl AccountAdminStore for Counting {
        fn user_flags(&self, user: UserId) -> Result<Option<AccountFlags>, StoreError> {
            self.inner.user_flags(user)
        }
        fn set_user_flags(
            &self,
            user: UserId,
            flags: Option<&AccountFlags>,
        ) -> Result<bool, StoreError> {
            self.inner.set_user_flags(user, flags)
        }
        fn users_after(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
            self.inner.users_after(after, limit)
        }
        fn put_invite(
            &self,
            invite: &InviteRecord,
            invites_max: usize,
            now_ms: u64,
        ) -> Result<Option<u64>, StoreError> {
            self.inner.put_invite(invite, invites_max, now_ms)
        }
        fn take_invite(&self, code_hash: &[u8; 32], now_ms: u64) -> Result<InviteTake, StoreError> {
            self.inner.take_invite(code_hash, now_ms)
        }
        fn return_invite(&self, id: u64) -> Result<(), StoreError> {
            self.inner.return_invite(id)
        }
        fn invites_before(
            &self,
            before: u64,
            limit: usize,
        ) -> Result<Vec<InviteRecord>, StoreError> {
            self.counted(self.inner.invites_before(before, limit))
        }
        fn invites_of_issuer_before(
            &self,
            issuer: &str,
            before: u64,
            limit: usize,
        ) -> Result<Vec<InviteRecord>, StoreError> {
            self.counted(self.inner.invites_of_issuer_before(issuer, before, limit))
        }
        fn remove_invite(&self, id: u64) -> Result<bool, StoreError> {
            self.inner.remove_invite(id)
        }
    }

    fn put(store: &Counting, code: u16, issuer: &str, created_ms: u64) -> u64 {
        let mut code_hash = [0u8; 32];
        code_hash[..2].copy_from_slice(&code.to_be_bytes());
        let record = InviteRecord {
            id: 0,
            code_hash,
            issuer: issuer.into(),
            created_ms,
            expires_ms: created_ms + DAY_MS * 7,
            uses_max: 1,
            uses: 0,
            note: String::new(),
        };
        store
            .put_invite(&record, 10_000, created_ms)
            .unwrap()
            .unwrap()
    }

    /// The day's count and a page of ListInvites read the user's own invites (across chunks),
    /// not the others' stored around them.
    #[test]
    fn a_users_day_and_pages_read_only_their_own_invites() {
        let dir = tempfile::tempdir().unwrap();
        let store = Counting {
            inner: FjallStore::open(dir.path(), Durability::None).unwrap(),
            read: AtomicUsize::new(0),
        };
        let now = 10 * DAY_MS;
        // Two days ago, then a day's worth: two chunks and more of the user's, among many
        // more of others'.
        let old = put(&store, 0, "user:7", now - 2 * DAY_MS);
        let mut mine = vec![old];
        let today = DAY_CHUNK as u16 * 2 + 5;
        for i in 1..=today * 4 {
            let issuer = if i % 4 == 0 { "user:7" } else { "admin:root" };
            let id = put(&store, i, issuer, now - DAY_MS + 1 + u64::from(i));
            if issuer == "user:7" {
                mine.push(id);
            }
        }
        store.take_read();
        assert_eq!(
            issued_in_a_day(&store, "user:7", now).unwrap(),
            (u32::from(today), now - DAY_MS + 5),
            "today's, not the one from two days ago"
        );
        let read = store.take_read();
        assert!(
            read <= mine.len(),
            "{read} invites read to count {today} of the user's"
        );
        mine.reverse();
        let (page, more) = own_page(&store, "user:7", u64::MAX, 10).unwrap();
        assert!(more);
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), mine[..10]);
        assert_eq!(store.take_read(), 11, "a page and one more");
        let (page, more) = own_page(&store, "user:7", mine[mine.len() - 3], 10).unwrap();
        assert!(!more, "the last page");
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            mine[mine.len() - 2..]
        );
        assert!(store.take_read() <= 2);
        assert_eq!(
            own_page(&store, "user:8", u64::MAX, 10).unwrap(),
            (vec![], false)
        );
    }
}

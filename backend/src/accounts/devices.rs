//! A logged-in user's devices and sessions: ChangePassword, Logout, ListDevices, RevokeDevice.
//!
//! A device is a `device_id` with a live token. Revoking a token and kicking the sessions that
//! used it go together: the store write comes first, then the kicks; a login that read the
//! token before the write re-checks it after registering its session (`Backend::login`), so
//! no session outlives its token.

use std::collections::BTreeMap;
use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, KickReason};

use super::{Accounts, Authenticated, Refusal, blocking, password};
use crate::Backend;
use crate::api::{AccountSessionRequest, ConnRef, ShardEvent};
use crate::audit::Entry;
use crate::push::SignedOut;
use crate::store::{StoreError, TokenHash, TokenRecord, UserId};
use crate::throttle::ThrottleKey;
use crate::time::now_ms;

/// Tokens read per user at most: above `login.device_tokens_max` (at most 1024), with room for
/// the tokens a refresh keeps.
pub(crate) const TOKENS_SCAN_MAX: usize = 2048 + 64;
/// Rounds of "read the tokens, revoke the picked ones" one revocation makes at most: a round
/// finds more only when a refresh of a picked token wrote between the read and the write,
/// which needs the refresh to win that race each time.
const REVOKE_ROUNDS_MAX: usize = 8;

/// The tokens to revoke when `new` is issued: the same device's older ones, expired ones, and
/// past `tokens_max` the devices seen longest ago (`seen_ms` says when), those with a session
/// on this node (`online`) last of all: a device in use is pushed out only when every other
/// one is too. `keep`, the token being refreshed, stays in case the reply is lost, while its
/// device id lets a Logout find it; with no device id nothing could end it, so it goes now.
pub(crate) fn tokens_to_revoke(
    held: &[(TokenHash, TokenRecord)],
    new: &TokenRecord,
    keep: Option<TokenHash>,
    tokens_max: usize,
    now_ms: u64,
    online: &[TokenHash],
    seen_ms: impl Fn(&TokenHash, &TokenRecord) -> u64,
) -> Vec<TokenHash> {
    let mut revoke = Vec::new();
    let mut others = Vec::new();
    for (hash, t) in held {
        if Some(*hash) == keep {
            continue;
        }
        let same_device = !new.device_id.is_empty() && t.device_id == new.device_id;
        if same_device || t.expires_at_ms <= now_ms {
            revoke.push(*hash);
        } else {
            others.push((*hash, (online.contains(hash), seen_ms(hash, t))));
        }
    }
    let excess = (others.len() + 1).saturating_sub(tokens_max);
    if excess > 0 {
        others.sort_by_key(|(_, order)| *order);
        revoke.extend(others.iter().take(excess).map(|(h, _)| *h));
    }
    revoke
}

/// Whether the device of `kept`, a token being refreshed, got a fresh token less than
/// `spacing_ms` ago: a live token of the same (named) device issued after `kept`. Then no
/// other is issued: each would revoke the one before, a write and a kick per login of a client
/// that keeps sending the old token. A nameless token has no device to ask: its refresh ends
/// it (`Authenticated::retires`).
pub(crate) fn refreshed_lately(
    held: &[(TokenHash, TokenRecord)],
    kept: TokenHash,
    device_id: &str,
    now_ms: u64,
    spacing_ms: u64,
) -> bool {
    if device_id.is_empty() {
        return false;
    }
    let Some(issued_ms) = (held.iter())
        .find(|(h, _)| *h == kept)
        .map(|(_, t)| t.issued_at_ms)
    else {
        return false;
    };
    held.iter().any(|(h, t)| {
        *h != kept
            && t.device_id == device_id
            && t.issued_at_ms > issued_ms
            && t.expires_at_ms > now_ms
            && now_ms.saturating_sub(t.issued_at_ms) < spacing_ms
    })
}

/// What a request did besides its reply: connections to kick, after the reply is queued.
type Kicks = Vec<(ConnRef, KickReason)>;

/// What a Logout ends: the session's token and, when the session names its device, that
/// device's other tokens. One rule for the tokens revoked and the sessions kicked here.
#[derive(Clone)]
struct LogoutScope {
    token: TokenHash,
    device: Box<str>,
}

impl LogoutScope {
    fn covers(&self, hash: &TokenHash, device_id: &str) -> bool {
        *hash == self.token || (!self.device.is_empty() && *device_id == *self.device)
    }
}

impl Accounts {
    /// Checks the old password (throttled like a login), then sets the new one, revokes every
    /// token of the account and issues a fresh one for this device, in one write.
    pub(super) async fn change_password(
        &self,
        user_id: UserId,
        req: v1::ChangePassword,
        device_id: &str,
        platform: i32,
    ) -> Result<Authenticated, Refusal> {
        self.validate_password(&req.new_password)?;
        let store = Arc::clone(&self.store);
        let user = blocking(move || store.user_by_id(user_id))
            .await?
            .ok_or_else(|| Refusal::unavailable("a logged-in user has no record"))?;
        // Every counter of the account, as logins by id, name and address: the caller holds
        // a session of it, so linking them tells it nothing it does not know.
        let keys = ThrottleKey::all_of(&user);
        for key in &keys {
            self.check_throttle(key)?;
        }
        // The ceiling, not the live maximum, as at login (`PASSWORD_BYTES_CEILING`).
        let right = req.old_password.len() <= super::PASSWORD_BYTES_CEILING
            && self
                .verify_throttled(
                    &keys.iter().collect::<Vec<_>>(),
                    &user.password_hash,
                    &req.old_password,
                )
                .await?;
        if !right {
            let now = std::time::Instant::now();
            for key in keys {
                self.throttle.record_failure(key, now);
            }
            return Err(Refusal::new(
                ErrorCode::InvalidCredentials,
                "the old password is wrong",
            ));
        }
        let hash = self.hash_new_password(req.new_password).await?;
        let (token, token_hash) = password::new_token().map_err(Refusal::unavailable)?;
        let now = now_ms();
        let record = TokenRecord {
            user_id,
            device_id: device_id.to_owned(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.login.token_ttl_s.saturating_mul(1000)),
            platform,
            last_seen_ms: now,
        };
        let expires_at_ms = record.expires_at_ms;
        // Written only over the hash the old password was checked against: a change or reset
        // made meanwhile wins, and this one is refused. A login's rehash of the same password
        // (`rehash.rs`) also changes the stored hash: the old password is checked once more
        // against what is stored then, and the write tried again over it.
        let mut verified = user.password_hash;
        let mut rechecked = false;
        let revoked = loop {
            let (store, hash, record, current) = (
                Arc::clone(&self.store),
                hash.clone(),
                record.clone(),
                verified.clone(),
            );
            let written = blocking(move || {
                store.set_password(user_id, &hash, Some((&token_hash, &record)), Some(&current))
            })
            .await?;
            if let Some(revoked) = written {
                break revoked;
            }
            let changed = || {
                Refusal::new(
                    ErrorCode::InvalidCredentials,
                    "the password was changed meanwhile",
                )
            };
            // Once: after a rehash the hash has the configured parameters, and only another
            // change moves it again.
            if rechecked {
                return Err(changed());
            }
            rechecked = true;
            let store = Arc::clone(&self.store);
            let Some(now) = blocking(move || store.user_by_id(user_id)).await? else {
                return Err(changed());
            };
            if !self
                .verify_throttled(&[], &now.password_hash, &req.old_password)
                .await?
            {
                return Err(changed());
            }
            verified = now.password_hash;
        };
        tracing::warn!(
            user_id,
            tokens_revoked = revoked,
            "password changed; other devices signed out"
        );
        self.audit.record(
            Entry::new(format!("user:{user_id}"), "user.password_change")
                .target(format!("user:{user_id}"))
                .detail(format!("from device {device_id}")),
        );
        Ok(Authenticated {
            user_id,
            token,
            token_hash,
            token_expires_at_ms: expires_at_ms,
            refreshed: false,
            device_id: device_id.to_owned(),
            revoked: Vec::new(),
            retires: None,
        })
    }

    /// Revokes the tokens of `user_id` that `pick` chooses; returns how many. The list is read
    /// before the write, so a refresh of a picked token that wrote its successor in between
    /// would leave that successor: the tokens are read again after each write until none is
    /// left to pick (a refresh made after a write finds its token gone and writes nothing).
    async fn revoke_tokens(
        &self,
        user_id: UserId,
        pick: impl Fn(&TokenHash, &TokenRecord) -> bool + Send + 'static,
    ) -> Result<usize, Refusal> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            let mut revoked = 0;
            for _ in 0..REVOKE_ROUNDS_MAX {
                let held = store.tokens_of_user(user_id, TOKENS_SCAN_MAX)?;
                let revoke: Vec<TokenHash> = held
                    .iter()
                    .filter(|(h, t)| pick(h, t))
                    .map(|(h, _)| *h)
                    .collect();
                if revoke.is_empty() {
                    return Ok(revoked);
                }
                store.replace_tokens(user_id, &revoke, None, None)?;
                revoked += revoke.len();
            }
            Err(StoreError::Unavailable(
                format!(
                    "tokens of user {user_id} kept coming back after {REVOKE_ROUNDS_MAX} \
                     revocations"
                )
                .into(),
            ))
        })
        .await
    }

    /// The account's signed-in devices, one entry per device id: its newest live token. Every
    /// one read (at most [`TOKENS_SCAN_MAX`] tokens): the caller orders them and keeps the
    /// first `login.device_tokens_max`, so that what a lowered limit cuts (the tokens past it
    /// go at the next password login) is the devices that matter least, not the ids that sort
    /// last.
    pub(crate) async fn devices(
        &self,
        user_id: UserId,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, Refusal> {
        let store = Arc::clone(&self.store);
        let now = now_ms();
        let held = blocking(move || store.tokens_of_user(user_id, TOKENS_SCAN_MAX)).await?;
        // One entry per device id: its newest live token.
        let mut newest: BTreeMap<String, (TokenHash, TokenRecord)> = BTreeMap::new();
        for (hash, t) in held.into_iter().filter(|(_, t)| t.expires_at_ms > now) {
            match newest.get(&t.device_id) {
                Some((_, kept)) if kept.issued_at_ms >= t.issued_at_ms => {}
                _ => {
                    newest.insert(t.device_id.clone(), (hash, t));
                }
            }
        }
        Ok(newest.into_values().collect())
    }
}

impl Backend {
    /// A logged-in client's account request: served on a task of its own, through the read
    /// gate with the reads; a password change (it hashes) through a gate of its own.
    pub(crate) async fn account_request(
        self: &Arc<Self>,
        conn: ConnRef,
        user_id: UserId,
        request_id: u64,
        request: AccountSessionRequest,
    ) {
        let ticket = match request {
            AccountSessionRequest::ChangePassword(_) => {
                let gate = &self.password_changes;
                self.gate_ticket(gate, "password changes", conn, request_id)
                    .await
            }
            _ => self.read_ticket(conn, request_id).await,
        };
        let Some(ticket) = ticket else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let outcome = match request {
                AccountSessionRequest::ChangePassword(req) => {
                    this.change_password(conn, user_id, req).await
                }
                AccountSessionRequest::Logout(_) => this.logout(conn, user_id).await,
                AccountSessionRequest::ListDevices(_) => this.list_devices(conn, user_id).await,
                AccountSessionRequest::RevokeDevice(req) => this.revoke_device(user_id, req).await,
            };
            match outcome {
                Ok((body, kicks)) => {
                    this.reply(conn, request_id, body).await;
                    for (target, reason) in kicks {
                        let event = ShardEvent::Kick {
                            conn: target.conn,
                            reason,
                        };
                        this.send_to_shard(target.shard, event).await;
                    }
                }
                Err(refusal) => this.refuse(conn, request_id, refusal).await,
            }
        });
    }

    /// The session's device and token; a session the registry no longer has is being closed.
    fn this_session(
        &self,
        user_id: UserId,
        conn: ConnRef,
    ) -> Result<(Box<str>, i32, TokenHash), Refusal> {
        let sessions = self.sessions.read();
        let s = sessions
            .session(user_id, conn)
            .ok_or_else(|| Refusal::new(ErrorCode::NotAuthenticated, "the session has ended"))?;
        Ok((s.device_id.clone(), s.platform as i32, s.token_hash))
    }

    async fn change_password(
        &self,
        conn: ConnRef,
        user_id: UserId,
        req: v1::ChangePassword,
    ) -> Result<(Body, Kicks), Refusal> {
        let (device_id, platform, _) = self.this_session(user_id, conn)?;
        let auth = self
            .accounts
            .change_password(user_id, req, &device_id, platform)
            .await?;
        self.forget_push_tokens(user_id, SignedOut::AllBut(&device_id))
            .await;
        // This session is on this node: every one elsewhere ends.
        self.kick_elsewhere(user_id, None, KickReason::PasswordChanged);
        let kicks: Kicks = {
            let mut sessions = self.sessions.write();
            sessions.set_token(user_id, conn, auth.token_hash, auth.token_expires_at_ms);
            sessions
                .of_user(user_id)
                .iter()
                .filter(|s| s.conn != conn)
                .map(|s| (s.conn, KickReason::PasswordChanged))
                .collect()
        };
        let body = Body::ChangePasswordOk(v1::ChangePasswordOk {
            token: auth.token,
            token_expires_at_ms: auth.token_expires_at_ms,
        });
        Ok((body, kicks))
    }

    async fn logout(&self, conn: ConnRef, user_id: UserId) -> Result<(Body, Kicks), Refusal> {
        let (device_id, _, token) = self.this_session(user_id, conn)?;
        let scope = LogoutScope {
            token,
            device: device_id.clone(),
        };
        let pick = scope.clone();
        let revoked = self
            .accounts
            .revoke_tokens(user_id, move |h, t| pick.covers(h, &t.device_id))
            .await?;
        self.forget_push_tokens(user_id, SignedOut::Device(&device_id))
            .await;
        // A session of this device on another node (its token used there) ends too. A device
        // with no name is only this token, used elsewhere too maybe: the kick names the
        // nameless device, and each node ends only its sessions whose token is gone
        // (`cluster/link/kicks.rs`), so other nameless logins stay.
        self.kick_elsewhere(user_id, Some(&device_id), KickReason::LoggedOut);
        // Here, by the rule the tokens were picked by: this session, and any other using its
        // token (a nameless device's copy) or of its device.
        let kicks: Kicks = (self.sessions.read().of_user(user_id).iter())
            .filter(|s| scope.covers(&s.token_hash, &s.device_id))
            .map(|s| (s.conn, KickReason::LoggedOut))
            .collect();
        tracing::info!(user_id, tokens_revoked = revoked, "logged out");
        self.audit.record(
            Entry::new(format!("user:{user_id}"), "user.logout")
                .target(format!("user:{user_id}"))
                .detail(format!("tokens revoked {revoked}")),
        );
        Ok((Body::LogoutOk(v1::LogoutOk {}), kicks))
    }

    async fn list_devices(&self, conn: ConnRef, user_id: UserId) -> Result<(Body, Kicks), Refusal> {
        let devices = self.accounts.devices(user_id).await?;
        // Cluster mode: a device connected to another node is online too (one Redis read).
        let elsewhere = self.accounts.sessions_elsewhere(user_id).await;
        let now = now_ms();
        let mut list: Vec<v1::Device> = {
            let sessions = self.sessions.read();
            let current = sessions.session(user_id, conn).map(|s| s.device_id.clone());
            let online = sessions.of_user(user_id);
            devices
                .into_iter()
                .map(|(hash, t)| {
                    let is_online = online.iter().any(|s| *s.device_id == *t.device_id)
                        || elsewhere.iter().any(|d| **d == *t.device_id);
                    v1::Device {
                        online: is_online,
                        current: current.as_deref() == Some(t.device_id.as_str()),
                        last_seen_ms: if is_online {
                            now
                        } else {
                            self.accounts.seen.last_seen_ms(&hash, &t)
                        },
                        platform: t.platform,
                        token_issued_at_ms: t.issued_at_ms,
                        token_expires_at_ms: t.expires_at_ms,
                        device_id: t.device_id,
                    }
                })
                .collect()
        };
        // The asking device first, then the online ones, then by last seen; cut after the
        // order, so that a lowered `login.device_tokens_max` never leaves those out.
        list.sort_by_key(|d| std::cmp::Reverse((d.current, d.online, d.last_seen_ms)));
        list.truncate(self.settings.login.device_tokens_max);
        Ok((
            Body::DeviceList(v1::DeviceList { devices: list }),
            Vec::new(),
        ))
    }

    async fn revoke_device(
        &self,
        user_id: UserId,
        req: v1::RevokeDevice,
    ) -> Result<(Body, Kicks), Refusal> {
        super::validate::validate_device_id(&req.device_id)?;
        let device = req.device_id.clone();
        let revoked = self
            .accounts
            .revoke_tokens(user_id, move |_, t| t.device_id == device)
            .await?;
        self.kick_elsewhere(user_id, Some(&req.device_id), KickReason::DeviceRevoked);
        let kicks: Kicks = self
            .sessions
            .read()
            .of_user(user_id)
            .iter()
            .filter(|s| *s.device_id == *req.device_id)
            .map(|s| (s.conn, KickReason::DeviceRevoked))
            .collect();
        if revoked == 0 && kicks.is_empty() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                "no signed-in device has this device_id",
            ));
        }
        self.forget_push_tokens(user_id, SignedOut::Device(&req.device_id))
            .await;
        tracing::warn!(
            user_id,
            tokens_revoked = revoked,
            sessions_kicked = kicks.len(),
            "device revoked"
        );
        self.audit.record(
            Entry::new(format!("user:{user_id}"), "user.device_revoke")
                .target(format!("user:{user_id}"))
                .detail(format!("device {}", req.device_id)),
        );
        let body = Body::RevokeDeviceOk(v1::RevokeDeviceOk {
            tokens_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
            sessions_kicked: u32::try_from(kicks.len()).unwrap_or(u32::MAX),
        });
        Ok((body, kicks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(device: &str, seen: u64, expires: u64) -> TokenRecord {
        TokenRecord {
            user_id: 1,
            device_id: device.into(),
            issued_at_ms: 0,
            expires_at_ms: expires,
            platform: 0,
            last_seen_ms: seen,
        }
    }

    #[test]
    fn a_new_token_revokes_its_devices_older_ones_expired_ones_and_the_least_seen() {
        let held = vec![
            ([1; 32], t("phone", 50, 1000)),
            ([2; 32], t("laptop", 10, 1000)),
            ([3; 32], t("tablet", 30, 1000)),
            ([4; 32], t("old", 90, 5)),
            ([5; 32], t("", 70, 1000)),
        ];
        let new = t("phone", 100, 2000);
        let stored = |_: &TokenHash, t: &TokenRecord| t.last_seen_ms.max(t.issued_at_ms);
        let mut r = tokens_to_revoke(&held, &new, None, 10, 100, &[], stored);
        r.sort();
        assert_eq!(r, vec![[1; 32], [4; 32]], "same device and expired");
        let mut r = tokens_to_revoke(&held, &new, None, 3, 100, &[], stored);
        r.sort();
        assert_eq!(
            r,
            vec![[1; 32], [2; 32], [4; 32]],
            "laptop was seen longest ago"
        );
        let mut r = tokens_to_revoke(&held, &new, None, 3, 100, &[[2; 32]], stored);
        r.sort();
        assert_eq!(
            r,
            vec![[1; 32], [3; 32], [4; 32]],
            "an online laptop goes after every offline device: the tablet goes"
        );
        // Seen "now" by the buffer, offline: still before any online device.
        let seen_now = |_: &TokenHash, _: &TokenRecord| 100;
        let mut r = tokens_to_revoke(&held, &new, None, 3, 100, &[[2; 32], [5; 32]], seen_now);
        r.sort();
        assert_eq!(r, vec![[1; 32], [3; 32], [4; 32]], "online ones stay");
        let r = tokens_to_revoke(&held, &new, Some([1; 32]), 10, 100, &[], stored);
        assert_eq!(r, vec![[4; 32]], "a refreshed token is kept");
        let blank = t("", 100, 2000);
        let r = tokens_to_revoke(&held, &blank, None, 10, 100, &[], stored);
        assert_eq!(r, vec![[4; 32]], "an empty device id names no device");
        let r = tokens_to_revoke(&held, &blank, Some([5; 32]), 10, 100, &[], stored);
        assert_eq!(
            r,
            vec![[4; 32]],
            "a nameless refreshed token is retired later"
        );
    }

    #[test]
    fn a_token_refreshed_lately_for_its_device_is_not_refreshed_again() {
        let issued = |device: &str, at: u64, expires: u64| TokenRecord {
            issued_at_ms: at,
            ..t(device, at, expires)
        };
        let old = [1; 32];
        let mut held = vec![
            (old, issued("phone", 0, 1000)),
            ([2; 32], issued("laptop", 600, 1600)),
        ];
        assert!(
            !refreshed_lately(&held, old, "phone", 600, 100),
            "none newer"
        );
        held.push(([3; 32], issued("phone", 600, 1600)));
        assert!(refreshed_lately(&held, old, "phone", 650, 100));
        assert!(
            !refreshed_lately(&held, old, "phone", 700, 100),
            "a part of the window later, another may be issued (a lost reply)"
        );
        assert!(
            !refreshed_lately(&held, [3; 32], "phone", 650, 100),
            "nothing newer than the newest"
        );
        let nameless = vec![(old, issued("", 0, 1000)), ([3; 32], issued("", 600, 1600))];
        assert!(
            !refreshed_lately(&nameless, old, "", 650, 100),
            "no device to ask"
        );
    }
}

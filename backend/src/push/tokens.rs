//! `RegisterPushToken` / `UnregisterPushToken`: a logged-in device's push token, stored per
//! (user, device id). Stored whether or not push is on, so turning it on later finds them.

use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, PushProvider};

use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, PushTokenRequest};
use crate::store::{PushTokenRecord, UserId};

/// Bytes of a push token, at most (APNs tokens are 64 hex digits, FCM's about 160 bytes, a Web
/// Push subscription a few hundred).
pub(crate) const PUSH_TOKEN_BYTES_MAX: usize = 4_096;

/// What a registration stores, if it is one the server accepts.
fn checked(req: &v1::RegisterPushToken) -> Result<PushTokenRecord, Refusal> {
    let invalid = |m: &str| Err(Refusal::new(ErrorCode::InvalidArgument, m));
    match PushProvider::try_from(req.provider) {
        Ok(PushProvider::Unspecified) | Err(_) => {
            return invalid("provider must be APNS, FCM, WEB_PUSH or OTHER");
        }
        Ok(_) => {}
    }
    if req.token.is_empty() || req.token.len() > PUSH_TOKEN_BYTES_MAX {
        return invalid("token must be 1 to 4096 bytes");
    }
    if !req.token.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("token must be printable ASCII without spaces");
    }
    Ok(PushTokenRecord {
        provider: req.provider,
        token: req.token.clone(),
        updated_ms: crate::time::now_ms(),
    })
}

impl Backend {
    pub(crate) async fn push_token(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        req: PushTokenRequest,
    ) {
        let device_id = self
            .sessions
            .read()
            .device_of(user, conn)
            .map(str::to_owned);
        let device_id = match device_id {
            None => {
                let refusal = Refusal::new(ErrorCode::NotAuthenticated, "the session has ended");
                return self.refuse(conn, request_id, refusal).await;
            }
            Some(d) if d.is_empty() => {
                let refusal = Refusal::new(
                    ErrorCode::InvalidArgument,
                    "push tokens belong to a device: log in with a device_id",
                );
                return self.refuse(conn, request_id, refusal).await;
            }
            Some(d) => d,
        };
        let put = match &req {
            PushTokenRequest::Register(r) => match checked(r) {
                Ok(record) => Some(record),
                Err(refusal) => return self.refuse(conn, request_id, refusal).await,
            },
            PushTokenRequest::Unregister(_) => None,
        };
        let Some(ticket) = self.read_ticket(conn, request_id).await else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let store = Arc::clone(&this.ports.push_tokens);
            let accounts = Arc::clone(&this.ports.accounts);
            let written = tokio::task::spawn_blocking(move || match put {
                Some(record) => {
                    forget_signed_out(&*store, &*accounts, user)?;
                    store
                        .put_push_token(user, &device_id, &record)
                        .map(|()| true)
                }
                None => store.remove_push_token(user, &device_id).map(|_| false),
            })
            .await;
            let body = match written {
                Ok(Ok(registered)) => Body::PushTokenOk(v1::PushTokenOk { registered }),
                Ok(Err(e)) => Body::Error(Refusal::unavailable(e).into_error()),
                Err(e) => Body::Error(Refusal::unavailable(e).into_error()),
            };
            this.reply(conn, request_id, body).await;
        });
    }
}

/// Push-token rows a registration looks through for devices signed out meanwhile, at most.
const PUSH_TOKENS_SCAN_MAX: usize = 256;

/// Removes the push tokens of the user's devices that no longer have a live login (expired,
/// or pushed out by newer devices: nothing else forgets those). Run at each registration, so a
/// user's rows stay about their devices, and the live devices are the ones the push resolver
/// finds among the first `push.devices_max`.
fn forget_signed_out(
    store: &dyn crate::store::PushTokenStore,
    accounts: &dyn crate::store::AccountStore,
    user: UserId,
) -> Result<(), crate::store::StoreError> {
    let rows = store.push_tokens(user, PUSH_TOKENS_SCAN_MAX)?;
    if rows.is_empty() {
        return Ok(());
    }
    let now = crate::time::now_ms();
    let logins = accounts.tokens_of_user(user, crate::accounts::TOKENS_SCAN_MAX)?;
    for (device, _) in rows {
        let live = logins
            .iter()
            .any(|(_, t)| t.device_id == device && t.expires_at_ms > now);
        if !live {
            store.remove_push_token(user, &device)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked() {
        let ok = v1::RegisterPushToken {
            provider: PushProvider::Apns as i32,
            token: "ab12".into(),
        };
        assert_eq!(checked(&ok).unwrap().token, "ab12");
        let bad = |provider: i32, token: &str| {
            checked(&v1::RegisterPushToken {
                provider,
                token: token.into(),
            })
            .unwrap_err()
            .code
        };
        assert_eq!(bad(0, "ab"), ErrorCode::InvalidArgument);
        assert_eq!(bad(99, "ab"), ErrorCode::InvalidArgument);
        assert_eq!(bad(2, ""), ErrorCode::InvalidArgument);
        assert_eq!(bad(2, "a b"), ErrorCode::InvalidArgument);
        assert_eq!(bad(2, "é"), ErrorCode::InvalidArgument);
        assert_eq!(
            bad(2, &"x".repeat(PUSH_TOKEN_BYTES_MAX + 1)),
            ErrorCode::InvalidArgument
        );
    }
}

//! What a login's token write leaves behind, followed through: the sessions still using a
//! token it revoked are kicked (no session outlives its token), and a refused login's token
//! is taken back (and the token a refresh replaced put back), so that a refused login leaves
//! the client the token it had.

use std::sync::Arc;

use ringchat_proto::v1::{self, KickReason};

use super::{Authenticated, RevokedToken};
use crate::Backend;
use crate::api::{ConnRef, ShardEvent};
use crate::store::{TokenHash, UserId};

impl Backend {
    /// Ends the sessions still using tokens a login revoked (`accounts::Authenticated::revoked`)
    /// but the login's own (`except`): here those the registry has, elsewhere through the link,
    /// where each node ends only the sessions of those devices whose token is gone.
    pub(crate) async fn kick_revoked(
        &self,
        user_id: UserId,
        revoked: &[RevokedToken],
        except: ConnRef,
    ) {
        if revoked.is_empty() {
            return;
        }
        let mut devices: Vec<&str> = revoked.iter().map(|r| r.device_id.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        for device in devices {
            self.kick_elsewhere(user_id, Some(device), KickReason::DeviceRevoked);
        }
        let here: Vec<ConnRef> = (self.sessions.read().of_user(user_id).iter())
            .filter(|s| s.conn != except && revoked.iter().any(|r| r.hash == s.token_hash))
            .map(|s| s.conn)
            .collect();
        if !here.is_empty() {
            tracing::info!(
                user_id,
                sessions = here.len(),
                "a login revoked tokens in use"
            );
        }
        for target in here {
            let event = ShardEvent::Kick {
                conn: target.conn,
                reason: KickReason::DeviceRevoked,
            };
            self.send_to_shard(target.shard, event).await;
        }
    }

    /// A refused login's token (a password login's, a refresh's) was written already: nobody
    /// got it, so it goes, or it would count as a device. A nameless refresh revoked the token
    /// it was made from in the same write: that one is put back in the write that removes the
    /// fresh one (only while the fresh one is still there: a revocation since ends both), or the
    /// client would be left with none. Returns the token put back, if any.
    pub(crate) async fn take_back_token(
        &self,
        auth: &Authenticated,
        body: &v1::Login,
    ) -> Option<TokenHash> {
        let issued =
            auth.refreshed || matches!(body.credential, Some(v1::login::Credential::Password(_)));
        if !issued {
            return None;
        }
        let (store, hash, user_id) = (
            Arc::clone(&self.ports.accounts),
            auth.token_hash,
            auth.user_id,
        );
        let restore = auth.restore.clone();
        let taken_back = tokio::task::spawn_blocking(move || match &restore {
            Some((old, record)) => store
                .replace_tokens(user_id, &[hash], Some((old, record)), Some(&hash))
                .map(|put_back| put_back.then_some(*old)),
            None => store.remove_token(&hash).map(|()| None),
        })
        .await;
        match taken_back {
            Ok(Ok(restored)) => restored,
            _ => {
                tracing::warn!(user_id, "a refused login's token stays");
                None
            }
        }
    }
}

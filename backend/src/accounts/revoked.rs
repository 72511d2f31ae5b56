//! What a login's token write leaves behind, followed through: the sessions still using a
//! token it revoked are kicked (no session outlives its token), a refused login's token is
//! taken back, and a nameless refresh's old token goes only once its successor's session is
//! open, so that a refused login leaves the client the token it had.

use std::sync::Arc;

use ringchat_proto::v1::{self, KickReason};

use super::{Authenticated, Refusal, RevokedToken};
use crate::Backend;
use crate::api::{ConnRef, ShardEvent};
use crate::store::UserId;

impl Backend {
    /// Ends the sessions still using tokens a login revoked (`accounts::Authenticated::revoked`)
    /// but the login's own (`except`): here those the registry has, elsewhere through the link,
    /// where each node ends only the sessions of those devices whose token is gone, but
    /// `replacing`'s (the named device logging in: the login kicks it there with REPLACED).
    pub(crate) async fn kick_revoked(
        &self,
        user_id: UserId,
        revoked: &[RevokedToken],
        except: ConnRef,
        replacing: Option<&str>,
    ) {
        if revoked.is_empty() {
            return;
        }
        let mut devices: Vec<&str> = revoked.iter().map(|r| r.device_id.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        // The named device logging in gets its own kick elsewhere (`Kicked{REPLACED}`).
        devices.retain(|d| d.is_empty() || Some(*d) != replacing);
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
    /// got it, so it goes, or it would count as a device. The token a refresh was made from is
    /// still there (`Authenticated::retires`): the client keeps the token it had.
    pub(crate) async fn take_back_token(&self, auth: &Authenticated, body: &v1::Login) {
        let issued =
            auth.refreshed || matches!(body.credential, Some(v1::login::Credential::Password(_)));
        if !issued {
            return;
        }
        let (store, hash) = (Arc::clone(&self.ports.accounts), auth.token_hash);
        let taken_back = tokio::task::spawn_blocking(move || store.remove_token(&hash)).await;
        if !matches!(taken_back, Ok(Ok(()))) {
            tracing::warn!(user_id = auth.user_id, "a refused login's token stays");
        }
    }

    /// Once a nameless refresh's session is open, the token it was made from goes, and the
    /// sessions still using it are kicked (nothing else could end that token). A store error
    /// refuses the login: the caller takes the fresh token back, so the client keeps the old.
    pub(crate) async fn retire_refreshed(
        &self,
        auth: &Authenticated,
        conn: ConnRef,
    ) -> Result<(), Refusal> {
        let Some(old) = auth.retires else {
            return Ok(());
        };
        let store = Arc::clone(&self.ports.accounts);
        match tokio::task::spawn_blocking(move || store.remove_token(&old)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(Refusal::unavailable(e)),
        }
        let retired = [RevokedToken {
            hash: old,
            device_id: String::new(),
        }];
        self.kick_revoked(auth.user_id, &retired, conn, None).await;
        Ok(())
    }
}

//! A device's push token lives as long as its login: logging out, revoking the device, a
//! password change or reset (every other device signed out) and an operator's disable forget
//! the tokens of the devices signed out. The resolver already pushes only to devices with a
//! live login; forgetting the token as well means a device that signs in again later is not
//! pushed to until it registers anew, and no token outlives the login it was given under.

use std::sync::Arc;

use crate::Backend;
use crate::accounts::TOKENS_SCAN_MAX;
use crate::store::{StoreError, UserId};

/// Which of a user's devices were signed out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SignedOut<'a> {
    /// This device only.
    Device(&'a str),
    /// Every device but this one (the one a password was changed on).
    AllBut(&'a str),
    /// Every device.
    All,
}

impl SignedOut<'_> {
    fn covers(&self, device: &str) -> bool {
        match self {
            Self::Device(d) => *d == device,
            Self::AllBut(d) => *d != device,
            Self::All => true,
        }
    }
}

impl Backend {
    /// Forgets the push tokens of the devices `which` names. A failure is logged, not returned:
    /// the login is gone already, and the resolver never pushes to a device without one.
    pub(crate) async fn forget_push_tokens(&self, user: UserId, which: SignedOut<'_>) {
        if matches!(which, SignedOut::Device("")) {
            return; // a login without a device id has no push token
        }
        let store = Arc::clone(&self.ports.push_tokens);
        let held =
            match tokio::task::spawn_blocking(move || store.push_tokens(user, TOKENS_SCAN_MAX))
                .await
            {
                Ok(Ok(held)) => held,
                Ok(Err(err)) => return tracing::warn!(%err, user, "could not read push tokens"),
                Err(err) => return tracing::warn!(%err, user, "could not read push tokens"),
            };
        let gone: Vec<String> = held
            .into_iter()
            .map(|(device, _)| device)
            .filter(|d| which.covers(d))
            .collect();
        if gone.is_empty() {
            return;
        }
        let store = Arc::clone(&self.ports.push_tokens);
        let removed = tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
            let mut n = 0;
            for device in &gone {
                n += usize::from(store.remove_push_token(user, device)?);
            }
            Ok(n)
        })
        .await;
        match removed {
            Ok(Ok(n)) => tracing::info!(user, push_tokens_removed = n, "push tokens forgotten"),
            Ok(Err(err)) => tracing::warn!(%err, user, "could not forget push tokens"),
            Err(err) => tracing::warn!(%err, user, "could not forget push tokens"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SignedOut;

    #[test]
    fn signed_out_devices_are_named() {
        assert!(SignedOut::Device("a").covers("a"));
        assert!(!SignedOut::Device("a").covers("b"));
        assert!(SignedOut::AllBut("a").covers("b"));
        assert!(!SignedOut::AllBut("a").covers("a"));
        assert!(SignedOut::All.covers("a"));
    }
}

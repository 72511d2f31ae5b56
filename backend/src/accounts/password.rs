//! Secrets at rest: argon2id password hashes (PHC strings) and SHA-256 of bearer tokens.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::AccountsConfig;
use crate::store::TokenHash;

fn argon2(cfg: &AccountsConfig) -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_iterations, 1, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub(crate) fn hash_password(cfg: &AccountsConfig, password: &str) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2(cfg)
        .map_err(|e| e.to_string())?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// [`hash_password`] on a blocking thread; the caller holds a hashing permit of its lane.
pub(super) async fn hash_blocking(
    cfg: &AccountsConfig,
    password: String,
) -> Result<String, super::Refusal> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || hash_password(&cfg, &password))
        .await
        .map_err(super::Refusal::unavailable)?
        .map_err(super::Refusal::unavailable)
}

/// Verifies with the parameters stored in the hash, so raising the cost later keeps old hashes valid.
pub(crate) fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh bearer token (256 random bits) and its hash, the only form that is stored.
pub(crate) fn new_token() -> Result<(String, TokenHash), getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_with_their_own_parameters() {
        let light = AccountsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AccountsConfig::default()
        };
        let hash = hash_password(&light, "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, ha) = new_token().unwrap();
        let (b, hb) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), ha);
        assert_ne!(ha, hb);
        assert!(a.len() >= 40);
    }
}

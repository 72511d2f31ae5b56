//! Secrets at rest: argon2id password hashes (PHC strings) and SHA-256 of bearer tokens.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::AccountsConfig;
use crate::store::TokenHash;

/// Lanes argon2 runs with: one, so a hash is one thread's work (`accounts.hash_concurrency`
/// counts hashes, and so threads).
const ARGON2_LANES: u32 = 1;

fn argon2(cfg: &AccountsConfig) -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(
        cfg.argon2_memory_kib,
        cfg.argon2_iterations,
        ARGON2_LANES,
        None,
    )?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Whether a stored hash was made with other parameters (algorithm, version, memory, passes,
/// lanes) than the configured ones: verified, it is hashed again with these
/// (`Accounts::rehash_later`). A hash that does not parse is left alone: it never verifies.
pub(crate) fn needs_rehash(stored: &str, cfg: &AccountsConfig) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id)
        || parsed.version != Some(Version::V0x13.into())
        || params.m_cost() != cfg.argon2_memory_kib
        || params.t_cost() != cfg.argon2_iterations
        || params.p_cost() != ARGON2_LANES
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
    fn a_hash_of_other_parameters_needs_a_rehash() {
        let light = AccountsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AccountsConfig::default()
        };
        let hash = hash_password(&light, "correct horse").unwrap();
        assert!(!needs_rehash(&hash, &light));
        let more_memory = AccountsConfig {
            argon2_memory_kib: 128,
            ..light.clone()
        };
        let more_passes = AccountsConfig {
            argon2_iterations: 2,
            ..light.clone()
        };
        assert!(needs_rehash(&hash, &more_memory));
        assert!(needs_rehash(&hash, &more_passes));
        // Other lanes, another algorithm or version: the configured ones win too.
        let lanes = hash.replace(",p=1$", ",p=2$");
        assert!(needs_rehash(&lanes, &light), "{lanes}");
        let argon2i = hash.replace("$argon2id$", "$argon2i$");
        assert!(needs_rehash(&argon2i, &light));
        let v16 = hash.replace("$v=19$", "$v=16$");
        assert!(needs_rehash(&v16, &light));
        assert!(!needs_rehash("not a hash", &light));
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

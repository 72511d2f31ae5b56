//! What a username, an e-mail address, a password and a device id may be.

use ringchat_proto::v1::ErrorCode;

use super::Refusal;
use crate::config::AccountsConfig;

pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 32;
pub const EMAIL_BYTES_MAX: usize = 254;
pub const DEVICE_ID_BYTES_MAX: usize = 128;

pub(crate) fn validate_username(name: &str) -> Result<(), Refusal> {
    let chars = name.chars().count();
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !(USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&chars)
        || !allowed
        || !starts_with_letter
    {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "username must be {USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} characters of a-z, A-Z, 0-9, '_', '.', '-', starting with a letter"
            ),
        ));
    }
    Ok(())
}

/// A device id as a client names its installation: at most [`DEVICE_ID_BYTES_MAX`] bytes, no
/// control characters (the one text rule, `text.rs`: it is stored and shown to the user).
pub(crate) fn validate_device_id(device_id: &str) -> Result<(), Refusal> {
    if device_id.len() > DEVICE_ID_BYTES_MAX || !crate::text::no_controls(device_id, false) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("device_id: at most {DEVICE_ID_BYTES_MAX} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// An empty address is valid (none given); callers that need one check for that.
pub(crate) fn validate_email(email: &str) -> Result<(), Refusal> {
    if email.is_empty() {
        return Ok(());
    }
    let plausible = email.len() <= EMAIL_BYTES_MAX
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "email is not a valid address",
        ));
    }
    Ok(())
}

pub(crate) fn password(cfg: &AccountsConfig, password: &str) -> Result<(), Refusal> {
    let (min, max) = (cfg.password_bytes_min, cfg.password_bytes_max);
    if !(min..=max).contains(&password.len()) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("password must be {min} to {max} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        assert!(validate_username("alice_01").is_ok());
        assert!(validate_username("al").is_err());
        assert!(validate_username("1alice").is_err());
        assert!(validate_username("ali ce").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn email_rules() {
        assert!(validate_email("").is_ok());
        assert!(validate_email("a@b.io").is_ok());
        assert!(validate_email("a@b").is_err());
        assert!(validate_email("@b.io").is_err());
        assert!(validate_email("a@b.io\r\nBcc: x@y.io").is_err());
    }
}

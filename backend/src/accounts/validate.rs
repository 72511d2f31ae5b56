//! What a username, an e-mail address, a password and a device id may be.

use ringchat_proto::v1::ErrorCode;

use super::Refusal;
use crate::config::AccountsConfig;

pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 32;
pub const EMAIL_BYTES_MAX: usize = 254;
pub const DEVICE_ID_BYTES_MAX: usize = 128;
/// The largest `accounts.password_bytes_max` the config accepts, in bytes. A login, and the
/// old password of a change, are checked against it, never against the live maximum: a
/// password set while the maximum was higher keeps working after it is lowered.
pub const PASSWORD_BYTES_CEILING: usize = 1024;

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
///
/// The mailer's own parser (lettre's `Address`, which `email.rs` sends to) decides, so an
/// address accepted here is one a code can be mailed to; on top of it a dotted domain, and
/// no whitespace or control characters.
pub(crate) fn validate_email(email: &str) -> Result<(), Refusal> {
    if email.is_empty() {
        return Ok(());
    }
    let plausible = email.len() <= EMAIL_BYTES_MAX
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .parse::<lettre::Address>()
            .is_ok_and(|a| a.domain().contains('.'));
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
        // What lettre, which mails the code, would refuse.
        assert!(validate_email("a@b@c.io").is_err());
        assert!(validate_email("a@.io").is_err());
        assert!(validate_email("a..b@c.io").is_err());
        assert!(validate_email("Alice <a@b.io>").is_err());
    }
}

//! What `ringchat admin …` does: add an operator, add or revoke an API key. It works whether or
//! not the server runs (the credentials file has its own lock, and the server re-reads it), and
//! queues an audit entry for each change, which the server moves into the audit log.

use std::path::Path;

use super::auth::Role;
use super::auth::credentials::{self, AdminUser, ApiKey, CREDENTIALS_MAX, CredentialFile};
use crate::config::AccountsConfig;
use crate::store::AuditRecord;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} exists already")]
    Exists(String),
    #[error("no {0}")]
    Missing(String),
    #[error("the admin credentials file: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn queue_audit(
    file: &CredentialFile,
    actor: &str,
    action: &str,
    target: String,
    detail: &str,
) {
    let record = AuditRecord {
        at_ms: crate::time::now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target,
        from: String::new(),
        detail: detail.to_owned(),
    };
    if let Err(err) = file.queue_audit(&record) {
        tracing::warn!(%err, "the change is made but its audit entry could not be queued");
    }
}

/// Adds an operator, or replaces the password and role of an existing one (`replace`).
pub fn add_user(
    data_dir: &Path,
    accounts: &AccountsConfig,
    name: &str,
    role: Role,
    password: &str,
    replace: bool,
    actor: &str,
) -> Result<(), CliError> {
    credentials::check_name(name).map_err(CliError::Invalid)?;
    if password.len() < accounts.password_bytes_min.max(8) || password.len() > 1024 {
        return Err(CliError::Invalid(format!(
            "an operator's password is {} to 1024 bytes long",
            accounts.password_bytes_min.max(8)
        )));
    }
    let hash = crate::accounts::hash_password(accounts, password).map_err(CliError::Invalid)?;
    let file = CredentialFile::new(data_dir);
    let replaced = file.update(|c| {
        let user = AdminUser {
            name: name.to_owned(),
            role,
            password_hash: hash,
            created_ms: crate::time::now_ms(),
        };
        let full = c.users.len() >= CREDENTIALS_MAX;
        match c.users.iter_mut().find(|u| u.name == name) {
            Some(_) if !replace => Err(CliError::Exists(format!("operator {name}"))),
            Some(existing) => {
                *existing = user;
                Ok(true)
            }
            None if full => Err(CliError::Invalid(format!(
                "at most {CREDENTIALS_MAX} operators"
            ))),
            None => {
                c.users.push(user);
                Ok(false)
            }
        }
    })?;
    let action = if replaced {
        "admin.user_replace"
    } else {
        "admin.user_add"
    };
    queue_audit(&file, actor, action, format!("admin:{name}"), role.as_str());
    Ok(())
}

/// Removes an operator; their sessions end at their next request.
pub fn remove_user(data_dir: &Path, name: &str, actor: &str) -> Result<(), CliError> {
    let file = CredentialFile::new(data_dir);
    file.update(|c| {
        let before = c.users.len();
        c.users.retain(|u| u.name != name);
        if c.users.len() == before {
            return Err(CliError::Missing(format!("operator named {name}")));
        }
        Ok(())
    })?;
    queue_audit(
        &file,
        actor,
        "admin.user_remove",
        format!("admin:{name}"),
        "",
    );
    Ok(())
}

/// Adds an API key; returns the key, which is shown once and stored only as its hash.
pub fn add_key(data_dir: &Path, name: &str, role: Role, actor: &str) -> Result<String, CliError> {
    credentials::check_name(name).map_err(CliError::Invalid)?;
    let (secret, hash) = credentials::new_api_key()?;
    let file = CredentialFile::new(data_dir);
    file.update(|c| {
        if c.keys.iter().any(|k| k.name == name) {
            return Err(CliError::Exists(format!("an API key named {name}")));
        }
        if c.keys.len() >= CREDENTIALS_MAX {
            return Err(CliError::Invalid(format!(
                "at most {CREDENTIALS_MAX} API keys"
            )));
        }
        c.keys.push(ApiKey {
            name: name.to_owned(),
            role,
            key_sha256: hash,
            created_ms: crate::time::now_ms(),
            created_by: actor.to_owned(),
            maker_created_ms: None,
        });
        Ok(())
    })?;
    queue_audit(
        &file,
        actor,
        "admin.key_add",
        format!("key:{name}"),
        role.as_str(),
    );
    Ok(secret)
}

/// Revokes an API key: the server refuses it from its next request on.
pub fn revoke_key(data_dir: &Path, name: &str, actor: &str) -> Result<(), CliError> {
    let file = CredentialFile::new(data_dir);
    file.update(|c| {
        let before = c.keys.len();
        c.keys.retain(|k| k.name != name);
        if c.keys.len() == before {
            return Err(CliError::Missing(format!("API key named {name}")));
        }
        Ok(())
    })?;
    queue_audit(&file, actor, "admin.key_revoke", format!("key:{name}"), "");
    Ok(())
}

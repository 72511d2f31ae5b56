//! `ringchat admin add-chat-user NAME`: creates a chat user from the command line. It opens the
//! store itself, so it works only while the server is stopped (the running server holds the
//! data dir's lock); with the server running, create users with `POST /api/users` or the
//! dashboard, which need no second writer on the store. Same rules as every other way in
//! (`accounts::check_new_account`), audited like the other admin CLI commands.

use std::path::Path;

use super::super::auth::credentials::CredentialFile;
use super::super::cli::{CliError, queue_audit};
use crate::config::Settings;
use crate::store::StoreError;

/// Creates the user; returns its id.
pub fn add_chat_user(
    settings: &Settings,
    name: &str,
    password: &str,
    email: &str,
    actor: &str,
) -> Result<u64, CliError> {
    crate::accounts::check_new_account(&settings.accounts, name, password, email)
        .map_err(|r| CliError::Invalid(r.message))?;
    let dir: &Path = &settings.storage.data_dir;
    // The configured store (not always the embedded one: on PostgreSQL the user goes there).
    let ports = crate::store::open(&settings.storage).map_err(|e| match e {
        StoreError::DirInUse(_) => CliError::Invalid(
            "the server is running with this data dir: create the user with POST /api/users or the dashboard, or stop the server first".into(),
        ),
        e => CliError::Invalid(format!("opening the store: {e}")),
    })?;
    let hash =
        crate::accounts::hash_password(&settings.accounts, password).map_err(CliError::Invalid)?;
    let user = ports
        .accounts
        .create_user(name, &hash, email, crate::time::now_ms())
        .map_err(|e| match e {
            StoreError::UsernameTaken => CliError::Exists(format!("a user named {name}")),
            StoreError::EmailTaken => CliError::Exists(format!("a user with address {email}")),
            e => CliError::Invalid(format!("storing the user: {e}")),
        })?;
    queue_audit(
        &CredentialFile::new(dir),
        actor,
        "user.create",
        format!("user:{}", user.user_id),
        &format!("username {name}"),
    );
    Ok(user.user_id)
}

//! The data dir's lock: one ringchat process at a time may use a data dir (its node files:
//! admin credentials, config overrides, activity counts, logs), whichever store it runs on.

use std::path::Path;

use super::StoreError;

/// Name of the lock file in the data dir.
const LOCK_FILE: &str = "ringchat.lock";

/// Takes the data dir's lock (creating the dir): one process at a time may use a data dir. The
/// operating system releases it when the process ends, however it ends.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::DirInUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(err)) => Err(StoreError::Io(err)),
    }
}

//! The newest of fjall's journals, open, found again once fjall has started the next one: what
//! the background journal syncer syncs and the journal prefill fills.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use super::journal_repair::journals;

pub(super) struct NewestJournal {
    dir: PathBuf,
    /// Opened for writing too (never appending, truncating or creating).
    writable: bool,
    open: Option<(u64, File)>,
}

impl NewestJournal {
    pub(super) fn new(dir: PathBuf, writable: bool) -> Self {
        Self {
            dir,
            writable,
            open: None,
        }
    }

    /// The open journal, unless fjall has started the next one (one `stat` per call): then
    /// the newest in the directory. `None` while there is none.
    pub(super) fn find(&mut self) -> std::io::Result<Option<(u64, &File)>> {
        let stale = match &self.open {
            None => true,
            Some((id, _)) => self.dir.join(format!("{}.jnl", id + 1)).exists(),
        };
        if stale {
            self.open = None;
            let newest = journals(&self.dir).map_err(std::io::Error::other)?.pop();
            if let Some((id, path)) = newest {
                let file = OpenOptions::new()
                    .read(true)
                    .write(self.writable)
                    .open(path)?;
                self.open = Some((id, file));
            }
        }
        Ok(self.open.as_ref().map(|(id, file)| (*id, file)))
    }

    /// Drops the open journal (after a failure): the next `find` opens the newest again.
    pub(super) fn forget(&mut self) {
        self.open = None;
    }
}

//! The local disk adapter: each object is a file under the root, its key the relative path.
//!
//! Writes go to a temporary file in `{root}/.tmp/`, which is fsync'ed, renamed over the key's
//! path, and the directory fsync'ed: an object is whole and durable when `put` or `finish`
//! returns, and a crash leaves at worst a temporary file, which is never listed (names starting
//! with `.` are not keys) and is removed when the adapter opens again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;

use super::{
    ByteStream, FileStorage, Listed, ObjectMeta, ObjectWriter, StorageError, valid_key,
    valid_segment,
};

/// Where temporary files are written, under the root (same file system: the rename is atomic).
const TMP_DIR: &str = ".tmp";
/// Bytes read from disk at a time for a download: the bound on each piece of a `get` stream.
pub const READ_PIECE_BYTES: u64 = 64 * 1024;
/// Renames retried when a concurrent delete removed the (empty) directory just created.
const RENAME_TRIES: usize = 3;
/// How long a walk's page may use the directories an earlier page read (`list_walk`): a key
/// made under one of them since is missed by the walk for at most this long.
const WALK_SNAPSHOT_AGE: Duration = Duration::from_secs(10);
/// Walks (prefixes) whose directories are kept at once, at most; the oldest goes first.
const WALKS_MAX: usize = 16;

/// A walk's directories, read once and used by its pages (`list_walk`), or by one listing.
struct Snapshots {
    taken: Instant,
    /// `dir_key` plus `*` plus the name prefix → the sorted children.
    dirs: HashMap<String, Arc<Vec<String>>>,
}

impl Snapshots {
    fn new() -> Self {
        Self {
            taken: Instant::now(),
            dirs: HashMap::new(),
        }
    }

    fn children(
        &mut self,
        inner: &Inner,
        dir_key: &str,
        name_prefix: &str,
    ) -> io::Result<Arc<Vec<String>>> {
        let id = format!("{dir_key}*{name_prefix}");
        if let Some(children) = self.dirs.get(&id) {
            return Ok(Arc::clone(children));
        }
        let children = Arc::new(inner.read_children(dir_key, name_prefix)?);
        self.dirs.insert(id, Arc::clone(&children));
        Ok(children)
    }

    /// Forgets every directory but those `key` is in: the next page starts there.
    fn keep_ancestors_of(&mut self, key: &str) {
        self.dirs.retain(|id, _| {
            let dir_key = id.split_once('*').map_or("", |(d, _)| d);
            key.starts_with(dir_key)
        });
    }
}

pub struct LocalStorage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    /// Temporary names: a random prefix per open and a counter.
    nonce: u64,
    counter: AtomicU64,
    /// The directories each walk (by prefix) read for its last page (`list_walk`).
    walks: Mutex<HashMap<String, Snapshots>>,
    /// Directory entries listings have read: what a walk costs, for tests.
    #[cfg(test)]
    entries_read: AtomicU64,
}

impl LocalStorage {
    /// Opens (creating) the root and removes temporary files a crash left behind.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(root).map_err(io_error)?;
        let tmp = root.join(TMP_DIR);
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        fs::create_dir(&tmp).map_err(io_error)?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| StorageError::Failed(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                tmp,
                nonce: u64::from_le_bytes(nonce),
                counter: AtomicU64::new(0),
                walks: Mutex::new(HashMap::new()),
                #[cfg(test)]
                entries_read: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Directory entries read by listings since the adapter opened.
    #[cfg(test)]
    pub fn entries_read(&self) -> u64 {
        self.inner.entries_read.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        if !valid_key(key) {
            return Err(StorageError::Failed(format!("not a storage key: {key:?}")));
        }
        Ok(self.root.join(key))
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{:016x}-{n}", self.nonce))
    }

    /// Moves a synced temporary file to `target`, durably.
    fn publish(&self, tmp: &Path, target: &Path) -> io::Result<()> {
        let parent = target.parent().expect("a key has a parent: the root");
        let mut tries = 0;
        loop {
            ensure_dir(&self.root, parent)?;
            match fs::rename(tmp, target) {
                Ok(()) => break,
                // A delete pruned the empty directory in between: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries + 1 < RENAME_TRIES => {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        sync_dir(parent)
    }

    fn put_blocking(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let target = self.path(key)?;
        let tmp = self.temp_path();
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            self.publish(&tmp, &target)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io_error)
    }

    fn list_blocking(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        dirs: &mut Snapshots,
    ) -> Result<Vec<Listed>, StorageError> {
        // Whole segments as in a key; the last one may be partial or empty.
        let (segments, last) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dirs_ok = segments.is_empty() || segments.split('/').all(valid_segment);
        if !dirs_ok || !(last.is_empty() || valid_segment(last)) {
            return Err(StorageError::Failed(format!(
                "not a storage prefix: {prefix:?}"
            )));
        }
        let (dir_key, name_prefix) = match prefix.rfind('/') {
            Some(i) => prefix.split_at(i + 1),
            None => ("", prefix),
        };
        let mut out = Vec::new();
        self.walk(dir_key, name_prefix, after, limit, &mut out, dirs)
            .map_err(io_error)?;
        Ok(out)
    }

    /// A page of a walk ([`FileStorage::list_walk`]): the directories read for the walk's
    /// earlier pages are used again while younger than [`WALK_SNAPSHOT_AGE`].
    fn list_walk_blocking(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        let kept = after.and_then(|_| {
            self.walks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(prefix)
                .filter(|s| s.taken.elapsed() < WALK_SNAPSHOT_AGE)
        });
        let mut dirs = kept.unwrap_or_else(Snapshots::new);
        let page = self.list_blocking(prefix, after, limit, &mut dirs)?;
        let Some(last) = page.last() else {
            return Ok(page);
        };
        // What the next page reads again: the directories on the way to the last key.
        dirs.keep_ancestors_of(&last.key);
        let mut walks = self.walks.lock().unwrap_or_else(|p| p.into_inner());
        if walks.len() >= WALKS_MAX
            && let Some(oldest) = walks
                .iter()
                .min_by_key(|(_, s)| s.taken)
                .map(|(k, _)| k.clone())
        {
            walks.remove(&oldest);
        }
        walks.insert(prefix.to_owned(), dirs);
        Ok(page)
    }

    /// Lists `dir_key` (a key prefix ending in `/`, or empty for the root) in key order, each
    /// subdirectory sorted as its name plus `/`, skipping what sorts at or before `after`
    /// without reading it. Directories are read through `dirs` (a walk's snapshots).
    fn walk(
        &self,
        dir_key: &str,
        name_prefix: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<Listed>,
        dirs: &mut Snapshots,
    ) -> io::Result<()> {
        let children = dirs.children(self, dir_key, name_prefix)?;
        for key in children.iter() {
            if out.len() >= limit {
                break;
            }
            if key.ends_with('/') {
                // Everything inside sorts after `key` and starts with it.
                if let Some(a) = after
                    && a >= key.as_str()
                    && !a.starts_with(key.as_str())
                {
                    continue;
                }
                self.walk(key, "", after, limit, out, dirs)?;
            } else if after.is_none_or(|a| key.as_str() > a) {
                match fs::metadata(self.root.join(key)) {
                    Ok(meta) => out.push(Listed {
                        key: key.clone(),
                        meta: object_meta(&meta),
                    }),
                    // Deleted since the directory was read.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// A directory's entries that are keys or directories, as keys (a directory's with its
    /// trailing `/`), sorted; none for a directory that is not there.
    fn read_children(&self, dir_key: &str, name_prefix: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(self.root.join(dir_key)) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry?;
            #[cfg(test)]
            self.entries_read.fetch_add(1, Ordering::Relaxed);
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !valid_segment(&name) || !name.starts_with(name_prefix) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                children.push(format!("{dir_key}{name}/"));
            } else if kind.is_file() {
                children.push(format!("{dir_key}{name}"));
            }
        }
        children.sort_unstable();
        Ok(children)
    }

    fn delete_blocking(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        // Empty directories go too, so that removed uploads leave nothing behind. A put racing
        // for the same directory makes it again (`publish`).
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Creates `dir` and any missing parents under `root`, each made durable in its parent.
fn ensure_dir(root: &Path, dir: &Path) -> io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(root);
    ensure_dir(root, parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn object_meta(meta: &fs::Metadata) -> ObjectMeta {
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ObjectMeta {
        size_bytes: meta.len(),
        modified_ms,
    }
}

fn io_error(e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        return StorageError::NotFound;
    }
    match rustix::io::Errno::from_io_error(&e) {
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT) => StorageError::Full,
        _ => StorageError::Failed(e.to_string()),
    }
}

/// Runs blocking file work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Failed(format!("file task: {e}")))?
}

#[async_trait::async_trait]
impl FileStorage for LocalStorage {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let (inner, key) = (Arc::clone(&self.inner), key.to_owned());
        blocking(move || inner.put_blocking(&key, &bytes)).await
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let target = self.inner.path(key)?;
        let tmp = self.inner.temp_path();
        let path = tmp.clone();
        let file = blocking(move || File::create(&path).map_err(io_error)).await?;
        Ok(Box::new(LocalWriter {
            inner: Arc::clone(&self.inner),
            file: Some(file),
            tmp,
            target,
            done: false,
        }))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let path = self.inner.path(key)?;
        let (meta, file, start, end) = blocking(move || {
            let mut file = File::open(&path).map_err(io_error)?;
            let meta = file.metadata().map_err(io_error)?;
            if !meta.is_file() {
                return Err(StorageError::NotFound);
            }
            let size = meta.len();
            let (start, end) = match range {
                None => (0, size),
                Some(r) if r.start > size => return Err(StorageError::BadRange),
                Some(r) => (r.start, r.end.min(size).max(r.start)),
            };
            file.seek(SeekFrom::Start(start)).map_err(io_error)?;
            Ok((object_meta(&meta), file, start, end))
        })
        .await?;
        let state = (Some(file), end - start);
        let stream = futures_util::stream::unfold(state, |(file, left)| async move {
            let mut file = file?;
            if left == 0 {
                return None;
            }
            let want = left.min(READ_PIECE_BYTES);
            let read = blocking(move || {
                let mut buf = vec![0u8; want as usize];
                let got = file.read(&mut buf).map_err(io_error)?;
                buf.truncate(got);
                Ok((file, buf))
            })
            .await;
            match read {
                Ok((_, buf)) if buf.is_empty() => Some((
                    Err(StorageError::Failed("the file ended early".into())),
                    (None, 0),
                )),
                Ok((file, buf)) => {
                    let n = buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), (Some(file), left - n)))
                }
                Err(e) => Some((Err(e), (None, 0))),
            }
        });
        Ok((meta, Box::pin(stream)))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let path = self.inner.path(key)?;
        blocking(move || {
            let meta = fs::metadata(&path).map_err(io_error)?;
            if meta.is_file() {
                Ok(object_meta(&meta))
            } else {
                Err(StorageError::NotFound)
            }
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        let inner = Arc::clone(&self.inner);
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        blocking(move || {
            inner.list_blocking(&prefix, after.as_deref(), limit, &mut Snapshots::new())
        })
        .await
    }

    async fn list_walk(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        let inner = Arc::clone(&self.inner);
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        blocking(move || inner.list_walk_blocking(&prefix, after.as_deref(), limit)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (inner, key) = (Arc::clone(&self.inner), key.to_owned());
        blocking(move || inner.delete_blocking(&key)).await
    }
}

/// An object being written to its temporary file.
struct LocalWriter {
    inner: Arc<Inner>,
    /// Out while a write runs on a blocking thread.
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    /// Published or aborted: nothing for `drop` to remove.
    done: bool,
}

impl LocalWriter {
    fn take_file(&mut self) -> Result<File, StorageError> {
        self.file
            .take()
            .ok_or_else(|| StorageError::Failed("an earlier write failed".into()))
    }
}

#[async_trait::async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        let mut file = self.take_file()?;
        let file = blocking(move || {
            file.write_all(&bytes).map_err(io_error)?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        let file = self.take_file()?;
        let (inner, tmp, target) = (
            Arc::clone(&self.inner),
            self.tmp.clone(),
            self.target.clone(),
        );
        let meta = blocking(move || {
            file.sync_all().map_err(io_error)?;
            let meta = object_meta(&file.metadata().map_err(io_error)?);
            drop(file);
            inner.publish(&tmp, &target).map_err(io_error)?;
            Ok(meta)
        })
        .await?;
        self.done = true;
        Ok(meta)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.file = None;
        let tmp = self.tmp.clone();
        self.done = true;
        blocking(move || match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(e)),
            _ => Ok(()),
        })
        .await
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.done {
            // Neither finished nor aborted: nothing may appear under the key.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests;

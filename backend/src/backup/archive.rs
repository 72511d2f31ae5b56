//! A backup directory: `manifest.json` (format version, time, source, and per part its record
//! count, checksum, file size and file hash) and one file per part (`NAME.dump`: frames of a
//! little-endian `u32` length and one postcard-encoded [`DumpItem`]).
//!
//! It is written as `NAME.partial` and renamed when complete, so a directory with a manifest is
//! a whole backup. Read back, it is a [`DumpView`] whose resume key is a byte offset: restore is
//! a copy from it (`copy.rs`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::{BackupError, create_private_dir_all, create_private_file, sync_parent, write_atomic};
use crate::store::StoreError;
use crate::store::dump::{DumpItem, DumpPage, DumpView, Part, ResumeKey, Tally};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;
/// Largest frame a reader accepts: a corrupt length fails here instead of allocating it.
const FRAME_BYTES_MAX: u32 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub created_ms: u64,
    /// `created_ms` as RFC 3339, for people.
    pub created: String,
    /// What was backed up (`embedded:DIR`).
    pub source: String,
    pub parts: Vec<PartEntry>,
    /// The files of local file storage in `files/` (`backup/files.rs`); absent with S3
    /// storage (the bucket is its own backup) or files off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<super::files::FilesCopy>,
    /// The server's state from the data dir in `state/` (`backup/state.rs`); absent in
    /// backups written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<super::state::StateCopy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartEntry {
    pub part: Part,
    pub records: u64,
    /// [`Tally::checksum`], hex.
    pub checksum: String,
    pub file: String,
    pub bytes: u64,
    /// xxh3 of the file's bytes, hex: checked before anything is restored.
    pub file_xxh3: String,
}

impl Manifest {
    pub fn tallies(&self) -> Vec<(Part, Tally)> {
        self.parts
            .iter()
            .map(|p| {
                let checksum = u64::from_str_radix(&p.checksum, 16).unwrap_or_default();
                (
                    p.part,
                    Tally {
                        records: p.records,
                        checksum,
                    },
                )
            })
            .collect()
    }

    pub fn records(&self) -> u64 {
        self.parts.iter().map(|p| p.records).sum()
    }
}

/// A backup's name from its time: `ringchat-20261202T132335Z`.
pub fn backup_name(at: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    format!("ringchat-{}", stamp.replace(['-', ':'], ""))
}

/// Writes a new backup directory `dir`: first the server's state from the data dir
/// `state_from` (`backup/state.rs`), then every part of the store's snapshot, opened by
/// `open_view` only now, `batch_records` records per page read, then the files of `files`
/// (local file storage). State before the snapshot: what leaves the state for the store
/// meanwhile (the admin CLI's audit entries the server imports) is in the snapshot or in the
/// state, never in neither. Files after it: every file a backed-up message references is
/// already there.
pub fn write<'s>(
    open_view: impl FnOnce() -> Result<Box<dyn DumpView + 's>, BackupError>,
    dir: &Path,
    source: &str,
    batch_records: usize,
    files: Option<&super::files::FilesSource>,
    state_from: Option<&Path>,
) -> Result<Manifest, BackupError> {
    if dir.exists() {
        return Err(BackupError::NotEmpty(format!(
            "{} exists: a backup goes into a new directory",
            dir.display()
        )));
    }
    let mut partial = dir.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        // What an interrupted backup left.
        std::fs::remove_dir_all(&partial).map_err(BackupError::io(&partial))?;
    }
    create_private_dir_all(&partial)?;
    // Removed on any failure from here: a backup that failed for want of space would
    // otherwise keep that space taken (from the store too, when they share the disk), and
    // the next attempt, under a new name, would not remove it.
    let guard = RemoveOnFailure(Some(partial.clone()));
    let state = state_from
        .map(|data_dir| super::state::copy_out(data_dir, &partial))
        .transpose()?;
    let view = open_view()?;
    let now = std::time::SystemTime::now();
    let mut parts = Vec::with_capacity(Part::ALL.len());
    for part in Part::ALL {
        parts.push(write_part(view.as_ref(), part, &partial, batch_records)?);
    }
    drop(view);
    let files = files
        .map(|f| super::files::copy_out(f, &partial))
        .transpose()?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_ms: crate::time::now_ms(),
        created: humantime::format_rfc3339_seconds(now).to_string(),
        source: source.to_owned(),
        parts,
        files,
        state,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    write_atomic(&partial.join(MANIFEST), &json)?;
    std::fs::rename(&partial, dir).map_err(BackupError::io(dir))?;
    guard.disarm();
    sync_parent(dir)?;
    Ok(manifest)
}

/// A backup directory being written, removed when dropped before [`Self::disarm`].
struct RemoveOnFailure(Option<PathBuf>);

impl RemoveOnFailure {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnFailure {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(err) = std::fs::remove_dir_all(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %err, "a failed backup's partial directory could not be removed");
        }
    }
}

/// Removes every `*.partial` entry of `dir`: what interrupted or failed backups left. Only
/// where no backup is being written (the server's one-at-a-time lock held, or at start).
/// Every entry is tried; the first failure is returned.
pub fn remove_partials(dir: &Path) -> Result<Vec<String>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io(dir)(e)),
    };
    let (mut removed, mut failed) = (Vec::new(), None);
    for entry in entries {
        let entry = entry.map_err(BackupError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".partial") {
            continue;
        }
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match result {
            Ok(()) => removed.push(name),
            Err(err) => {
                failed.get_or_insert(BackupError::io(path)(err));
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(removed),
    }
}

fn write_part(
    view: &dyn DumpView,
    part: Part,
    dir: &Path,
    batch_records: usize,
) -> Result<PartEntry, BackupError> {
    let name = format!("{}.dump", part.name());
    let path = dir.join(&name);
    let file = create_private_file(&path).map_err(BackupError::io(&path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let (mut hash, mut tally, mut bytes) = (Xxh3::new(), Tally::default(), 0u64);
    let mut after = None;
    loop {
        let page = view.export(part, after.as_ref(), batch_records)?;
        for item in &page.items {
            let body = postcard::to_stdvec(item).expect("records serialise");
            let len = u32::try_from(body.len())
                .ok()
                .filter(|n| *n <= FRAME_BYTES_MAX)
                .ok_or_else(|| {
                    BackupError::Corrupt(format!(
                        "a {} record of {} bytes is too large to back up",
                        part.name(),
                        body.len()
                    ))
                })?;
            for chunk in [&len.to_le_bytes()[..], &body] {
                out.write_all(chunk).map_err(BackupError::io(&path))?;
                hash.update(chunk);
                bytes += chunk.len() as u64;
            }
            tally.add(item);
        }
        match page.resume {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let file = out.into_inner().map_err(|e| BackupError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(BackupError::io(&path))?;
    Ok(PartEntry {
        part,
        records: tally.records,
        checksum: format!("{:016x}", tally.checksum),
        file: name,
        bytes,
        file_xxh3: format!("{:016x}", hash.digest()),
    })
}

/// A complete backup, read back.
pub struct Archive {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Archive {
    /// Reads the manifest; refuses a directory that is not a complete backup of a known format.
    pub fn open(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackupError::Corrupt(format!(
                "{} is not a ringchat backup: it has no {MANIFEST} (an interrupted backup is NAME.partial)",
                dir.display()
            )),
            _ => BackupError::Io { path: path.clone(), source: e },
        })?;
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
            BackupError::Corrupt(format!("{}: not a backup manifest: {e}", path.display()))
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(BackupError::Corrupt(format!(
                "{}: backup format {} (this ringchat reads {FORMAT_VERSION})",
                path.display(),
                manifest.format_version
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// Checks every part file's size and hash against the manifest, reading each once.
    pub fn check_files(&self) -> Result<(), BackupError> {
        for entry in &self.manifest.parts {
            let path = self.dir.join(&entry.file);
            let mut file = File::open(&path).map_err(BackupError::io(&path))?;
            let (mut hash, mut bytes, mut buf) = (Xxh3::new(), 0u64, vec![0u8; 1 << 20]);
            loop {
                let n = file.read(&mut buf).map_err(BackupError::io(&path))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
            let digest = format!("{:016x}", hash.digest());
            if bytes != entry.bytes || digest != entry.file_xxh3 {
                return Err(BackupError::Corrupt(format!(
                    "backup part {} ({}) is corrupt: {bytes} bytes with hash {digest}, the manifest says {} bytes with hash {}",
                    entry.part.name(),
                    path.display(),
                    entry.bytes,
                    entry.file_xxh3
                )));
            }
        }
        Ok(())
    }

    fn entry(&self, part: Part) -> Option<&PartEntry> {
        self.manifest.parts.iter().find(|p| p.part == part)
    }
}

fn corrupt(part: Part, offset: u64, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("backup part {} at byte {offset}: {what}", part.name()).into())
}

impl DumpView for Archive {
    fn export(
        &self,
        part: Part,
        after: Option<&ResumeKey>,
        records_max: usize,
    ) -> Result<DumpPage, StoreError> {
        let Some(entry) = self.entry(part) else {
            return Ok(DumpPage::default());
        };
        let mut offset = match after {
            None => 0,
            Some(key) => u64::from_be_bytes(
                key.0
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(part, 0, "resume key is not an offset"))?,
            ),
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(self.dir.join(&entry.file))?);
        file.seek(SeekFrom::Start(offset))?;
        let mut page = DumpPage::default();
        let mut records = 0usize;
        while offset < entry.bytes && records < records_max.max(1) {
            let (item, body) = read_frame(&mut file, part, offset)?;
            records += item.records();
            page.items.push(item);
            offset += 4 + body.len() as u64;
        }
        if offset < entry.bytes {
            page.resume = Some(ResumeKey(offset.to_be_bytes().to_vec()));
        }
        Ok(page)
    }
}

/// The frame at `offset`: the record, and the bytes it was decoded from.
fn read_frame(
    file: &mut impl Read,
    part: Part,
    offset: u64,
) -> Result<(DumpItem, Vec<u8>), StoreError> {
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|e| corrupt(part, offset, e))?;
    let len = u32::from_le_bytes(len);
    if len > FRAME_BYTES_MAX {
        return Err(corrupt(part, offset, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact(&mut body)
        .map_err(|e| corrupt(part, offset, e))?;
    let item: DumpItem = postcard::from_bytes(&body).map_err(|e| corrupt(part, offset, e))?;
    Ok((item, body))
}

/// Every part of a backup as read back, tallied two ways.
pub struct ReadBack {
    /// Over the bytes the backup holds: what its manifest's checksums were taken over, even
    /// when an older build wrote it in a form this one reads but no longer writes.
    pub stored: Vec<(Part, Tally)>,
    /// Over the records as this build reads them (and a store it restores into gives them
    /// back): what a restored store is compared with.
    pub decoded: Vec<(Part, Tally)>,
}

impl Archive {
    /// Reads every record of every part once (one frame in memory at a time), checking that
    /// each decodes, and tallies them both ways.
    pub fn read_back(&self) -> Result<ReadBack, BackupError> {
        let mut out = ReadBack {
            stored: Vec::with_capacity(self.manifest.parts.len()),
            decoded: Vec::with_capacity(self.manifest.parts.len()),
        };
        for entry in &self.manifest.parts {
            let path = self.dir.join(&entry.file);
            let mut file = BufReader::with_capacity(
                1 << 20,
                File::open(&path).map_err(BackupError::io(&path))?,
            );
            let (mut stored, mut decoded, mut offset) = (Tally::default(), Tally::default(), 0u64);
            while offset < entry.bytes {
                let (item, body) = read_frame(&mut file, entry.part, offset)?;
                stored
                    .add_stored(&item, &body)
                    .map_err(|e| corrupt(entry.part, offset, e))?;
                decoded.add(&item);
                offset += 4 + body.len() as u64;
            }
            out.stored.push((entry.part, stored));
            out.decoded.push((entry.part, decoded));
        }
        Ok(out)
    }
}

/// The backups in `dir` (complete ones: with a manifest), newest first by name.
pub fn list(dir: &Path) -> Result<Vec<(String, Manifest)>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(BackupError::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".partial") || !entry.path().join(MANIFEST).is_file() {
            continue;
        }
        if let Ok(archive) = Archive::open(&entry.path()) {
            out.push((name, archive.manifest));
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(out)
}

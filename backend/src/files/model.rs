//! The records the service keeps in storage, their keys, and the rules for what a client may
//! name. Keys are made here only, from ids the server made and numbers: never client text.

use serde::{Deserialize, Serialize};

use super::error::FileError;
use crate::api::UserId;

/// A finished file: `files/{file_id}/meta.json`, written once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub file_id: String,
    pub uploader: UserId,
    pub name: String,
    pub size: u64,
    pub mime: String,
    pub sha256: String,
    pub created_ms: u64,
    pub thumb: Option<Thumb>,
    /// Its references are tracked (a marker per message that carries it, `refs.rs`) and its
    /// blob holds a reference record for it: the collector may remove it once no message
    /// references it. Files completed before the collector existed have no markers and are
    /// kept; the collector gives each a record at its blob before it deletes any blob
    /// (`gc/untracked.rs`), so that a newer file of the same bytes never takes the blob along.
    #[serde(default)]
    pub tracked: bool,
}

/// A thumbnail's dimensions and type (`files/{file_id}/thumb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumb {
    pub width: u32,
    pub height: u32,
    /// `image/jpeg` or `image/png`.
    pub mime: String,
}

/// An upload in progress: `uploads/{user_id}/{upload_id}/meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    pub name: String,
    pub size: u64,
    pub mime: String,
    pub sha256: String,
    pub chunk_bytes: u64,
    pub created_ms: u64,
}

impl UploadMeta {
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_bytes)
    }

    /// The exact length chunk `index` must have.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index * self.chunk_bytes;
        self.chunk_bytes.min(self.size - start)
    }
}

/// A completed upload: `uploads/{user_id}/{upload_id}/done`, so that a retried complete gets
/// the same file; removed with the rest of the upload after its lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDone {
    pub file_id: String,
    pub completed_ms: u64,
}

/// What a client asks for when it creates an upload (`POST /files`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    pub name: String,
    pub size: u64,
    pub mime: String,
    pub sha256: String,
}

/// A MIME type's longest accepted form, in bytes.
pub const MIME_BYTES_MAX: usize = 255;
/// Random bytes in an upload or file id (hex-encoded: twice as many characters).
const ID_BYTES: usize = 16;

pub mod keys {
    use super::UserId;

    pub fn uploads_of(user: UserId) -> String {
        format!("uploads/{user}/")
    }
    pub fn upload_dir(user: UserId, upload_id: &str) -> String {
        format!("uploads/{user}/{upload_id}/")
    }
    pub fn upload_meta(user: UserId, upload_id: &str) -> String {
        format!("uploads/{user}/{upload_id}/meta.json")
    }
    /// A completed upload's record (its file, for a retried complete), kept apart from
    /// `uploads/` so that what a new upload looks through is the uploads still in progress,
    /// not every one completed within `files.upload_lifetime_s`.
    pub fn upload_done(user: UserId, upload_id: &str) -> String {
        format!("uploads_done/{user}/{upload_id}")
    }
    /// Written once every file from before the collector has a record at its blob
    /// (`gc/untracked.rs`): until it is there, the collector deletes no blob.
    pub const UNTRACKED_RECORDED: &str = "gc/untracked-recorded";
    /// Every completed upload's record.
    pub const UPLOADS_DONE: &str = "uploads_done/";
    /// Where versions before `uploads_done/` kept the record: still read (a retried complete,
    /// the cleanup's clock) until the cleanup has removed them all.
    pub fn upload_done_before(user: UserId, upload_id: &str) -> String {
        format!("uploads/{user}/{upload_id}/done")
    }
    pub fn chunks(user: UserId, upload_id: &str) -> String {
        format!("uploads/{user}/{upload_id}/chunks/")
    }
    pub fn chunk(user: UserId, upload_id: &str, index: u64) -> String {
        format!("uploads/{user}/{upload_id}/chunks/{index:08}")
    }
    pub fn blob(sha256: &str) -> String {
        format!("blobs/{}/{sha256}", &sha256[..2])
    }
    pub fn file_meta(file_id: &str) -> String {
        format!("files/{file_id}/meta.json")
    }
    /// Every key of a file: `collecting.json`, `meta.json`, `refs/…`, `thumb`, in this order.
    pub fn file_dir(file_id: &str) -> String {
        format!("files/{file_id}/")
    }
    /// A key that sorts after every key of the file (`~` is above the key alphabet).
    pub fn past_file(file_id: &str) -> String {
        format!("files/{file_id}/~")
    }
    /// The file id of any key under `files/`.
    pub fn file_of_key(key: &str) -> Option<&str> {
        key.strip_prefix("files/")?.split('/').next()
    }
    /// The meta of a file the collector is removing, moved here first (the file is gone for
    /// readers, the collector can finish after a crash).
    pub fn file_collecting(file_id: &str) -> String {
        format!("files/{file_id}/collecting.json")
    }
    /// The file's reference markers (`refs.rs`).
    pub fn file_refs(file_id: &str) -> String {
        format!("files/{file_id}/refs/")
    }
    /// Message `seq` of conversation `conv` (wire id) carries the file.
    pub fn sent_ref(file_id: &str, conv: u64, seq: u64) -> String {
        format!("files/{file_id}/refs/{conv}/{seq}")
    }
    /// A send of the file into `conv` was accepted when the conversation's newest seq was
    /// `head`, at `at_ms`: its message, once committed, has a seq above `head`.
    pub fn pending_ref(file_id: &str, conv: u64, head: u64, at_ms: u64) -> String {
        format!("files/{file_id}/refs/{conv}/p{head}.{at_ms}")
    }
    /// Who refers to a blob: one empty record per file made of it.
    pub fn blob_refs(sha256: &str) -> String {
        format!("blobs/{}/{sha256}.refs/", &sha256[..2])
    }
    pub fn blob_ref(sha256: &str, file_id: &str) -> String {
        format!("blobs/{}/{sha256}.refs/{file_id}", &sha256[..2])
    }
    /// The blob and the file of a key made by [`blob_ref`]; `None` for any other key.
    pub fn blob_ref_of_key(key: &str) -> Option<(&str, &str)> {
        let rest = key.strip_prefix("blobs/")?;
        let (_stripe, rest) = rest.split_once('/')?;
        let (sha256, file_id) = rest.split_once(".refs/")?;
        (sha256.len() == 64 && !file_id.is_empty() && !file_id.contains('/'))
            .then_some((sha256, file_id))
    }
    pub fn thumb(file_id: &str) -> String {
        format!("files/{file_id}/thumb")
    }
    /// The uploader's index entry: the file's size is in the key, so that listing the user's
    /// prefix is enough to sum their bytes (the object itself is empty).
    pub fn user_file(user: UserId, file_id: &str, size: u64) -> String {
        format!("users/{user}/files/{file_id}.{size}")
    }
    pub fn user_files(user: UserId) -> String {
        format!("users/{user}/files/")
    }
    /// The size in a [`user_file`] key.
    pub fn user_file_size(key: &str) -> Option<u64> {
        key.rsplit_once('.')?.1.parse().ok()
    }
    /// `(user, upload_id)` of any key under `uploads/`.
    pub fn upload_of_key(key: &str) -> Option<(UserId, &str)> {
        let mut parts = key.strip_prefix("uploads/")?.splitn(3, '/');
        let user = parts.next()?.parse().ok()?;
        let upload_id = parts.next()?;
        Some((user, upload_id))
    }
}

/// A new random id: 32 lowercase hex characters.
pub fn new_id() -> Result<String, FileError> {
    let mut raw = [0u8; ID_BYTES];
    getrandom::fill(&mut raw).map_err(|e| FileError::Unavailable(format!("randomness: {e}")))?;
    Ok(crate::admin::auth::credentials::hex(&raw))
}

/// Whether `id` has the shape of an id this server made; anything else is not found.
pub fn is_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && is_lower_hex(id)
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file name as shown to people: 1 to `max` bytes, no control characters, no path.
pub fn check_name(name: &str, max: usize) -> Result<(), FileError> {
    if name.is_empty() || name.len() > max {
        return Err(FileError::bad(
            "bad_name",
            format!("name: must be 1 to {max} bytes"),
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(FileError::bad(
            "bad_name",
            "name: must not hold control characters, '/' or '\\'",
        ));
    }
    if name == "." || name == ".." {
        return Err(FileError::bad("bad_name", "name: must not be . or .."));
    }
    Ok(())
}

/// A MIME type without parameters (`type/subtype`, RFC 6838 characters), lowercased.
pub fn normalize_mime(mime: &str) -> Result<String, FileError> {
    let bad = || {
        FileError::bad(
            "bad_mime",
            format!(
                "mime: expected type/subtype such as image/png (RFC 6838 characters, no parameters, at most {MIME_BYTES_MAX} bytes)"
            ),
        )
    };
    if mime.len() > MIME_BYTES_MAX {
        return Err(bad());
    }
    let (kind, sub) = mime.split_once('/').ok_or_else(bad)?;
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    };
    if !token(kind) || !token(sub) {
        return Err(bad());
    }
    Ok(mime.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_mimes_and_ids_are_checked() {
        assert!(check_name("holiday photo.jpg", 255).is_ok());
        assert!(check_name("résumé 📄.pdf", 255).is_ok());
        for bad in ["", "a/b", "a\\b", "line\nbreak", "nul\0", ".."] {
            assert!(check_name(bad, 255).is_err(), "{bad:?}");
        }
        assert!(check_name("abcd", 3).is_err());
        assert_eq!(normalize_mime("Image/PNG").unwrap(), "image/png");
        assert!(normalize_mime("application/vnd.ms-excel").is_ok());
        for bad in [
            "",
            "image",
            "image/",
            "/png",
            "text/plain; charset=utf-8",
            "a/b/c",
            "te xt/plain",
        ] {
            assert!(normalize_mime(bad).is_err(), "{bad:?}");
        }
        let id = new_id().unwrap();
        assert!(is_id(&id), "{id}");
        assert!(!is_id("../../etc/passwd"));
        assert!(!is_id(&id.to_uppercase()));
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
    }

    #[test]
    fn keys_parse_back() {
        assert_eq!(keys::chunk(7, "ab", 3), "uploads/7/ab/chunks/00000003");
        assert_eq!(
            keys::upload_of_key("uploads/7/ab/chunks/1"),
            Some((7, "ab"))
        );
        assert_eq!(keys::upload_of_key("uploads/x/ab/meta.json"), None);
        let key = keys::user_file(7, "ff", 1234);
        assert!(key.starts_with(&keys::user_files(7)));
        assert_eq!(keys::user_file_size(&key), Some(1234));
        assert_eq!(keys::file_of_key("files/ff/refs/1/2"), Some("ff"));
        assert!(keys::past_file("ff") > keys::file_dir("ff") + "thumb");
        assert!(keys::file_collecting("ff") < keys::file_meta("ff"));
        assert!(
            keys::blob_ref(&"0a".repeat(32), "ff").starts_with(&keys::blob_refs(&"0a".repeat(32)))
        );
        assert_eq!(
            keys::blob(&"0a".repeat(32)),
            format!("blobs/0a/{}", "0a".repeat(32))
        );
    }

    #[test]
    fn chunk_lengths_cover_the_file() {
        let meta = UploadMeta {
            name: "f".into(),
            size: 2_500,
            mime: "a/b".into(),
            sha256: String::new(),
            chunk_bytes: 1_000,
            created_ms: 0,
        };
        assert_eq!(meta.chunk_count(), 3);
        assert_eq!(
            (0..3).map(|i| meta.chunk_len(i)).collect::<Vec<_>>(),
            [1_000, 1_000, 500]
        );
    }
}

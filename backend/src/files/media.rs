//! Media messages: the `FileRef` an IMAGE, FILE or AUDIO message carries, checked when it is
//! sent (the file exists, the sender may reference it, its facts are the stored file's), and
//! who may download a file they did not upload (a reader of a message that carries it).
//!
//! Both need storage (the file's meta, a message of the log), so they run on the backend's
//! runtime: a media send waits for its check on its connection's task, never on the shard or
//! the sequencer, and text sends never come here.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use ringchat_proto::v1::{self, ContentType, ErrorCode};

use super::download::{DownloadAccess, Via};
use super::error::FileError;
use super::model::{FileMeta, is_id};
use super::refs::{MessageRefs, Scanned};
use super::service::FileService;
use crate::accounts::Refusal;
use crate::store::{ConvId, MessageRecord, Ports, StoreError, UserId};

/// Longest caption a FileRef may carry.
pub const CAPTION_BYTES_MAX: usize = 4096;

/// Whether messages of this content type carry a `FileRef` (and are checked when sent).
pub fn is_media(content_type: i32) -> bool {
    matches!(
        ContentType::try_from(content_type),
        Ok(ContentType::Image | ContentType::File | ContentType::Audio)
    )
}

/// The file id of a stored message that references one, if it does and is not recalled.
pub fn file_of(content_type: i32, recalled: bool, content: &[u8]) -> Option<String> {
    if recalled || !is_media(content_type) {
        return None;
    }
    v1::FileRef::decode(content).ok().map(|r| r.file_id)
}

/// Whether a stored message carries a reference to `file_id` and is not recalled.
fn carries_file(m: &MessageRecord, file_id: &str) -> bool {
    file_of(m.content_type, m.recalled, &m.content).as_deref() == Some(file_id)
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::InvalidArgument, message)
}

fn no_file(file_id: &str) -> Refusal {
    // One answer for "absent" and "not yours": a sender learns nothing about others' files.
    Refusal::new(
        ErrorCode::NotFound,
        format!(
            "no file {file_id} that you may send: upload it, or forward it from a message you can read (via_conversation_id, via_seq)"
        ),
    )
}

/// Decodes a client's FileRef and checks what needs no storage.
pub(crate) fn parse(content_type: i32, content: &[u8]) -> Result<v1::FileRef, Refusal> {
    let r = v1::FileRef::decode(content)
        .map_err(|_| invalid("IMAGE, FILE and AUDIO content must be an encoded FileRef"))?;
    if !is_id(&r.file_id) {
        return Err(invalid("FileRef.file_id is not a file id"));
    }
    if r.caption.len() > CAPTION_BYTES_MAX {
        return Err(invalid(format!(
            "FileRef.caption is {} bytes, the limit is {CAPTION_BYTES_MAX}",
            r.caption.len()
        )));
    }
    if r.duration_ms != 0 && content_type != ContentType::Audio as i32 {
        return Err(invalid("FileRef.duration_ms is for AUDIO messages"));
    }
    if (r.via_conversation_id == 0) != (r.via_seq == 0) {
        return Err(invalid(
            "set both via_conversation_id and via_seq, or neither",
        ));
    }
    Ok(r)
}

/// The FileRef as it is stored: the stored file's facts (a client's own values must match
/// them), no `via_*`. Checks the content type against the file's media type.
pub(crate) fn settle(
    content_type: i32,
    mut r: v1::FileRef,
    meta: &FileMeta,
) -> Result<v1::FileRef, Refusal> {
    fn same<T: PartialEq + Default>(field: &str, sent: &T, stored: &T) -> Result<(), Refusal> {
        if *sent == T::default() || sent == stored {
            return Ok(());
        }
        Err(invalid(format!(
            "FileRef.{field} differs from the uploaded file's (leave it empty: the server fills it)"
        )))
    }
    let (thumb_width, thumb_height) = meta.thumb.as_ref().map_or((0, 0), |t| (t.width, t.height));
    same("name", &r.name, &meta.name)?;
    same("size", &r.size, &meta.size)?;
    same("mime", &r.mime, &meta.mime)?;
    same("sha256", &r.sha256, &meta.sha256)?;
    same("thumb_width", &r.thumb_width, &thumb_width)?;
    same("thumb_height", &r.thumb_height, &thumb_height)?;
    let wants = match ContentType::try_from(content_type) {
        Ok(ContentType::Image) => Some("image/"),
        Ok(ContentType::Audio) => Some("audio/"),
        _ => None,
    };
    if let Some(prefix) = wants
        && !meta.mime.starts_with(prefix)
    {
        return Err(invalid(format!(
            "the file is {}: an {} message needs {prefix}*",
            meta.mime,
            if prefix == "image/" { "IMAGE" } else { "AUDIO" }
        )));
    }
    r.name.clone_from(&meta.name);
    r.size = meta.size;
    r.mime.clone_from(&meta.mime);
    r.sha256.clone_from(&meta.sha256);
    r.thumb_width = thumb_width;
    r.thumb_height = thumb_height;
    r.via_conversation_id = 0;
    r.via_seq = 0;
    Ok(r)
}

/// The send-time check, on the backend's runtime.
pub struct Media {
    files: Arc<FileService>,
    messages: Arc<MessageAccess>,
    message_bytes_max: usize,
    /// Set when the backend starts serving (`Backend::serve`, on its runtime).
    runtime: OnceLock<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").finish_non_exhaustive()
    }
}

impl Media {
    /// `messages`: also the files service's [`DownloadAccess`] (it does not hold the service).
    pub(crate) fn new(
        files: Arc<FileService>,
        messages: Arc<MessageAccess>,
        message_bytes_max: usize,
    ) -> Self {
        Self {
            files,
            messages,
            message_bytes_max,
            runtime: OnceLock::new(),
        }
    }

    /// The runtime checks run on (called from it, once).
    pub(crate) fn serve_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// Checks a media send's content on the backend's runtime (awaitable from a shard) and
    /// gives the content to store.
    /// `conv`: the conversation the message goes to (`None`: a target the sequencer refuses);
    /// the file's reference marker is made durable there before this returns (`refs.rs`).
    pub(crate) async fn check_send(
        self: &Arc<Self>,
        user: UserId,
        conv: Option<ConvId>,
        content_type: i32,
        content: Bytes,
    ) -> Result<Bytes, Refusal> {
        let Some(runtime) = self.runtime.get() else {
            return Err(Refusal::store_away("the backend is starting"));
        };
        let this = Arc::clone(self);
        runtime
            .spawn(async move { this.checked(user, conv, content_type, &content).await })
            .await
            .unwrap_or_else(|join| Err(Refusal::unavailable(join)))
    }

    async fn checked(
        &self,
        user: UserId,
        conv: Option<ConvId>,
        content_type: i32,
        content: &[u8],
    ) -> Result<Bytes, Refusal> {
        let r = parse(content_type, content)?;
        let meta = match self.files.file(&r.file_id).await {
            Ok(Some(meta)) => meta,
            Ok(None) | Err(FileError::NotFound) => return Err(no_file(&r.file_id)),
            Err(e) => return Err(Refusal::store_away(format!("file storage: {e}"))),
        };
        if meta.uploader != user
            && (r.via_conversation_id == 0
                || !self
                    .messages
                    .carries(user, r.via_conversation_id, r.via_seq, &r.file_id)
                    .await?)
        {
            return Err(no_file(&r.file_id));
        }
        let file_id = r.file_id.clone();
        let stored = settle(content_type, r, &meta)?.encode_to_vec();
        if stored.len() > self.message_bytes_max {
            return Err(Refusal::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "the FileRef is {} bytes with the file's name, the limit is {}",
                    stored.len(),
                    self.message_bytes_max
                ),
            ));
        }
        if let Some(conv) = conv {
            self.mark(conv, &file_id).await?;
        }
        Ok(Bytes::from(stored))
    }

    /// The file's pending reference marker for a send into `conv`, durable before the send
    /// is queued; then the file is looked for again, in case the collector hid it meanwhile
    /// (it looks for markers again after hiding: one of the two sees the other).
    async fn mark(&self, conv: ConvId, file_id: &str) -> Result<(), Refusal> {
        let head = self.messages.head(conv).await?;
        let away = |e: FileError| Refusal::store_away(format!("file storage: {e}"));
        self.files
            .mark_sent(file_id, conv.to_wire(), head, crate::time::now_ms())
            .await
            .map_err(away)?;
        if !self.files.still_there(file_id).await.map_err(away)? {
            return Err(no_file(file_id));
        }
        Ok(())
    }
}

/// Who may reach a file through a message: a reader of a message that carries it.
pub struct MessageAccess {
    ports: Ports,
}

impl std::fmt::Debug for MessageAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageAccess").finish_non_exhaustive()
    }
}

impl MessageAccess {
    pub(crate) fn new(ports: Ports) -> Self {
        Self { ports }
    }

    /// The conversation's newest seq (0 when it has none).
    async fn head(&self, conv: ConvId) -> Result<u64, Refusal> {
        let ports = self.ports.clone();
        let last = tokio::task::spawn_blocking(move || ports.log.last_message(conv))
            .await
            .map_err(Refusal::unavailable)??;
        Ok(last.map_or(0, |m| m.seq))
    }

    /// A read of the message log off the runtime's threads, for the collector.
    async fn read_log<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Ports) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, FileError> {
        let ports = self.ports.clone();
        tokio::task::spawn_blocking(move || read(&ports))
            .await
            .map_err(|e| FileError::Unavailable(format!("message read: {e}")))?
            .map_err(|e| FileError::Unavailable(format!("message store: {e}")))
    }

    /// Whether `user` may read message `seq` of conversation `conv` (the rule of Sync and
    /// History: a member, within the seqs a group shows it) and that message carries a FileRef
    /// to `file_id` and is not recalled. Storage failures are errors, not "no".
    pub async fn carries(
        &self,
        user: UserId,
        conv: u64,
        seq: u64,
        file_id: &str,
    ) -> Result<bool, Refusal> {
        let Some(conv) = ConvId::from_wire(conv) else {
            return Ok(false);
        };
        let ports = self.ports.clone();
        let message = tokio::task::spawn_blocking(move || {
            crate::messaging::reads::visible_message(&ports, user, conv, seq)
        })
        .await
        .map_err(Refusal::unavailable)?;
        match message {
            Ok(Some(m)) => Ok(carries_file(&m, file_id)),
            Ok(None) => Ok(false),
            Err(refusal) if refusal.code == ErrorCode::NotFound => Ok(false),
            Err(refusal) => Err(refusal),
        }
    }
}

/// Downloads by others than the uploader (`GET /files/{id}?c=&s=`): allowed through a message
/// the user may read that carries the file.
#[async_trait::async_trait]
impl DownloadAccess for MessageAccess {
    async fn may_download(
        &self,
        user: UserId,
        file: &FileMeta,
        via: Via,
    ) -> Result<bool, FileError> {
        self.carries(user, via.conversation_id, via.seq, &file.file_id)
            .await
            .map_err(|refusal| FileError::Unavailable(refusal.message))
    }
}

/// The collector's questions about reference markers, answered from the log: one point read
/// per sent marker, a bounded read from the head for a pending one.
#[async_trait::async_trait]
impl MessageRefs for MessageAccess {
    async fn carries_file(&self, conv: u64, seq: u64, file_id: &str) -> Result<bool, FileError> {
        let Some(conv) = ConvId::from_wire(conv) else {
            return Ok(false);
        };
        let message = self
            .read_log(move |ports| ports.log.message(conv, seq))
            .await?;
        Ok(message.is_some_and(|m| carries_file(&m, file_id)))
    }

    async fn carrying_after(
        &self,
        conv: u64,
        after: u64,
        limit: usize,
        file_id: &str,
        until_ms: u64,
    ) -> Result<Scanned, FileError> {
        let Some(conv) = ConvId::from_wire(conv) else {
            return Ok(Scanned {
                last_seq: after,
                at_end: true,
                ..Scanned::default()
            });
        };
        let mut messages = self
            .read_log(move |ports| ports.log.messages_after(conv, after, limit))
            .await?;
        let read = messages.len();
        let past = messages.iter().position(|m| m.server_time_ms > until_ms);
        if let Some(past) = past {
            messages.truncate(past + 1);
        }
        Ok(Scanned {
            read,
            carrying: messages
                .iter()
                .filter(|m| carries_file(m, file_id))
                .map(|m| m.seq)
                .collect(),
            last_seq: messages.last().map_or(after, |m| m.seq),
            at_end: past.is_some() || read < limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::Thumb;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn meta(mime: &str) -> FileMeta {
        FileMeta {
            file_id: ID.into(),
            uploader: 100_000_001,
            name: "cat.png".into(),
            size: 1234,
            mime: mime.into(),
            sha256: "ab".repeat(32),
            created_ms: 1,
            thumb: Some(Thumb {
                width: 320,
                height: 200,
                mime: "image/jpeg".into(),
            }),
            tracked: true,
        }
    }

    fn sent(r: &v1::FileRef) -> Vec<u8> {
        r.encode_to_vec()
    }

    fn code<T: std::fmt::Debug>(r: Result<T, Refusal>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn only_media_types_carry_files() {
        let image = ContentType::Image as i32;
        assert!(is_media(image) && is_media(ContentType::Audio as i32));
        assert!(!is_media(ContentType::Text as i32) && !is_media(ContentType::Custom as i32));
        let r = sent(&v1::FileRef {
            file_id: ID.into(),
            ..Default::default()
        });
        assert_eq!(file_of(image, false, &r).as_deref(), Some(ID));
        assert_eq!(file_of(image, true, &r), None, "recalled");
        assert_eq!(file_of(ContentType::Custom as i32, false, &r), None);
    }

    #[test]
    fn a_file_ref_is_parsed_and_bounded() {
        let file = ContentType::File as i32;
        let ok = v1::FileRef {
            file_id: ID.into(),
            caption: "x".repeat(CAPTION_BYTES_MAX),
            ..Default::default()
        };
        assert!(parse(file, &sent(&ok)).is_ok());
        let bad = [
            v1::FileRef {
                file_id: "../etc".into(),
                ..Default::default()
            },
            v1::FileRef {
                caption: "x".repeat(CAPTION_BYTES_MAX + 1),
                ..ok.clone()
            },
            v1::FileRef {
                duration_ms: 10,
                ..ok.clone()
            },
            v1::FileRef {
                via_seq: 3,
                ..ok.clone()
            },
        ];
        for r in bad {
            assert_eq!(
                code(parse(file, &sent(&r))),
                ErrorCode::InvalidArgument,
                "{r:?}"
            );
        }
        assert_eq!(code(parse(file, &[0xff; 4])), ErrorCode::InvalidArgument);
        let voice = v1::FileRef {
            duration_ms: 10,
            ..ok
        };
        assert!(parse(ContentType::Audio as i32, &sent(&voice)).is_ok());
    }

    #[test]
    fn the_stored_ref_has_the_files_facts_and_no_via() {
        let image = ContentType::Image as i32;
        let r = v1::FileRef {
            file_id: ID.into(),
            size: 1234,
            caption: "hi".into(),
            via_conversation_id: 7,
            via_seq: 8,
            ..Default::default()
        };
        let stored = settle(image, r.clone(), &meta("image/png")).unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.size, stored.mime.as_str()),
            ("cat.png", 1234, "image/png")
        );
        assert_eq!((stored.thumb_width, stored.thumb_height), (320, 200));
        assert_eq!((stored.via_conversation_id, stored.via_seq), (0, 0));
        assert_eq!(stored.caption, "hi");
        for lie in [
            v1::FileRef {
                size: 1,
                ..r.clone()
            },
            v1::FileRef {
                mime: "image/gif".into(),
                ..r.clone()
            },
            v1::FileRef {
                name: "dog.png".into(),
                ..r.clone()
            },
            v1::FileRef {
                thumb_width: 1,
                ..r.clone()
            },
        ] {
            assert_eq!(
                code(settle(image, lie.clone(), &meta("image/png"))),
                ErrorCode::InvalidArgument,
                "{lie:?}"
            );
        }
        assert_eq!(
            code(settle(image, r.clone(), &meta("application/pdf"))),
            ErrorCode::InvalidArgument
        );
        assert!(
            settle(
                ContentType::File as i32,
                r.clone(),
                &meta("application/pdf")
            )
            .is_ok()
        );
        assert_eq!(
            code(settle(ContentType::Audio as i32, r, &meta("image/png"))),
            ErrorCode::InvalidArgument
        );
    }
}

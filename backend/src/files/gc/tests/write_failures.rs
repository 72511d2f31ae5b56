//! A complete whose blob write failed after the blob became visible keeps the blob's record
//! for the sweep, which takes both past the grace.

use std::ops::Range;

use super::*;
use crate::files::storage::{ByteStream, Listed, ObjectMeta, ObjectWriter};

/// A real adapter whose writers publish the object and then report a failure, as a directory
/// fsync failing after the rename does, or an S3 complete the server applied but whose answer
/// was lost. Neither real storage fails that way on demand, hence this wrapper.
struct PublishThenFail(Arc<dyn FileStorage>);

struct FailAfterFinish(Box<dyn ObjectWriter>);

#[async_trait::async_trait]
impl ObjectWriter for FailAfterFinish {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.0.write(bytes).await
    }
    async fn finish(self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        self.0.finish().await?;
        Err(StorageError::Failed(
            "published, then failed (injected)".into(),
        ))
    }
    async fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.0.abort().await
    }
}

#[async_trait::async_trait]
impl FileStorage for PublishThenFail {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.0.put(key, bytes).await
    }
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(FailAfterFinish(self.0.create(key).await?)))
    }
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.0.get(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.0.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StorageError> {
        self.0.list(prefix, after, limit).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_blob_published_by_a_failed_complete_goes_past_the_grace() {
    let wrap = |s| Arc::new(PublishThenFail(s)) as Arc<dyn FileStorage>;
    each_storage_as(10_000, wrap, |name, w| async move {
        let bytes = content(4000, 70);
        let sha = sha256_hex(&bytes);
        let failed = w.try_upload(ALICE, &bytes).await;
        assert!(
            matches!(failed, Err(FileError::Unavailable(_))),
            "{name}: {failed:?}"
        );
        // The blob is there, and so is a record that finds it.
        assert!(w.exists(&keys::blob(&sha)).await, "{name}");
        assert_eq!(w.keys(&keys::blob_refs(&sha)).await.len(), 1, "{name}");
        assert!(w.keys("files/").await.is_empty(), "{name}: no file");

        w.sweep(now_ms()).await;
        assert!(
            w.exists(&keys::blob(&sha)).await,
            "{name}: kept within the grace"
        );
        let pass = w.sweep(later()).await;
        assert_eq!(pass.blobs_collected, 1, "{name}");
        assert!(!w.exists(&keys::blob(&sha)).await, "{name}");
        assert!(w.keys("blobs/").await.is_empty(), "{name}");
    })
    .await;
}

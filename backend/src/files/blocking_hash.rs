//! A SHA-256 over a stream, computed on the blocking threads: an upload's assembly hashes
//! every byte of the file (multi-GiB, possibly), which on a runtime worker would keep the
//! other requests' tasks waiting for seconds.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::error::FileError;
use crate::admin::auth::credentials::hex;

/// Bytes hashed in one turn on a blocking thread.
const HASH_BATCH_BYTES: usize = 256 * 1024;

/// The hash of pieces added in order, a batch at a time on a blocking thread while the next
/// batch is gathered.
#[derive(Default)]
pub(super) struct BlockingHash {
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// The hasher when no batch is being hashed (the task gives it back).
    hasher: Sha256,
    hashing: Option<tokio::task::JoinHandle<Sha256>>,
}

impl BlockingHash {
    pub(super) async fn add(&mut self, piece: Bytes) -> Result<(), FileError> {
        self.batch_bytes += piece.len();
        self.batch.push(piece);
        if self.batch_bytes >= HASH_BATCH_BYTES {
            let hasher = self.hasher().await?;
            let batch = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            self.hashing = Some(tokio::task::spawn_blocking(move || hash(hasher, &batch)));
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<String, FileError> {
        let hasher = self.hasher().await?;
        let batch = std::mem::take(&mut self.batch);
        let hasher = tokio::task::spawn_blocking(move || hash(hasher, &batch))
            .await
            .map_err(|e| FileError::Unavailable(format!("hashing: {e}")))?;
        Ok(hex(&hasher.finalize()))
    }

    /// The hasher, once the batch being hashed is done.
    async fn hasher(&mut self) -> Result<Sha256, FileError> {
        match self.hashing.take() {
            Some(task) => task
                .await
                .map_err(|e| FileError::Unavailable(format!("hashing: {e}"))),
            None => Ok(std::mem::take(&mut self.hasher)),
        }
    }
}

fn hash(mut hasher: Sha256, pieces: &[Bytes]) -> Sha256 {
    for piece in pieces {
        hasher.update(piece);
    }
    hasher
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hash_is_the_whole_streams_across_batches() {
        let bytes: Vec<u8> = (0..3 * HASH_BATCH_BYTES + 1234)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut hashing = BlockingHash::default();
        for piece in bytes.chunks(70_000) {
            hashing.add(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(
            hashing.finish().await.unwrap(),
            hex(&Sha256::digest(&bytes))
        );
        assert_eq!(
            BlockingHash::default().finish().await.unwrap(),
            hex(&Sha256::digest(b""))
        );
    }
}

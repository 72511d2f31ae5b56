//! Files from before the collector (no `tracked`, no record at their blob) keep their blob
//! when a newer file of the same bytes goes (`gc/untracked.rs`).

use super::*;

/// A file stored before the collector existed (its meta without `tracked`, no record at its
/// blob, as that version wrote it), then the same bytes uploaded by someone else and never
/// sent: collecting the new file leaves the blob, and the old file still downloads.
#[tokio::test]
async fn a_new_file_of_an_old_files_bytes_goes_without_the_old_files_blob() {
    each_storage(10_000, |name, w| async move {
        let bytes = content(5000, 9);
        let sha = sha256_hex(&bytes);
        let old_id = crate::files::model::new_id().unwrap();
        let old_meta = serde_json::json!({
            "file_id": old_id,
            "uploader": ALICE,
            "name": "old.bin",
            "size": bytes.len(),
            "mime": "application/octet-stream",
            "sha256": sha,
            "created_ms": 1_000,
            "thumb": null,
        });
        let storage = &w.files.storage;
        storage
            .put(&keys::blob(&sha), Bytes::from(bytes.clone()))
            .await
            .unwrap();
        storage
            .put(
                &keys::file_meta(&old_id),
                Bytes::from(serde_json::to_vec(&old_meta).unwrap()),
            )
            .await
            .unwrap();
        storage
            .put(
                &keys::user_file(ALICE, &old_id, bytes.len() as u64),
                Bytes::new(),
            )
            .await
            .unwrap();
        assert!(w.keys(&keys::blob_refs(&sha)).await.is_empty(), "{name}");

        let new_id = w.upload(BOB, &bytes).await;
        let pass = w.sweep(later()).await;
        assert_eq!(
            (pass.files_collected, pass.blobs_collected),
            (1, 0),
            "{name}"
        );
        assert!(w.files.file(&new_id).await.unwrap().is_none(), "{name}");
        assert!(
            w.exists(&keys::blob(&sha)).await,
            "{name}: the old file's blob"
        );
        assert!(w.exists(keys::UNTRACKED_RECORDED).await, "{name}: the mark");
        let old = w.files.download_meta(ALICE, &old_id, None).await.unwrap();
        assert!(!old.tracked, "{name}");
        let read: Vec<Bytes> = w
            .files
            .read(&old, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read.concat(), bytes, "{name}");
        // Its record stays, sweep after sweep.
        w.sweep(later() + 10 * GRACE_S * 1000).await;
        assert_eq!(
            w.keys(&keys::blob_refs(&sha)).await,
            [keys::blob_ref(&sha, &old_id)],
            "{name}"
        );
    })
    .await;
}

/// Until every old file holds its blob the collector deletes no blob: a pass whose budget
/// ends in the walk collects nothing, and the mark is written only at its end.
#[tokio::test]
async fn no_blob_goes_before_every_old_file_holds_its_blob() {
    const FILES: usize = 10;
    // Fewer keys a pass than the walk needs over the files.
    each_storage(7, |name, w| async move {
        for i in 0..FILES {
            w.upload(ALICE, &content(1000 + i, 60 + i as u8)).await;
        }
        let first = w.files.gc_pass(later()).await.unwrap();
        assert_eq!(first.files_collected, 0, "{name}");
        assert!(!w.exists(keys::UNTRACKED_RECORDED).await, "{name}");
        let pass = w.sweep(later()).await;
        assert!(w.exists(keys::UNTRACKED_RECORDED).await, "{name}");
        assert_eq!(pass.files_collected, FILES, "{name}");
    })
    .await;
}

/// A meta that cannot be read does not hold the walk (and so every collection) back for ever.
#[tokio::test]
async fn an_unreadable_meta_does_not_stop_the_walk() {
    each_storage(10_000, |name, w| async move {
        let id = w.upload(ALICE, &content(1500, 80)).await;
        let broken = crate::files::model::new_id().unwrap();
        w.files
            .storage
            .put(&keys::file_meta(&broken), Bytes::from_static(b"not json"))
            .await
            .unwrap();
        let pass = w.sweep(later()).await;
        assert!(w.exists(keys::UNTRACKED_RECORDED).await, "{name}");
        assert_eq!(pass.files_collected, 1, "{name}");
        assert!(w.files.file(&id).await.unwrap().is_none(), "{name}");
    })
    .await;
}

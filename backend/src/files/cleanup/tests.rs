//! The cleanup on the real local adapter in a temporary directory. The trees are written
//! straight to disk in the adapter's layout (keys are paths): tens of thousands of fsync'ed
//! puts would make the test slow, not truer.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::files::FilesConfig;
use crate::files::model::new_id;
use crate::files::service::LIST_PAGE;
use crate::files::storage::local::LocalStorage;
use crate::store::USER_ID_FIRST;

fn service(root: &Path) -> (Arc<LocalStorage>, FileService) {
    let storage = Arc::new(LocalStorage::open(root).unwrap());
    let files = FileService::new(Arc::clone(&storage) as _, FilesConfig::default());
    (storage, files)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn upload_meta(created_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&UploadMeta {
        name: "f.bin".into(),
        size: 10,
        mime: "application/octet-stream".into(),
        sha256: "ab".repeat(32),
        chunk_bytes: 64 * 1024,
        created_ms,
    })
    .unwrap()
}

fn lifetime_ms() -> u64 {
    FilesConfig::default().upload_lifetime_s * 1000
}

/// Completes faster than a batch a minute: one pass removes every expired record, however
/// many, within its time budget (a fixed 1000 per pass let the records pile up).
#[tokio::test]
async fn a_backlog_of_expired_records_goes_in_one_pass() {
    const RECORDS: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    for i in 0..RECORDS {
        let user = USER_ID_FIRST + (i % 7) as u64;
        write(
            &root.join(keys::upload_done(user, &new_id().unwrap())),
            b"{}",
        );
    }
    let (_, files) = service(&root);
    let later = now_ms() + lifetime_ms() + 1;
    let pass = files.cleanup_pass(later).await.unwrap();
    assert_eq!(
        (pass.examined, pass.removed, pass.wrapped),
        (RECORDS, RECORDS, true)
    );
    assert!(!root.join(keys::UPLOADS_DONE).exists());
}

/// What is not expired is looked at a batch a pass, no more.
#[tokio::test]
async fn a_pass_over_live_records_looks_at_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    for _ in 0..CLEANUP_BATCH + 10 {
        write(
            &root.join(keys::upload_done(USER_ID_FIRST, &new_id().unwrap())),
            b"{}",
        );
    }
    let (_, files) = service(&root);
    let pass = files.cleanup_pass(now_ms()).await.unwrap();
    assert_eq!(
        (pass.examined, pass.removed, pass.wrapped),
        (CLEANUP_BATCH, 0, false)
    );
    let pass = files.cleanup_pass(now_ms()).await.unwrap();
    assert_eq!((pass.examined, pass.removed, pass.wrapped), (10, 0, true));
}

/// 20,000 uploads, one per user: a pass lists `uploads/` a page at a time, so the directory
/// entries it reads are about one page's tree, not a listing of every user's directory per
/// upload (1,000 × 20,000 entries).
#[tokio::test]
async fn a_pass_reads_each_directory_once_per_page_not_once_per_upload() {
    const UPLOADS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    let meta = upload_meta(now_ms());
    for i in 0..UPLOADS {
        let user = USER_ID_FIRST + i as u64;
        write(
            &root.join(keys::upload_meta(user, &new_id().unwrap())),
            &meta,
        );
    }
    let (storage, files) = service(&root);
    let before = storage.entries_read();
    let pass = files.cleanup_pass(now_ms()).await.unwrap();
    assert_eq!((pass.examined, pass.removed), (CLEANUP_BATCH, 0));
    let read = storage.entries_read() - before;
    // One page: `uploads/` (20,000 users) and a thousand users' and uploads' directories.
    assert!(
        read <= (UPLOADS + 2 * LIST_PAGE + 100) as u64,
        "{read} directory entries read for one pass"
    );
}

/// The same 20,000 uploads, all expired: one pass removes them all, and reads about each
/// directory of the tree once (a walk keeps the directories its pages read), not `uploads/`
/// again for every page.
#[tokio::test]
async fn a_pass_over_expired_uploads_reads_the_tree_about_once() {
    const UPLOADS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    let meta = upload_meta(1_000);
    for i in 0..UPLOADS {
        let user = USER_ID_FIRST + i as u64;
        write(
            &root.join(keys::upload_meta(user, &new_id().unwrap())),
            &meta,
        );
    }
    let storage = Arc::new(LocalStorage::open(&root).unwrap());
    // Time enough for 20,000 removals on a loaded machine.
    let config = FilesConfig {
        cleanup_pass_ms_max: 50_000,
        ..FilesConfig::default()
    };
    let files = FileService::new(Arc::clone(&storage) as _, config);
    let pass = files.cleanup_pass(now_ms()).await.unwrap();
    assert_eq!(
        (pass.examined, pass.removed, pass.wrapped),
        (UPLOADS, UPLOADS, true)
    );
    let read = storage.entries_read();
    // `uploads/` (20,000 users), each user's and each upload's directory for the walk, each
    // upload's again for its removal: about 80,000, where a read of `uploads/` per page
    // would be 20 × 20,000 more.
    assert!(
        read <= 6 * UPLOADS as u64,
        "{read} directory entries read for a pass over {UPLOADS} uploads"
    );
}

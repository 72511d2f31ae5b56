//! Files in a backup: copied out, linked from the last backup, checked, restored.

use super::*;

#[test]
fn blobs_are_linked_from_the_previous_backup_and_checked_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let blob_bytes = b"hello blob";
    let sha = crate::admin::auth::credentials::hex(&Sha256::digest(blob_bytes));
    let blob = root.join(format!("blobs/{}/{sha}", &sha[..2]));
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(&blob, blob_bytes).unwrap();
    fs::create_dir_all(root.join("files/ab")).unwrap();
    fs::write(root.join("files/ab/meta.json"), b"{}").unwrap();
    fs::create_dir_all(root.join("uploads/1/x")).unwrap();
    fs::write(root.join("uploads/1/x/meta.json"), b"{}").unwrap();

    let first = dir.path().join("b1");
    let source = FilesSource {
        root: root.clone(),
        previous: None,
    };
    let one = copy_out(&source, &first).unwrap();
    assert_eq!((one.objects, one.linked), (2, 0), "uploads are skipped");
    let second = dir.path().join("b2");
    let two = copy_out(
        &FilesSource {
            previous: Some(first.clone()),
            ..source
        },
        &second,
    )
    .unwrap();
    assert_eq!((two.objects, two.bytes, two.linked), (2, one.bytes, 1));

    let restored = dir.path().join("restored");
    assert_eq!(copy_in(&second, &restored, &two).unwrap().objects, 2);
    assert_eq!(
        fs::read(restored.join(format!("blobs/{}/{sha}", &sha[..2]))).unwrap(),
        blob_bytes
    );
    // A blob whose bytes do not match its name is refused.
    fs::remove_file(
        second
            .join(FILES_DIR)
            .join(format!("blobs/{}/{sha}", &sha[..2])),
    )
    .unwrap();
    fs::write(
        second
            .join(FILES_DIR)
            .join(format!("blobs/{}/{sha}", &sha[..2])),
        b"tampered!!",
    )
    .unwrap();
    let err = check(&second, &two).unwrap_err();
    assert!(matches!(err, BackupError::Corrupt(_)), "{err}");
}

/// A storage directory with a blob, its reference record, a file record and an index entry;
/// its backup in `dir/backup`.
fn backed_up(dir: &Path) -> (PathBuf, FilesCopy, String) {
    let root = dir.join("store");
    let sha = crate::admin::auth::credentials::hex(&Sha256::digest(b"blob bytes"));
    let blob = format!("blobs/{}/{sha}", &sha[..2]);
    for (rel, bytes) in [
        (blob.as_str(), &b"blob bytes"[..]),
        (&format!("{blob}.refs/f1"), b""),
        ("files/f1/meta.json", b"{\"name\":\"a.txt\"}"),
        ("users/1/f1", b"f1"),
    ] {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    let backup = dir.join("backup");
    let source = FilesSource {
        root,
        previous: None,
    };
    let copy = copy_out(&source, &backup).unwrap();
    assert_eq!(copy.objects, 4);
    assert!(copy.digest.is_some());
    (backup, copy, blob)
}

#[test]
fn check_finds_a_missing_an_extra_and_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let (backup, copy, blob) = backed_up(dir.path());
    assert_eq!(check(&backup, &copy).unwrap(), copy);
    let files = backup.join(FILES_DIR);
    let damaged = |what: &str| {
        let err = check(&backup, &copy).unwrap_err();
        assert!(
            matches!(&err, BackupError::Corrupt(m) if m.contains("are damaged")),
            "{what}: {err}"
        );
    };

    // A file record missing.
    let meta = files.join("files/f1/meta.json");
    let meta_bytes = fs::read(&meta).unwrap();
    fs::remove_file(&meta).unwrap();
    damaged("a missing file record");
    // Changed in place, same length: only the digest sees it.
    let mut changed = meta_bytes.clone();
    changed[3] ^= 1;
    fs::write(&meta, &changed).unwrap();
    damaged("a changed file record");
    fs::write(&meta, &meta_bytes).unwrap();
    // A reference record renamed (same count, same bytes).
    let refs = files.join(format!("{blob}.refs"));
    fs::rename(refs.join("f1"), refs.join("f2")).unwrap();
    damaged("a renamed reference record");
    fs::rename(refs.join("f2"), refs.join("f1")).unwrap();
    // A file more.
    fs::write(files.join("users/1/f9"), b"f9").unwrap();
    damaged("an extra file");
    fs::remove_file(files.join("users/1/f9")).unwrap();
    // The blob gone.
    let blob_bytes = fs::read(files.join(&blob)).unwrap();
    fs::remove_file(files.join(&blob)).unwrap();
    damaged("a missing blob");
    fs::write(files.join(&blob), &blob_bytes).unwrap();
    // The whole files part gone.
    fs::rename(&files, backup.join("elsewhere")).unwrap();
    damaged("no files/ at all");
    fs::rename(backup.join("elsewhere"), &files).unwrap();
    assert_eq!(check(&backup, &copy).unwrap(), copy, "all put back");
}

#[test]
fn a_manifest_without_a_digest_is_checked_by_counts_sizes_and_blob_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (backup, copy, _) = backed_up(dir.path());
    // What a backup written before the digest existed has in its manifest.
    let old: FilesCopy = serde_json::from_str(
        &serde_json::json!({"objects": copy.objects, "bytes": copy.bytes, "linked": 0}).to_string(),
    )
    .unwrap();
    assert_eq!(old.digest, None);
    assert_eq!(check(&backup, &old).unwrap().objects, 4);
    fs::remove_file(backup.join(FILES_DIR).join("users/1/f1")).unwrap();
    let err = check(&backup, &old).unwrap_err();
    assert!(err.to_string().contains("are damaged"), "{err}");
}

#[test]
fn a_file_deleted_while_the_backup_copies_is_left_out_and_uploads_done_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    for (path, bytes) in [
        ("files/ab/a.json", &b"{\"a\":1}"[..]),
        ("files/ab/b.json", b"{\"b\":2}"),
        ("files/cd/meta.json", b"{}"),
        ("uploads_done/1/x", b"{\"file_id\":\"f\"}"),
    ] {
        fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        fs::write(root.join(path), bytes).unwrap();
    }
    let source = FilesSource {
        root: root.clone(),
        previous: None,
    };
    let backup = dir.path().join("b1");
    // As the server may while a backup runs: `a.json` goes after its listing (before its
    // copy), `b.json` after its directory was read (before it is looked at).
    let mut deleted = false;
    let copy = copy_out_observed(&source, &backup, &mut |rel| {
        if rel == Path::new("files/ab/a.json") {
            fs::remove_file(root.join("files/ab/a.json")).unwrap();
            fs::remove_file(root.join("files/ab/b.json")).unwrap();
            deleted = true;
        }
    })
    .unwrap();
    assert!(deleted);
    assert_eq!(copy.objects, 1, "only files/cd/meta.json: {copy:?}");
    assert!(backup.join(FILES_DIR).join("files/cd/meta.json").is_file());
    assert!(!backup.join(FILES_DIR).join("uploads_done").exists());
    assert_eq!(check(&backup, &copy).unwrap(), copy);
}

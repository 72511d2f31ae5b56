use futures_util::TryStreamExt as _;

use super::*;

async fn read_all(storage: &LocalStorage, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
    let (_, stream) = storage.get(key, range).await.expect("get");
    let pieces: Vec<Bytes> = stream.try_collect().await.expect("read");
    pieces.concat()
}

#[tokio::test]
async fn put_get_ranges_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    storage
        .put("blobs/ab/abcd", Bytes::from(bytes.clone()))
        .await
        .unwrap();
    assert_eq!(read_all(&storage, "blobs/ab/abcd", None).await, bytes);
    assert_eq!(
        read_all(&storage, "blobs/ab/abcd", Some(70_000..140_001)).await,
        bytes[70_000..140_001]
    );
    // An end past the end is cut to it; a start past it is refused.
    assert_eq!(
        read_all(&storage, "blobs/ab/abcd", Some(199_990..500_000)).await,
        bytes[199_990..]
    );
    assert!(matches!(
        storage.get("blobs/ab/abcd", Some(200_001..200_002)).await,
        Err(StorageError::BadRange)
    ));
    assert_eq!(
        storage.head("blobs/ab/abcd").await.unwrap().size_bytes,
        200_000
    );
    assert!(matches!(
        storage.head("blobs/ab").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.get("blobs/zz/none", None).await,
        Err(StorageError::NotFound)
    ));
    // Replacing is whole.
    storage
        .put("blobs/ab/abcd", Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(read_all(&storage, "blobs/ab/abcd", None).await, b"new");
}

#[tokio::test]
async fn keys_outside_the_rules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    for key in [
        "",
        "../x",
        "a/../b",
        "a//b",
        "/a",
        "A",
        ".tmp/x",
        "a/.hidden",
        "a b",
    ] {
        assert!(
            matches!(
                storage.put(key, Bytes::new()).await,
                Err(StorageError::Failed(_))
            ),
            "{key:?}"
        );
    }
    assert!(storage.list("../", None, 10).await.is_err());
}

#[tokio::test]
async fn a_written_object_is_invisible_until_finished_and_gone_if_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    let mut writer = storage.create("blobs/cd/cdef").await.unwrap();
    writer.write(Bytes::from_static(b"hello ")).await.unwrap();
    writer.write(Bytes::from_static(b"world")).await.unwrap();
    assert!(matches!(
        storage.head("blobs/cd/cdef").await,
        Err(StorageError::NotFound)
    ));
    assert!(storage.list("", None, 100).await.unwrap().is_empty());
    let meta = writer.finish().await.unwrap();
    assert_eq!(meta.size_bytes, 11);
    assert_eq!(
        read_all(&storage, "blobs/cd/cdef", None).await,
        b"hello world"
    );

    let mut dropped = storage.create("blobs/ef/efef").await.unwrap();
    dropped.write(Bytes::from_static(b"half")).await.unwrap();
    drop(dropped);
    let mut aborted = storage.create("blobs/ef/efef").await.unwrap();
    aborted.write(Bytes::from_static(b"half")).await.unwrap();
    aborted.abort().await.unwrap();
    assert!(matches!(
        storage.head("blobs/ef/efef").await,
        Err(StorageError::NotFound)
    ));
    let tmp_left = fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count();
    assert_eq!(tmp_left, 0, "temporary files left behind");
}

#[tokio::test]
async fn temporary_files_of_a_crash_are_never_listed_and_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    storage
        .put("files/a/meta.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    // What a crash mid-write leaves: a temporary file (the writer is leaked, as a killed
    // process would).
    let mut writer = storage.create("blobs/aa/aaaa").await.unwrap();
    writer.write(Bytes::from_static(b"partial")).await.unwrap();
    std::mem::forget(writer);
    let listed = storage.list("", None, 100).await.unwrap();
    assert_eq!(
        listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
        ["files/a/meta.json"]
    );
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 1);
    drop(storage);
    let reopened = LocalStorage::open(dir.path()).unwrap();
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    assert!(matches!(
        reopened.head("blobs/aa/aaaa").await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(read_all(&reopened, "files/a/meta.json", None).await, b"{}");
}

#[tokio::test]
async fn list_is_in_key_order_paged_and_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    // `a.b` sorts before `a/…` ('.' < '/'), `a-c` too ('-' < '.').
    let keys = [
        "a-c",
        "a.b",
        "a/x/1",
        "a/x/2",
        "a/y",
        "b/00000001",
        "b/00000002",
        "b/00000010",
        "c",
    ];
    for key in keys.iter().rev() {
        storage.put(key, Bytes::from_static(b"x")).await.unwrap();
    }
    let all = storage.list("", None, 100).await.unwrap();
    assert_eq!(all.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), keys);
    // Paging on with the last key gives the same order.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = storage.list("", after.as_deref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        paged.extend(page.into_iter().map(|l| l.key));
    }
    assert_eq!(paged, keys);
    let under_a: Vec<_> = storage.list("a/", None, 100).await.unwrap();
    assert_eq!(
        under_a.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
        ["a/x/1", "a/x/2", "a/y"]
    );
    // A prefix ending mid-segment, and `after` skipping a whole directory.
    let b0: Vec<_> = storage.list("b/0000000", None, 100).await.unwrap();
    assert_eq!(b0.len(), 2);
    let after_x = storage.list("a/", Some("a/x/~"), 100).await.unwrap();
    assert_eq!(after_x[0].key, "a/y");
    assert!(storage.list("nothing/", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_the_object_and_its_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    storage
        .put("uploads/1/ab/chunks/00000000", Bytes::from_static(b"x"))
        .await
        .unwrap();
    storage
        .put("uploads/1/ab/meta.json", Bytes::from_static(b"x"))
        .await
        .unwrap();
    storage
        .delete("uploads/1/ab/chunks/00000000")
        .await
        .unwrap();
    assert!(!dir.path().join("uploads/1/ab/chunks").exists());
    storage.delete("uploads/1/ab/meta.json").await.unwrap();
    assert!(!dir.path().join("uploads").exists());
    // Absent: not an error.
    storage.delete("uploads/1/ab/meta.json").await.unwrap();
    // The directory comes back for the next put.
    storage
        .put("uploads/1/ab/meta.json", Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(
        read_all(&storage, "uploads/1/ab/meta.json", None).await,
        b"y"
    );
}

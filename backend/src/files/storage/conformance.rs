//! What every adapter of the storage port must do, as checks generic over [`FileStorage`]. An
//! adapter's tests declare them all with [`storage_conformance!`], given a function that
//! makes a fresh, empty storage (its own temporary directory, or its own key prefix in the
//! test bucket), so the checks may run in parallel.

use std::any::Any;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ByteStream, FileStorage, Listed, StorageError};

/// A storage to check, and whatever must live as long as it (a temporary directory).
pub(crate) struct Subject {
    pub storage: Box<dyn FileStorage>,
    pub guard: Box<dyn Any + Send>,
}

/// Bytes read back in one check, at most: a stream that never ends fails the check.
const READ_BYTES_MAX: usize = 64 << 20;

/// Declares one `#[tokio::test]` per check below, each on a storage from `$make`, an
/// `async fn() -> Option<Subject>` (`None`: the adapter's server is absent, and it said so).
macro_rules! storage_conformance {
    ($make:path) => {
        $crate::files::storage::conformance::storage_conformance!(@tests $make;
            put_get_round_trip, put_replaces, empty_object, ranges, bad_ranges,
            writer_invisible_until_finish, writer_abort_leaves_nothing,
            writer_dropped_leaves_nothing, writer_empty_object, large_object_in_parts,
            list_pages_in_key_order_within_prefix, list_prefix_is_a_string_prefix,
            a_walk_pages_as_listings_do, delete_is_idempotent, not_found);
    };
    (@tests $make:path; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(subject) = $make().await else { return };
                $crate::files::storage::conformance::$check(&*subject.storage).await;
                drop(subject.guard);
            }
        )*
    };
}
pub(crate) use storage_conformance;

/// `n` bytes that differ from their neighbours and from other offsets, with `seed` mixed in.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) % 251) as u8 ^ seed)
        .collect()
}

async fn read_all(mut stream: ByteStream) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece?);
        assert!(out.len() <= READ_BYTES_MAX, "the stream did not end");
    }
    Ok(out)
}

async fn get_bytes(
    s: &dyn FileStorage,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, StorageError> {
    let (_, stream) = s.get(key, range).await?;
    read_all(stream).await
}

fn keys(listed: &[Listed]) -> Vec<&str> {
    listed.iter().map(|l| l.key.as_str()).collect()
}

pub(crate) async fn put_get_round_trip(s: &dyn FileStorage) {
    let bytes = pattern(100_000, 1);
    s.put("round/trip/obj", Bytes::from(bytes.clone()))
        .await
        .unwrap();
    let (meta, stream) = s.get("round/trip/obj", None).await.unwrap();
    assert_eq!(meta.size_bytes, 100_000);
    assert_eq!(read_all(stream).await.unwrap(), bytes);
    let head = s.head("round/trip/obj").await.unwrap();
    assert_eq!(head.size_bytes, 100_000);
    assert!(
        head.modified_ms > 1_600_000_000_000,
        "modified_ms is ms since the epoch"
    );
}

pub(crate) async fn put_replaces(s: &dyn FileStorage) {
    s.put("replace/obj", Bytes::from(pattern(5000, 1)))
        .await
        .unwrap();
    s.put("replace/obj", Bytes::from(pattern(300, 2)))
        .await
        .unwrap();
    assert_eq!(
        get_bytes(s, "replace/obj", None).await.unwrap(),
        pattern(300, 2)
    );
    assert_eq!(s.head("replace/obj").await.unwrap().size_bytes, 300);
}

pub(crate) async fn empty_object(s: &dyn FileStorage) {
    s.put("empty/obj", Bytes::new()).await.unwrap();
    assert_eq!(s.head("empty/obj").await.unwrap().size_bytes, 0);
    let (meta, stream) = s.get("empty/obj", None).await.unwrap();
    assert_eq!(meta.size_bytes, 0);
    assert!(read_all(stream).await.unwrap().is_empty());
}

pub(crate) async fn ranges(s: &dyn FileStorage) {
    let bytes = pattern(1000, 3);
    s.put("ranges/obj", Bytes::from(bytes.clone()))
        .await
        .unwrap();
    for (range, want) in [
        (0..10, 0..10),           // the start
        (100..357, 100..357),     // the middle
        (990..1000, 990..1000),   // the last bytes (as `bytes=-10` asks)
        (999..1000, 999..1000),   // the last byte
        (500..5000, 500..1000),   // an end past the end is cut to it
        (0..u64::MAX, 0..1000),   // the whole object as a range
        (0..1000, 0..1000),       // exactly the whole object
        (1000..1010, 1000..1000), // at the end: no bytes
        (1000..u64::MAX, 1000..1000),
        (20..20, 20..20), // empty
    ] {
        let (meta, stream) = s.get("ranges/obj", Some(range.clone())).await.unwrap();
        assert_eq!(
            meta.size_bytes, 1000,
            "the meta is the whole object's for {range:?}"
        );
        assert_eq!(
            read_all(stream).await.unwrap(),
            bytes[want.start..want.end],
            "bytes of {range:?}"
        );
    }
}

pub(crate) async fn bad_ranges(s: &dyn FileStorage) {
    s.put("ranges/bad", Bytes::from(pattern(1000, 4)))
        .await
        .unwrap();
    for range in [1001..1002, 1001..1010, 5000..u64::MAX, 1001..1001] {
        match s.get("ranges/bad", Some(range.clone())).await {
            Err(StorageError::BadRange) => {}
            Err(e) => panic!("{range:?}: {e}, not BadRange"),
            Ok(_) => panic!("{range:?} starts past the end and was served"),
        }
    }
    // Nor is any range of an empty object but those at its start.
    s.put("ranges/empty", Bytes::new()).await.unwrap();
    assert!(
        get_bytes(s, "ranges/empty", Some(0..10))
            .await
            .unwrap()
            .is_empty()
    );
    match s.get("ranges/empty", Some(1..10)).await {
        Err(StorageError::BadRange) => {}
        other => panic!("1..10 of an empty object: {:?}", other.err()),
    }
}

pub(crate) async fn writer_invisible_until_finish(s: &dyn FileStorage) {
    let mut w = s.create("writer/obj").await.unwrap();
    let mut want = Vec::new();
    for i in 0..200u32 {
        let piece = pattern(1000 + i as usize, i as u8);
        want.extend_from_slice(&piece);
        w.write(Bytes::from(piece)).await.unwrap();
        if i % 50 == 0 {
            assert!(
                matches!(s.head("writer/obj").await, Err(StorageError::NotFound)),
                "visible before finish"
            );
        }
    }
    assert!(matches!(
        s.get("writer/obj", None).await,
        Err(StorageError::NotFound)
    ));
    assert!(
        s.list("writer/", None, 100).await.unwrap().is_empty(),
        "listed before finish"
    );
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size_bytes, want.len() as u64);
    assert_eq!(
        s.head("writer/obj").await.unwrap().size_bytes,
        want.len() as u64
    );
    assert_eq!(get_bytes(s, "writer/obj", None).await.unwrap(), want);
    assert_eq!(
        keys(&s.list("writer/", None, 100).await.unwrap()),
        ["writer/obj"]
    );
}

pub(crate) async fn writer_abort_leaves_nothing(s: &dyn FileStorage) {
    let mut w = s.create("abort/obj").await.unwrap();
    for i in 0..10u8 {
        w.write(Bytes::from(pattern(10_000, i))).await.unwrap();
    }
    w.abort().await.unwrap();
    assert!(matches!(
        s.head("abort/obj").await,
        Err(StorageError::NotFound)
    ));
    assert!(s.list("abort/", None, 100).await.unwrap().is_empty());
    // Past one part too (a multipart upload begun on S3).
    let mut w = s.create("abort/big").await.unwrap();
    for i in 0..9u8 {
        w.write(Bytes::from(pattern(1 << 20, i))).await.unwrap();
    }
    w.abort().await.unwrap();
    assert!(matches!(
        s.head("abort/big").await,
        Err(StorageError::NotFound)
    ));
    assert!(s.list("abort/", None, 100).await.unwrap().is_empty());
}

pub(crate) async fn writer_dropped_leaves_nothing(s: &dyn FileStorage) {
    let mut w = s.create("dropped/obj").await.unwrap();
    for i in 0..9u8 {
        w.write(Bytes::from(pattern(1 << 20, i))).await.unwrap();
    }
    drop(w);
    assert!(matches!(
        s.head("dropped/obj").await,
        Err(StorageError::NotFound)
    ));
    assert!(s.list("dropped/", None, 100).await.unwrap().is_empty());
}

pub(crate) async fn writer_empty_object(s: &dyn FileStorage) {
    let w = s.create("writer-empty/obj").await.unwrap();
    assert_eq!(w.finish().await.unwrap().size_bytes, 0);
    assert_eq!(s.head("writer-empty/obj").await.unwrap().size_bytes, 0);
    assert!(
        get_bytes(s, "writer-empty/obj", None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// 12 MiB in 1 MiB writes: more than two S3 parts, the last one short.
pub(crate) async fn large_object_in_parts(s: &dyn FileStorage) {
    const MIB: usize = 1 << 20;
    let mut w = s.create("large/obj").await.unwrap();
    let mut want = Vec::with_capacity(12 * MIB + 123);
    for i in 0..12u8 {
        let piece = pattern(MIB, i);
        want.extend_from_slice(&piece);
        w.write(Bytes::from(piece)).await.unwrap();
    }
    let tail = pattern(123, 99);
    want.extend_from_slice(&tail);
    w.write(Bytes::from(tail)).await.unwrap();
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size_bytes, want.len() as u64);
    assert_eq!(
        s.head("large/obj").await.unwrap().size_bytes,
        want.len() as u64
    );
    let got = get_bytes(s, "large/obj", None).await.unwrap();
    assert!(got == want, "the large object came back different");
    // Across part boundaries (5 MiB, 8 MiB: every part size an adapter may use).
    for at in [5 * MIB, 8 * MIB] {
        let range = (at - 1000) as u64..(at + 1000) as u64;
        assert_eq!(
            get_bytes(s, "large/obj", Some(range)).await.unwrap(),
            want[at - 1000..at + 1000]
        );
    }
}

pub(crate) async fn list_pages_in_key_order_within_prefix(s: &dyn FileStorage) {
    let mut want = Vec::new();
    // Put in an order other than the keys', at two depths.
    for i in (0..23u32).rev() {
        let key = format!("list/a/{i:08}");
        s.put(&key, Bytes::from(pattern(i as usize, 5)))
            .await
            .unwrap();
        want.push(key);
    }
    for key in ["list/a/sub/meta.json", "list/a/zz/deep/key"] {
        s.put(key, Bytes::from_static(b"x")).await.unwrap();
        want.push(key.to_owned());
    }
    // Neighbours that must never show.
    for key in ["list/ab/00000001", "list/b/00000001", "list/0", "lisu/a/1"] {
        s.put(key, Bytes::from_static(b"y")).await.unwrap();
    }
    want.sort();
    let mut got: Vec<Listed> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.list("list/a/", after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7, "a page longer than the limit");
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        got.extend(page);
    }
    assert_eq!(
        keys(&got),
        want,
        "every key under the prefix, once, in key order"
    );
    for listed in &got {
        if let Some(i) = listed.key.strip_prefix("list/a/")
            && let Ok(i) = i.parse::<u64>()
        {
            assert_eq!(listed.meta.size_bytes, i, "size of {}", listed.key);
        }
    }
    // `after` a key that does not exist, and past the last one.
    let page = s
        .list("list/a/", Some("list/a/00000010x"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&page), ["list/a/00000011", "list/a/00000012"]);
    assert!(
        s.list("list/a/", Some("list/a/zzz"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    // An `after` before the prefix starts at its first key.
    let page = s.list("list/a/", Some("list/0"), 1).await.unwrap();
    assert_eq!(keys(&page), ["list/a/00000000"]);
    assert!(s.list("list/none/", None, 5).await.unwrap().is_empty());
}

/// A walk's pages (`list_walk`) give what listings give on a tree that does not change, and
/// see a key deleted since an earlier page no more.
pub(crate) async fn a_walk_pages_as_listings_do(s: &dyn FileStorage) {
    for user in 0..5u32 {
        for upload in 0..4u32 {
            for name in ["chunks/00000000", "chunks/00000001", "meta.json"] {
                let key = format!("walk/{user}/{upload:04}/{name}");
                s.put(&key, Bytes::from_static(b"w")).await.unwrap();
            }
        }
    }
    s.put("walkz/1", Bytes::from_static(b"n")).await.unwrap();
    let listed = s.list("walk/", None, 1000).await.unwrap();
    assert_eq!(listed.len(), 60);
    let mut walked: Vec<Listed> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_walk("walk/", after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7, "a page longer than the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        walked.extend(page);
        // Deleted behind and ahead of the walk: the one ahead is not listed.
        if walked.len() == 21 {
            s.delete("walk/4/0003/meta.json").await.unwrap();
        }
    }
    let mut want = keys(&listed);
    want.retain(|k| *k != "walk/4/0003/meta.json");
    assert_eq!(keys(&walked), want);
}

/// The prefix is a string prefix of the key, not only a whole path segment.
pub(crate) async fn list_prefix_is_a_string_prefix(s: &dyn FileStorage) {
    for key in ["sp/abc/1", "sp/abd", "sp/ab/2", "sp/b"] {
        s.put(key, Bytes::from_static(b"z")).await.unwrap();
    }
    let page = s.list("sp/ab", None, 10).await.unwrap();
    assert_eq!(keys(&page), ["sp/ab/2", "sp/abc/1", "sp/abd"]);
    let page = s.list("sp/ab", Some("sp/ab/2"), 10).await.unwrap();
    assert_eq!(keys(&page), ["sp/abc/1", "sp/abd"]);
}

pub(crate) async fn delete_is_idempotent(s: &dyn FileStorage) {
    s.put("del/obj", Bytes::from_static(b"gone soon"))
        .await
        .unwrap();
    s.put("del/keep", Bytes::from_static(b"stays"))
        .await
        .unwrap();
    s.delete("del/obj").await.unwrap();
    assert!(matches!(
        s.head("del/obj").await,
        Err(StorageError::NotFound)
    ));
    s.delete("del/obj").await.unwrap();
    s.delete("del/never/was").await.unwrap();
    assert_eq!(keys(&s.list("del/", None, 10).await.unwrap()), ["del/keep"]);
}

pub(crate) async fn not_found(s: &dyn FileStorage) {
    assert!(matches!(
        s.head("nf/none").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        s.get("nf/none", None).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        s.get("nf/none", Some(0..10)).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        s.get("nf/none", Some(50..60)).await,
        Err(StorageError::NotFound)
    ));
}

/// The local disk adapter, each check in a temporary directory of its own.
mod local {
    use super::Subject;
    use crate::files::storage::local::LocalStorage;

    async fn subject() -> Option<Subject> {
        let dir = tempfile::tempdir().unwrap();
        Some(Subject {
            storage: Box::new(LocalStorage::open(dir.path()).unwrap()),
            guard: Box::new(dir),
        })
    }

    storage_conformance!(subject);
}

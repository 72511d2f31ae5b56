//! The file API over real HTTP: a real backend (embedded store, real accounts and tokens), its
//! files router served on a port-0 listener, and a real HTTP client.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use reqwest::StatusCode;
use ringchat_proto::v1::{self, login};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::files::FilesConfig;
use crate::files::service::sha256_hex;
use crate::service::Backend;

mod limits;

const CHUNK: usize = 64 * 1024;
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Harness {
    backend: Arc<Backend>,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn files_config() -> FilesConfig {
    FilesConfig {
        chunk_bytes: CHUNK as u64,
        file_bytes_max: 1024 * 1024,
        uploads_in_progress_max: 3,
        user_quota_bytes: 2 * 1024 * 1024,
        ..FilesConfig::default()
    }
}

async fn harness(files: FilesConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    // Cheap password hashes: the tests log in, they do not measure argon2.
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    settings.files = files;
    assert_eq!(settings.problems(), Vec::<String>::new());
    let backend = Backend::open(settings, Vec::new()).expect("backend opens");
    let router = backend
        .files_router()
        .expect("files are enabled")
        .layer(axum::Extension(crate::files::http::ClientAddr(PEER)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Harness {
        backend,
        base,
        http,
        server,
        dir,
    }
}

impl Harness {
    /// Registers `name` and logs in with the password: a real token.
    async fn user(&self, name: &str) -> (u64, String) {
        let registered = self
            .backend
            .accounts
            .register(
                PEER,
                v1::Register {
                    username: name.into(),
                    password: "correct horse battery".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("register");
        let auth = self
            .backend
            .accounts
            .authenticate(
                PEER,
                &v1::Login {
                    account: Some(login::Account::Username(name.into())),
                    credential: Some(login::Credential::Password("correct horse battery".into())),
                    device_id: "test".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("login");
        (registered.user_id, auth.token)
    }

    async fn create(&self, token: &str, name: &str, bytes: &[u8]) -> (StatusCode, Value) {
        self.create_raw(
            token,
            json!({"name": name, "size": bytes.len(), "mime": "image/png", "sha256": sha256_hex(bytes)}),
        )
        .await
    }

    async fn create_raw(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/files", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    async fn put(
        &self,
        token: &str,
        upload: &str,
        index: usize,
        bytes: &[u8],
    ) -> (StatusCode, Value) {
        self.put_with_sha(token, upload, index, bytes, &sha256_hex(bytes))
            .await
    }

    async fn put_with_sha(
        &self,
        token: &str,
        upload: &str,
        index: usize,
        bytes: &[u8],
        sha: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}/files/{upload}/chunks/{index}", self.base))
            .bearer_auth(token)
            .header("x-chunk-sha256", sha)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    async fn present(&self, token: &str, upload: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/files/{upload}/chunks", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    async fn complete(&self, token: &str, upload: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/files/{upload}/complete", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    /// Creates, sends every chunk and completes: the file id.
    async fn upload(&self, token: &str, name: &str, bytes: &[u8]) -> String {
        let (status, created) = self.create(token, name, bytes).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let upload = created["upload_id"].as_str().unwrap().to_owned();
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            let (status, body) = self.put(token, &upload, i, chunk).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        let (status, done) = self.complete(token, &upload).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        done["file_id"].as_str().unwrap().to_owned()
    }

    fn download(&self, token: &str, file: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/files/{file}", self.base))
            .bearer_auth(token)
    }

    async fn stop(self) {
        self.server.abort();
        self.backend.finish().await;
    }
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"))
    };
    (status, value)
}

/// `n` bytes that differ from chunk to chunk.
fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8 ^ (i >> 16) as u8)
        .collect()
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_with_resume_out_of_order_and_duplicate_chunks() {
    let h = harness(files_config()).await;
    let (alice, token) = h.user("alice").await;
    // Three chunks, the last one short.
    let bytes = content(2 * CHUNK + 1000, 1);
    let (status, created) = h.create(&token, "holiday.png", &bytes).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["chunk_size"], CHUNK);
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();

    // Out of order, one sent twice: then the connection "drops" and the client asks what the
    // server has.
    assert_eq!(
        h.put(&token, &upload, 2, chunks[2]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.put(&token, &upload, 0, chunks[0]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.put(&token, &upload, 0, chunks[0]).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, present) = h.present(&token, &upload).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(present, json!({"present": [0, 2]}));
    let (status, early) = h.complete(&token, &upload).await;
    assert_eq!(
        (status, code(&early)),
        (StatusCode::CONFLICT, "chunks_missing")
    );

    // Resume: only the missing chunk.
    assert_eq!(
        h.put(&token, &upload, 1, chunks[1]).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, done) = h.complete(&token, &upload).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let file_id = done["file_id"].as_str().unwrap().to_owned();
    // A retried complete (the answer was lost) names the same file.
    let (status, again) = h.complete(&token, &upload).await;
    assert_eq!((status, &again), (StatusCode::OK, &done));
    // The upload is no longer in progress: its chunks are gone.
    assert_eq!(h.present(&token, &upload).await.0, StatusCode::NOT_FOUND);

    let response = h.download(&token, &file_id).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string()
    );
    assert_eq!(response.bytes().await.unwrap(), bytes);

    let files = h.backend.files().unwrap();
    let meta = files.file(&file_id).await.unwrap().expect("meta.json");
    assert_eq!(
        (
            meta.uploader,
            meta.name.as_str(),
            meta.size,
            meta.mime.as_str()
        ),
        (alice, "holiday.png", bytes.len() as u64, "image/png")
    );
    assert_eq!(meta.sha256, sha256_hex(&bytes));
    assert_eq!(meta.thumb, None);
    // Content-addressed: the same bytes again make a second file on the one blob.
    let second = h.upload(&token, "copy.png", &bytes).await;
    assert_ne!(second, file_id);
    let blobs = h.dir.path().join("data/files/blobs");
    // Beside the blob: its reference records, one per file made of it (for the collector).
    let sha = sha256_hex(&bytes);
    let refs = blobs.join(&sha[..2]).join(format!("{sha}.refs"));
    assert_eq!(walk_files(&refs), 2, "a record per file at the blob");
    let count = walk_files(&blobs) - walk_files(&refs);
    assert_eq!(count, 1, "one blob for identical content");
    h.stop().await;
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunks_are_refused_and_not_stored() {
    let h = harness(files_config()).await;
    let (_, token) = h.user("bob").await;
    let bytes = content(CHUNK + 10, 2);
    let (_, created) = h.create(&token, "a.bin", &bytes).await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    let first = &bytes[..CHUNK];

    // The bytes do not match their checksum (corrupted on the way).
    let mut corrupted = first.to_vec();
    corrupted[100] ^= 1;
    let (status, body) = h
        .put_with_sha(&token, &upload, 0, &corrupted, &sha256_hex(first))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "chunk_sha256_mismatch")
    );
    // Wrong length for its index (only the last chunk may be short), index past the end,
    // checksum missing or not lowercase hex, body over chunk_bytes.
    let short = &first[..1000];
    let (status, body) = h.put(&token, &upload, 0, short).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_chunk_size")
    );
    let (status, body) = h.put(&token, &upload, 2, short).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_chunk_index")
    );
    let (status, body) = h
        .put_with_sha(&token, &upload, 0, first, &sha256_hex(first).to_uppercase())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_chunk_sha256")
    );
    let response = h
        .http
        .put(format!("{}/files/{upload}/chunks/0", h.base))
        .bearer_auth(&token)
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_chunk_sha256")
    );
    // Answered, not reset, while the client is still writing the rest of its body (the
    // server reads up to 1 MiB of it before it answers).
    for over in [1, 256 * 1024] {
        let big = content(CHUNK + over, 3);
        let (status, body) = h.put(&token, &upload, 0, &big).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large")
        );
    }
    // And told that the connection closes, so that the client's next request (this test's
    // next one, on a pooled connection) does not go into the closed socket.
    let big = content(CHUNK + 1, 3);
    let response = h
        .http
        .put(format!("{}/files/{upload}/chunks/0", h.base))
        .bearer_auth(&token)
        .header("x-chunk-sha256", sha256_hex(&big))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers().get(reqwest::header::CONNECTION).unwrap(),
        "close"
    );
    let (status, body) = h.put(&token, &upload, usize::MAX, first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(h.present(&token, &upload).await.1, json!({"present": []}));
    // Unknown or malformed upload ids.
    let (status, _) = h.put(&token, &"0".repeat(32), 0, first).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.put(&token, "..", 0, first).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_hash_mismatch_is_refused_and_the_upload_discarded() {
    let h = harness(files_config()).await;
    let (_, token) = h.user("carol").await;
    let bytes = content(CHUNK + 5, 4);
    let mut other = bytes.clone();
    other[CHUNK + 1] ^= 0xff;
    // Created for `bytes`; sends `other`, each chunk with its own (right) checksum.
    let (_, created) = h.create(&token, "x.bin", &bytes).await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    for (i, chunk) in other.chunks(CHUNK).enumerate() {
        assert_eq!(
            h.put(&token, &upload, i, chunk).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (status, body) = h.complete(&token, &upload).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "sha256_mismatch"),
        "{body}"
    );
    assert_eq!(h.present(&token, &upload).await.0, StatusCode::NOT_FOUND);
    assert_eq!(walk_files(&h.dir.path().join("data/files/blobs")), 0);

    // Claiming stored content by its hash alone gets nothing: the bytes are hashed anyway.
    let file = h.upload(&token, "real.bin", &bytes).await;
    let (_, created) = h.create(&token, "claim.bin", &bytes).await;
    let claim = created["upload_id"].as_str().unwrap().to_owned();
    for (i, chunk) in other.chunks(CHUNK).enumerate() {
        h.put(&token, &claim, i, chunk).await;
    }
    let (status, body) = h.complete(&token, &claim).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "sha256_mismatch")
    );
    let served = h
        .download(&token, &file)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(served, bytes, "the stored blob is untouched");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_with_ranges_etag_and_safe_headers() {
    let h = harness(files_config()).await;
    let (_, token) = h.user("fay").await;
    let bytes = content(3 * CHUNK + 77, 6);
    let file = h.upload(&token, "naïve \"report\".png", &bytes).await;
    let n = bytes.len();

    let whole = h.download(&token, &file).send().await.unwrap();
    let headers = whole.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "private");
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    assert_eq!(headers["etag"], etag.as_str());
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"na_ve _report_.png\"; filename*=UTF-8''na%C3%AFve%20%22report%22.png"
    );
    assert_eq!(whole.bytes().await.unwrap(), bytes);

    let ranged = |range: String| h.download(&token, &file).header("range", range).send();
    for (range, want) in [
        ("bytes=0-99".to_owned(), 0..100),
        (
            format!("bytes={}-{}", CHUNK - 10, 2 * CHUNK + 10),
            CHUNK - 10..2 * CHUNK + 11,
        ),
        ("bytes=-500".to_owned(), n - 500..n),
        (format!("bytes={}-", n - 1), n - 1..n),
        (format!("bytes=10-{}", n + 1000), 10..n),
    ] {
        let response = ranged(range.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {}-{}/{n}", want.start, want.end - 1).as_str(),
            "{range}"
        );
        assert_eq!(response.bytes().await.unwrap(), bytes[want], "{range}");
    }
    let past = ranged(format!("bytes={n}-")).await.unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{n}").as_str()
    );
    // Several ranges: the whole file (allowed by RFC 9110).
    let multi = ranged("bytes=0-1,5-6".into()).await.unwrap();
    assert_eq!(multi.status(), StatusCode::OK);

    let cached = h
        .download(&token, &file)
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.unwrap().is_empty());
    let stale = h
        .download(&token, &file)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    // A type outside the inline list is an attachment of octets.
    let page = b"<b>x!";
    let (_, created) = h
        .create_raw(
            &token,
            json!({"name": "page.html", "size": 5, "mime": "text/html", "sha256": sha256_hex(page)}),
        )
        .await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    h.put(&token, &upload, 0, page).await;
    let (_, done) = h.complete(&token, &upload).await;
    let html = h
        .download(&token, done["file_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(html.headers()["content-type"], "application/octet-stream");
    assert!(
        html.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; ")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_other_users_see_nothing() {
    let h = harness(files_config()).await;
    let (_, alice) = h.user("gail").await;
    let (_, bob) = h.user("hank").await;
    let bytes = content(1000, 7);
    let file = h.upload(&alice, "secret.png", &bytes).await;

    let anonymous = h
        .http
        .get(format!("{}/files/{file}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let (status, body) = json_of(h.download("not-a-token", &file).send().await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Bob: the same answer as for a file that does not exist, with or without a message.
    let (status, body) = json_of(h.download(&bob, &file).send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = json_of(h.download(&bob, &"f".repeat(32)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let via = h
        .http
        .get(format!("{}/files/{file}?c=1&s=1", h.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(via.status(), StatusCode::NOT_FOUND);
    let half = h
        .http
        .get(format!("{}/files/{file}?c=1", h.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(half.status(), StatusCode::BAD_REQUEST);
    // Nor can he touch Alice's uploads.
    let (_, created) = h.create(&alice, "more.png", &bytes).await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.put(&bob, &upload, 0, &bytes).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.present(&bob, &upload).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.complete(&bob, &upload).await.0, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_removed_after_their_lifetime() {
    let h = harness(files_config()).await;
    let (user, token) = h.user("ivan").await;
    let bytes = content(CHUNK + 1, 8);
    let (_, created) = h.create(&token, "left.bin", &bytes).await;
    let abandoned = created["upload_id"].as_str().unwrap().to_owned();
    h.put(&token, &abandoned, 0, &bytes[..CHUNK]).await;
    let finished = h.upload(&token, "kept.bin", &bytes).await;
    // A completed upload leaves only its record, apart from the uploads in progress.
    let uploads = h.dir.path().join(format!("data/files/uploads/{user}"));
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 1);
    let done = h.dir.path().join(format!("data/files/uploads_done/{user}"));
    assert_eq!(std::fs::read_dir(&done).unwrap().count(), 1);

    let files = h.backend.files().unwrap();
    let now = crate::time::now_ms();
    let pass = files.cleanup_pass(now).await.unwrap();
    assert_eq!((pass.examined, pass.removed, pass.wrapped), (2, 0, true));
    assert_eq!(h.present(&token, &abandoned).await.0, StatusCode::OK);

    let lifetime_ms = files.config().upload_lifetime_s * 1000;
    let pass = files.cleanup_pass(now + lifetime_ms + 1).await.unwrap();
    assert_eq!((pass.examined, pass.removed), (2, 2));
    assert_eq!(h.present(&token, &abandoned).await.0, StatusCode::NOT_FOUND);
    assert!(
        !uploads.exists() && !done.exists(),
        "the uploads' files, records and directories are gone"
    );
    // The finished file stays.
    let response = h.download(&token, &finished).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), bytes);
    h.stop().await;
}

/// A completed upload's record where versions before `uploads_done/` kept it still answers a
/// retried complete, and the cleanup removes it at the same age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_uploads_record_left_by_an_earlier_version_still_serves() {
    let h = harness(files_config()).await;
    let (user, token) = h.user("judy").await;
    let bytes = content(100, 9);
    let (_, created) = h.create(&token, "old.bin", &bytes).await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    h.put(&token, &upload, 0, &bytes).await;
    let (status, done) = h.complete(&token, &upload).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let root = h.dir.path().join("data/files");
    let old = root.join(format!("uploads/{user}/{upload}/done"));
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::rename(root.join(format!("uploads_done/{user}/{upload}")), &old).unwrap();

    assert_eq!(h.complete(&token, &upload).await, (StatusCode::OK, done));
    let files = h.backend.files().unwrap();
    let later = crate::time::now_ms() + files.config().upload_lifetime_s * 1000 + 1;
    let pass = files.cleanup_pass(later).await.unwrap();
    assert_eq!((pass.examined, pass.removed), (1, 1));
    assert!(!old.exists());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_gets_a_thumbnail_once_readable_as_the_file_is() {
    let h = harness(files_config()).await;
    let (_, token) = h.user("gil").await;
    let (_, other) = h.user("hal").await;
    let photo = image::RgbImage::from_fn(640, 400, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::from(photo)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let file = h.upload(&token, "photo.png", png.get_ref()).await;

    let meta = h
        .backend
        .files()
        .unwrap()
        .file(&file)
        .await
        .unwrap()
        .unwrap();
    let thumb = meta.thumb.expect("an image's meta names its thumbnail");
    assert_eq!((thumb.width, thumb.height), (320, 200));
    let url = format!("{}/files/{file}/thumbnail", h.base);
    let response = h.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], thumb.mime.as_str());
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let bytes = response.bytes().await.unwrap();
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 200));

    // Another user sees no more of the thumbnail than of the file.
    let response = h.http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Bytes that only claim to be an image: a file all the same, without a thumbnail.
    let fake = h.upload(&token, "fake.png", &content(CHUNK + 5, 9)).await;
    let meta = h
        .backend
        .files()
        .unwrap()
        .file(&fake)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.thumb, None);
    let response = h
        .http
        .get(format!("{}/files/{fake}/thumbnail", h.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // While other images hold the one turn to decode, an upload completes without waiting
    // for it for long: its image goes without a thumbnail.
    let files = h.backend.files().unwrap();
    let busy = files.thumb_permits.acquire().await.unwrap();
    let late = h.upload(&token, "late.png", png.get_ref()).await;
    assert_eq!(files.file(&late).await.unwrap().unwrap().thumb, None);
    drop(busy);
    h.stop().await;
}

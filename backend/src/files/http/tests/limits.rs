//! The files API's limits: sizes, uploads in progress, the quota, files per user, and the
//! chunks and completes a node works on at once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_uploads_in_progress_and_quota_limits() {
    let h = harness(files_config()).await;
    let (_, token) = h.user("dave").await;
    let sha = sha256_hex(b"");
    let ask =
        |size: u64| json!({"name": "f", "size": size, "mime": "application/zip", "sha256": sha});

    let (status, body) = h.create_raw(&token, ask(1024 * 1024 + 1)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
    );
    // Bad requests say what is wrong.
    for (bad, want) in [
        (
            json!({"name": "", "size": 1, "mime": "a/b", "sha256": sha}),
            "bad_name",
        ),
        (
            json!({"name": "a\nb", "size": 1, "mime": "a/b", "sha256": sha}),
            "bad_name",
        ),
        (
            json!({"name": "a", "size": 1, "mime": "nope", "sha256": sha}),
            "bad_mime",
        ),
        (
            json!({"name": "a", "size": 1, "mime": "a/b", "sha256": "abc"}),
            "bad_sha256",
        ),
        (
            json!({"name": "a", "size": -1, "mime": "a/b", "sha256": sha}),
            "bad_json",
        ),
        (
            json!({"name": "a", "mime": "a/b", "sha256": sha}),
            "bad_json",
        ),
    ] {
        let (status, body) = h.create_raw(&token, bad).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, want),
            "{body}"
        );
    }

    // Quota 2 MiB: a finished 1 MiB file and a 1 MiB upload in progress fill it.
    let mib = content(1024 * 1024, 5);
    h.upload(&token, "one.bin", &mib).await;
    let (status, _) = h.create_raw(&token, ask(1024 * 1024)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h.create_raw(&token, ask(1)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "over_quota"),
        "{body}"
    );
    // An empty file would cost no quota: refused.
    let (status, body) = h.create_raw(&token, ask(0)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "empty_file")
    );
    // Another user has limits of their own; small files are stopped by the in-progress
    // limit (3).
    let (_, erin) = h.user("erin").await;
    assert_eq!(
        h.create_raw(&erin, ask(1024 * 1024)).await.0,
        StatusCode::CREATED
    );
    for _ in 0..2 {
        assert_eq!(h.create_raw(&erin, ask(1)).await.0, StatusCode::CREATED);
    }
    let (status, body) = h.create_raw(&erin, ask(1)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_past_the_in_flight_limit_are_told_to_retry() {
    let h = harness(FilesConfig {
        chunks_in_flight_max: 1,
        ..files_config()
    })
    .await;
    let (_, token) = h.user("judy").await;
    let bytes = content(1000, 9);
    let (_, created) = h.create(&token, "busy.bin", &bytes).await;
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    // The one permit is taken (as by a slow chunk still arriving).
    let held = h.backend.files().unwrap().chunk_permit().unwrap();
    let response = h
        .http
        .put(format!("{}/files/{upload}/chunks/0", h.base))
        .bearer_auth(&token)
        .header("x-chunk-sha256", sha256_hex(&bytes))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
    drop(held);
    assert_eq!(
        h.put(&token, &upload, 0, &bytes).await.0,
        StatusCode::NO_CONTENT
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completes_past_the_in_flight_limit_are_told_to_retry() {
    let h = harness(FilesConfig {
        completes_in_flight_max: 1,
        ..files_config()
    })
    .await;
    let (_, ann) = h.user("ann").await;
    let (_, bea) = h.user("bea").await;
    let mut uploads = Vec::new();
    for (token, bytes) in [
        (&ann, content(3 * CHUNK + 7, 21)),
        (&bea, content(CHUNK, 22)),
    ] {
        let (_, created) = h.create(token, "whole.bin", &bytes).await;
        let upload = created["upload_id"].as_str().unwrap().to_owned();
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            assert_eq!(
                h.put(token, &upload, i, chunk).await.0,
                StatusCode::NO_CONTENT
            );
        }
        uploads.push((upload, bytes));
    }
    // Ann's complete takes the one permit, then waits for her blob's lock, held here (as the
    // collector holds it): it holds the permit for as long as the test wants.
    let files = h.backend.files().unwrap();
    let blob_lock = files.blob_lock(&sha256_hex(&uploads[0].1)).await;
    let first = tokio::spawn(
        h.http
            .post(format!("{}/files/{}/complete", h.base, uploads[0].0))
            .bearer_auth(&ann)
            .send(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files.complete_permits.available_permits() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "ann's complete never began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let response = h
        .http
        .post(format!("{}/files/{}/complete", h.base, uploads[1].0))
        .bearer_auth(&bea)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("files.completes_in_flight_max"),
        "{body}"
    );

    drop(blob_lock);
    let (status, done) = json_of(first.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, done) = h.complete(&bea, &uploads[1].0).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_at_most_files_per_user_max_files() {
    let h = harness(FilesConfig {
        files_per_user_max: 2,
        ..files_config()
    })
    .await;
    let (_, token) = h.user("lou").await;
    h.upload(&token, "one.bin", &content(10, 1)).await;
    // One finished, one in progress: no room for a third.
    let (status, _) = h.create(&token, "two.bin", &content(10, 2)).await;
    assert_eq!(status, StatusCode::CREATED);
    let bytes = content(10, 3);
    let (status, body) = h.create(&token, "three.bin", &bytes).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_files")
    );
    // Another user is not counted against.
    let (_, other) = h.user("max").await;
    assert_eq!(
        h.create(&other, "x.bin", &bytes).await.0,
        StatusCode::CREATED
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_chunks_in_flight_are_bounded_and_bad_chunks_hold_no_room() {
    let h = harness(FilesConfig {
        chunks_in_flight_max: 2,
        chunks_in_flight_per_user_max: 1,
        ..files_config()
    })
    .await;
    let (mallory, m_token) = h.user("mallory").await;
    let (_, token) = h.user("kim").await;
    let bytes = content(1000, 3);
    let (_, created) = h.create(&m_token, "slow.bin", &bytes).await;
    let slow = created["upload_id"].as_str().unwrap().to_owned();
    // Mallory has a chunk arriving slowly: her next one waits, kim's does not.
    let files = h.backend.files().unwrap();
    let held = files
        .chunk_slot(mallory, &slow, 0, &sha256_hex(&bytes), None)
        .await
        .unwrap();
    let put = |token: String, upload: String, body: Vec<u8>| {
        h.http
            .put(format!("{}/files/{upload}/chunks/0", h.base))
            .bearer_auth(token)
            .header("x-chunk-sha256", sha256_hex(&body))
            .body(body)
            .send()
    };
    let (_, other) = h.create(&m_token, "second.bin", &bytes).await;
    let other = other["upload_id"].as_str().unwrap().to_owned();
    let (status, body) = json_of(put(m_token.clone(), other, bytes.clone()).await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
    let (_, mine) = h.create(&token, "kim.bin", &bytes).await;
    let mine = mine["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.put(&token, &mine, 0, &bytes).await.0,
        StatusCode::NO_CONTENT
    );
    // With the node full, a chunk for no upload is still told so (it asked for no room).
    let _full = files.chunk_permit().unwrap();
    let (status, _) = json_of(
        put(
            token.clone(),
            "0123456789abcdef0123456789abcdef".into(),
            bytes.clone(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(held);
    h.stop().await;
}

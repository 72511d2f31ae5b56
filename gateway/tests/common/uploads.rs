//! The files HTTP API over an `Http1` connection the test holds (so it can keep it alive, cut
//! it or find it cut by a kill): create, chunks, complete and download, each checking its
//! answer, and file contents to upload.

use super::http1::{Http1, Response, sha256_hex};

/// Bytes that differ per `seed` and per position (no two files, and no two chunks, alike).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An upload the server accepted.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub chunk_size: usize,
}

impl Upload {
    /// The upload a `201 Created` answer to `POST /files` names.
    pub fn created(resp: &Response) -> Self {
        let json = resp.json();
        Self {
            id: json["upload_id"].as_str().expect("upload_id").to_owned(),
            chunk_size: json["chunk_size"].as_u64().expect("chunk_size") as usize,
        }
    }

    pub fn chunks(&self, data: &[u8]) -> usize {
        data.len().div_ceil(self.chunk_size)
    }

    pub fn chunk<'a>(&self, data: &'a [u8], index: usize) -> &'a [u8] {
        let start = index * self.chunk_size;
        &data[start..(start + self.chunk_size).min(data.len())]
    }
}

pub fn expect_status(resp: &Response, status: u16, what: &str) {
    assert_eq!(
        resp.status,
        status,
        "{what}: {} {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
}

/// The `POST /files` body that announces `data` as the file `name`.
pub fn create_body(name: &str, data: &[u8]) -> String {
    serde_json::json!({
        "name": name,
        "size": data.len(),
        "mime": "application/octet-stream",
        "sha256": sha256_hex(data),
    })
    .to_string()
}

pub async fn create(c: &mut Http1, token: &str, name: &str, data: &[u8]) -> Upload {
    let body = create_body(name, data);
    let resp = c
        .request(
            "POST",
            "/files",
            Some(token),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await
        .expect("create upload");
    expect_status(&resp, 201, "create upload");
    Upload::created(&resp)
}

/// Sends chunk `index` of `data` with its checksum; any success answer.
pub async fn put_chunk(c: &mut Http1, token: &str, up: &Upload, data: &[u8], index: usize) {
    let chunk = up.chunk(data, index);
    let sha = sha256_hex(chunk);
    let resp = c
        .request(
            "PUT",
            &format!("/files/{}/chunks/{index}", up.id),
            Some(token),
            &[("X-Chunk-Sha256", &sha)],
            chunk,
        )
        .await
        .expect("put chunk");
    assert!(
        resp.status == 200 || resp.status == 201 || resp.status == 204,
        "chunk {index}: {} {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
}

/// The indexes of the chunks the server holds, sorted.
pub async fn present(c: &mut Http1, token: &str, up: &Upload) -> Vec<usize> {
    let resp = c
        .request(
            "GET",
            &format!("/files/{}/chunks", up.id),
            Some(token),
            &[],
            b"",
        )
        .await
        .expect("present chunks");
    expect_status(&resp, 200, "present chunks");
    let mut present: Vec<usize> = resp.json()["present"]
        .as_array()
        .expect("present")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    present.sort_unstable();
    present
}

/// Asks to complete the upload; the answer, whatever it is.
pub async fn complete(c: &mut Http1, token: &str, up: &Upload) -> Response {
    c.request(
        "POST",
        &format!("/files/{}/complete", up.id),
        Some(token),
        &[],
        b"",
    )
    .await
    .expect("complete")
}

/// Completes the upload (200 expected); the file id.
pub async fn completed(c: &mut Http1, token: &str, up: &Upload) -> String {
    let resp = complete(c, token, up).await;
    expect_status(&resp, 200, "complete");
    resp.json()["file_id"].as_str().expect("file_id").to_owned()
}

pub async fn download(c: &mut Http1, token: &str, file_id: &str) -> Response {
    c.request("GET", &format!("/files/{file_id}"), Some(token), &[], b"")
        .await
        .expect("download")
}

/// Creates, sends every chunk in order and completes.
pub async fn upload(c: &mut Http1, token: &str, name: &str, data: &[u8]) -> String {
    let up = create(c, token, name, data).await;
    for index in 0..up.chunks(data) {
        put_chunk(c, token, &up, data, index).await;
    }
    completed(c, token, &up).await
}

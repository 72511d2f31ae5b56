//! Files over the HTTP API of a real server: upload a file whole (create, chunks, complete) and
//! download it, as a client does.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::TestServer;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

/// Uploads `bytes` as `token`'s user over the HTTP API on the WebSocket port; the file id.
pub fn upload(server: &TestServer, token: &str, name: &str, mime: &str, bytes: &[u8]) -> String {
    let (agent, base) = (agent(), format!("http://{}", server.ws));
    let auth = format!("Bearer {token}");
    let body = serde_json::json!({
        "name": name, "size": bytes.len(), "mime": mime, "sha256": hex(&Sha256::digest(bytes)),
    });
    let mut resp = agent
        .post(format!("{base}/files"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("files API reachable");
    let created: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(resp.status().is_success(), "create: {created}");
    let upload_id = created["upload_id"].as_str().unwrap().to_owned();
    let chunk = created["chunk_size"].as_u64().unwrap() as usize;
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        let resp = agent
            .put(format!("{base}/files/{upload_id}/chunks/{i}"))
            .header("Authorization", &auth)
            .header("X-Chunk-Sha256", hex(&Sha256::digest(piece)))
            .send(piece)
            .expect("files API reachable");
        assert!(resp.status().is_success(), "chunk {i}: {}", resp.status());
    }
    let mut resp = agent
        .post(format!("{base}/files/{upload_id}/complete"))
        .header("Authorization", &auth)
        .send_empty()
        .expect("files API reachable");
    let done: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(resp.status().is_success(), "complete: {done}");
    done["file_id"].as_str().unwrap().to_owned()
}

/// `GET /files/{file_id}` (with `?c=&s=` when given) as `token`'s user: status and body.
pub fn download(
    server: &TestServer,
    token: &str,
    file_id: &str,
    via: Option<(u64, u64)>,
) -> (u16, Vec<u8>) {
    let query = via.map_or(String::new(), |(c, s)| format!("?c={c}&s={s}"));
    let mut resp = agent()
        .get(format!("http://{}/files/{file_id}{query}", server.ws))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("files API reachable");
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    (resp.status().as_u16(), body)
}

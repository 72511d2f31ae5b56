//! The files HTTP API as a client uses it (`POST /files`, chunks, complete, `GET /files/{id}`),
//! over plain HTTP on a server's WebSocket port, and media message bodies carrying a FileRef.

use std::net::SocketAddr;

use prost::Message as _;
use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType};
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

fn json(resp: &mut ureq::http::Response<ureq::Body>) -> Value {
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// Uploads `bytes` as `token`'s user over the HTTP API on the WebSocket port; the file id.
pub fn upload(server: &TestServer, token: &str, name: &str, mime: &str, bytes: &[u8]) -> String {
    upload_via(&[server.ws], token, name, mime, bytes)
}

/// [`upload`] spread over several servers (the nodes of a cluster): created on the first,
/// chunk `i` sent to server `i % n`, completed on the last.
pub fn upload_via(
    servers: &[SocketAddr],
    token: &str,
    name: &str,
    mime: &str,
    bytes: &[u8],
) -> String {
    let agent = agent();
    let base = |i: usize| format!("http://{}", servers[i % servers.len()]);
    let auth = format!("Bearer {token}");
    let body = serde_json::json!({
        "name": name, "size": bytes.len(), "mime": mime, "sha256": hex(&Sha256::digest(bytes)),
    });
    let mut resp = agent
        .post(format!("{}/files", base(0)))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("files API reachable");
    let created = json(&mut resp);
    assert!(resp.status().is_success(), "create: {created}");
    let upload_id = created["upload_id"].as_str().unwrap().to_owned();
    let chunk = created["chunk_size"].as_u64().unwrap() as usize;
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        let resp = agent
            .put(format!("{}/files/{upload_id}/chunks/{i}", base(i)))
            .header("Authorization", &auth)
            .header("X-Chunk-Sha256", hex(&Sha256::digest(piece)))
            .send(piece)
            .expect("files API reachable");
        assert!(resp.status().is_success(), "chunk {i}: {}", resp.status());
    }
    let mut resp = agent
        .post(format!(
            "{}/files/{upload_id}/complete",
            base(servers.len() - 1)
        ))
        .header("Authorization", &auth)
        .send_empty()
        .expect("files API reachable");
    let done = json(&mut resp);
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
    download_at(server.ws, token, file_id, "", via)
}

/// `GET /files/{file_id}{what}` (`what` = "" or "/thumbnail") on the server at `ws`.
pub fn download_at(
    ws: SocketAddr,
    token: &str,
    file_id: &str,
    what: &str,
    via: Option<(u64, u64)>,
) -> (u16, Vec<u8>) {
    let query = via.map_or(String::new(), |(c, s)| format!("?c={c}&s={s}"));
    let mut resp = agent()
        .get(format!("http://{ws}/files/{file_id}{what}{query}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("files API reachable");
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    (resp.status().as_u16(), body)
}

pub fn file_ref(file_id: &str) -> v1::FileRef {
    v1::FileRef {
        file_id: file_id.into(),
        ..Default::default()
    }
}

/// A media Send of `r` to a user (`to`) or a conversation (`conv`).
pub fn media(id: &str, to: u64, conv: u64, content_type: ContentType, r: &v1::FileRef) -> Body {
    Body::Send(v1::Send {
        client_msg_id: id.into(),
        to_user_id: to,
        conversation_id: conv,
        content_type: content_type as i32,
        content: r.encode_to_vec().into(),
        ..Default::default()
    })
}

/// The message at `seq` of `conv` as `c` syncs it (a media message, to read its FileRef).
pub async fn message_at(c: &mut Client, conv: u64, seq: u64) -> v1::Message {
    c.sync_all(conv, seq - 1)
        .await
        .expect("sync")
        .into_iter()
        .find(|m| m.seq == seq)
        .expect("the message")
}

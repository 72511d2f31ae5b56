//! "Storage full" is told from the server's answer (its status, its S3 error code), never from
//! text elsewhere in the error. The S3 test server has no quota to fill, so a plain HTTP server
//! on a real socket gives the answers here: one fixed answer to every request.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// Serves `status` with `body` to every request until dropped; the endpoint's URL.
async fn answering(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // The request's head, then as many body bytes as it declares.
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
                let declared: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while read.len() < head_end + declared {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, task)
}

async fn put_against(status: &'static str, body: &'static str, key: &str) -> StorageError {
    let (url, server) = answering(status, body).await;
    let storage = S3Storage::open(&S3Config {
        endpoint: url,
        bucket: "b".into(),
        access_key_id: "id".into(),
        secret_access_key: "secret".into(),
        allow_http: true,
        request_timeout_ms: 5_000,
        retries_max: 0,
        ..S3Config::default()
    })
    .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        storage.put(key, Bytes::from_static(b"x")),
    )
    .await
    .expect("an answer within 20 s");
    server.abort();
    result.expect_err("the server refuses every request")
}

#[tokio::test]
async fn a_507_answer_or_a_quota_code_is_full() {
    let full = put_against("507 Insufficient Storage", "", "a/b").await;
    assert!(matches!(full, StorageError::Full), "{full:?}");
    let quota = put_against(
        "403 Forbidden",
        "<Error><Code>QuotaExceeded</Code><Message>over quota</Message></Error>",
        "a/b",
    )
    .await;
    assert!(matches!(quota, StorageError::Full), "{quota:?}");
}

#[tokio::test]
async fn a_507_in_a_key_or_a_time_is_not_full() {
    let failed = put_against(
        "500 Internal Server Error",
        "<Error><Code>InternalError</Code><Message>took 30.001507s</Message></Error>",
        "uploads/1/ab/chunks/00000507",
    )
    .await;
    assert!(matches!(failed, StorageError::Failed(_)), "{failed:?}");
    // A timeout, as object_store reports it: the URI and the elapsed time in the text.
    let timed_out = object_store::Error::Generic {
        store: "S3",
        source: "Error performing PUT http://127.0.0.1:9000/b/uploads/1/ab/chunks/00000507 in \
                 30.001507s - HTTP error: error sending request: operation timed out"
            .into(),
    };
    assert!(matches!(map_err(timed_out), StorageError::Failed(_)));
}

//! The webhook request: a JSON body of pushes, signed with HMAC-SHA256 so the push gateway
//! can tell it came from this server, retried with exponential backoff.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::PushConfig;
use super::resolve::PushItem;

/// Header carrying `sha256=<hex of HMAC-SHA256(push.secret, body)>`.
pub(crate) const SIGNATURE_HEADER: &str = "x-ringchat-signature";

#[derive(Serialize)]
struct Payload<'a> {
    /// When the request was first made (retries send the same body): a push gateway may
    /// refuse old ones as replays.
    sent_at_ms: u64,
    pushes: &'a [PushItem],
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The push gateway's HTTP client. Redirects are not followed: following one would turn the
/// POST into a GET without its body (301, 302), whose 2xx would count every push as sent, and
/// would carry the signed body and its signature to another host.
pub(crate) fn client(config: &PushConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ringchat/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What became of one request's pushes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Accepted,
    /// Given up: refused (a 4xx other than 429) or still failing after every retry.
    GivenUp,
}

/// Posts `pushes` as one request, retrying what may succeed later (no connection, a timeout,
/// 5xx, 429) up to `push.retries_max` times, waiting `backoff_ms`, doubled each time. Only a
/// 2xx is accepted; a redirect (3xx) is given up like any other refusal.
pub(crate) async fn post(
    client: &reqwest::Client,
    config: &PushConfig,
    pushes: &[PushItem],
) -> Sent {
    let body = serde_json::to_vec(&Payload {
        sent_at_ms: crate::time::now_ms(),
        pushes,
    })
    .expect("pushes serialise");
    let signature = signature(config.secret.as_bytes(), &body);
    let body = Bytes::from(body);
    let mut wait = Duration::from_millis(config.backoff_ms);
    let mut retries = 0;
    loop {
        let response = client
            .post(&config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .body(body.clone())
            .send()
            .await;
        let why = match response {
            Ok(r) if r.status().is_success() => return Sent::Accepted,
            Ok(r) if r.status().is_redirection() => {
                let to = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("");
                tracing::warn!(status = %r.status(), location = to, pushes = pushes.len(), "the push gateway answered a redirect, which is not followed; set push.url to the address that answers; pushes given up");
                return Sent::GivenUp;
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                format!("the push gateway answered {}", r.status())
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), pushes = pushes.len(), "the push gateway refused pushes; not retried");
                return Sent::GivenUp;
            }
            Err(e) => format!("the push gateway is unreachable: {e}"),
        };
        if retries >= config.retries_max {
            tracing::warn!(%why, pushes = pushes.len(), retries, "pushes given up");
            return Sent::GivenUp;
        }
        retries += 1;
        metrics::counter!("ringchat_push_retries_total").increment(1);
        tracing::debug!(%why, wait_ms = wait.as_millis() as u64, "push request will be retried");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(config.backoff_ms_max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push gateway whose address moved: `/push` answers 301 to `/moved`, which answers 200
    /// to anything (a GET without the body, had the redirect been followed). Returns its
    /// address and how many requests reached `/moved`.
    async fn moved_gateway() -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use axum::routing::{any, post};
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&reached);
        let app = axum::Router::new()
            .route(
                "/push",
                post(|| async {
                    (
                        axum::http::StatusCode::MOVED_PERMANENTLY,
                        [(axum::http::header::LOCATION, "/moved")],
                    )
                }),
            )
            .route(
                "/moved",
                any(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { "ok" }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, reached)
    }

    /// A redirect is not followed and not taken for an acceptance: the pushes are given up at
    /// once (not retried), and nothing reaches the redirect's target.
    #[tokio::test]
    async fn a_redirect_is_given_up_not_followed() {
        let (addr, reached) = moved_gateway().await;
        let config = PushConfig {
            url: format!("http://{addr}/push"),
            secret: "a push gateway secret of some length".into(),
            backoff_ms: 1,
            backoff_ms_max: 1,
            ..PushConfig::default()
        };
        let client = client(&config).unwrap();
        let item = PushItem {
            user_id: 100_000_001,
            devices: Vec::new(),
            conversation_id: 1,
            kind: "direct",
            from_user_id: 100_000_002,
            seq: 1,
            server_time_ms: 1,
            mention: false,
            preview: None,
            title: None,
        };
        assert_eq!(post(&client, &config, &[item]).await, Sent::GivenUp);
        assert_eq!(
            reached.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! The webhook request: a JSON body of pushes, signed with HMAC-SHA256 so the push gateway
//! can tell it came from this server, retried with exponential backoff. A 2xx answer may name
//! the request's tokens that the platforms refused (`dead_tokens`), to be forgotten.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::PushConfig;
use super::resolve::PushItem;
use super::stale::Staleness;
use crate::live::credentials_hidden;
use crate::store::UserId;

/// Bytes of a 2xx answer read for its `dead_tokens`, at most; a longer answer is accepted and
/// its body ignored.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// Header carrying `sha256=<hex of HMAC-SHA256(push.secret, body)>`.
pub(crate) const SIGNATURE_HEADER: &str = "x-ringchat-signature";

#[derive(Serialize)]
struct Payload<'a> {
    /// When the request was first made (retries send it unchanged): a push gateway may
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

/// A device's token the push gateway says is dead (the platform refused it: the app was
/// uninstalled, the token expired).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct DeadToken {
    pub user_id: UserId,
    pub device_id: String,
    pub token: String,
}

/// A 2xx answer's body, when it has one.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    dead_tokens: Vec<DeadToken>,
}

/// What became of one request's pushes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Accepted; `dead_tokens` are those of the request's devices the answer named as dead.
    Accepted { dead_tokens: Vec<DeadToken> },
    /// Given up: refused (a 4xx other than 429) or still failing after every retry.
    GivenUp,
    /// Not made, or no longer retried: every push became stale ([`Staleness`]) first.
    Stale,
}

/// The signed body of a request made at `sent_at_ms` carrying `pushes`, and its signature.
fn signed(config: &PushConfig, sent_at_ms: u64, pushes: &[PushItem]) -> (Bytes, String) {
    let body = serde_json::to_vec(&Payload { sent_at_ms, pushes }).expect("pushes serialise");
    let signature = signature(config.secret.as_bytes(), &body);
    (Bytes::from(body), signature)
}

/// Posts `pushes` as one request, retrying what may succeed later (no connection, a timeout,
/// 5xx, 429) up to `push.retries_max` times, waiting `backoff_ms`, doubled each time. Only a
/// 2xx is accepted; a redirect (3xx) is given up like any other refusal. Before the request
/// and before each retry, the pushes that became stale are dropped from `pushes` (a retry
/// then carries the rest, signed anew, `sent_at_ms` unchanged); with none left, nothing more
/// is sent. `pushes` is left holding those the outcome is about.
pub(crate) async fn post(
    client: &reqwest::Client,
    config: &PushConfig,
    stale: &Staleness,
    pushes: &mut Vec<PushItem>,
) -> Sent {
    let sent_at_ms = crate::time::now_ms();
    stale.drop_stale(pushes, sent_at_ms);
    if pushes.is_empty() {
        return Sent::Stale;
    }
    let (mut body, mut signature) = signed(config, sent_at_ms, pushes);
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
            Ok(r) if r.status().is_success() => {
                return Sent::Accepted {
                    dead_tokens: dead_tokens(r, pushes).await,
                };
            }
            Ok(r) if r.status().is_redirection() => {
                let to = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("");
                let to = credentials_hidden(to);
                tracing::warn!(status = %r.status(), location = %to, pushes = pushes.len(), "the push gateway answered a redirect, which is not followed; set push.url to the address that answers; pushes given up");
                return Sent::GivenUp;
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                format!("the push gateway answered {}", r.status())
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), pushes = pushes.len(), "the push gateway refused pushes; not retried");
                return Sent::GivenUp;
            }
            // reqwest's error names the URL, `?token=` and all (it only takes out `user:password@`).
            Err(e) => credentials_hidden(&format!("the push gateway is unreachable: {e}")),
        };
        if retries >= config.retries_max {
            tracing::warn!(%why, pushes = pushes.len(), retries, "pushes given up");
            return Sent::GivenUp;
        }
        tracing::debug!(%why, wait_ms = wait.as_millis() as u64, "push request will be retried");
        // Counted when the retry is decided (a request waiting out its backoff shows), even
        // if its pushes then go stale and it is not sent.
        metrics::counter!("ringchat_push_retries_total").increment(1);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(config.backoff_ms_max));
        if stale.drop_stale(pushes, crate::time::now_ms()) > 0 {
            if pushes.is_empty() {
                tracing::debug!(
                    retries,
                    "every push of a failing request became stale; not retried"
                );
                return Sent::Stale;
            }
            (body, signature) = signed(config, sent_at_ms, pushes);
        }
        retries += 1;
    }
}

/// The tokens a 2xx answer names as dead, of those the request carried (the answer cannot make
/// the server forget any other). An empty or unreadable body names none.
async fn dead_tokens(mut r: reqwest::Response, pushes: &[PushItem]) -> Vec<DeadToken> {
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= ANSWER_BYTES_MAX => {
                body.extend_from_slice(&chunk);
            }
            Ok(Some(_)) => {
                tracing::warn!(
                    bytes_max = ANSWER_BYTES_MAX,
                    "the push gateway's answer is too long to read for dead_tokens; ignored"
                );
                return Vec::new();
            }
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(%err, "the push gateway's answer was not read");
                return Vec::new();
            }
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let answer: Answer = match serde_json::from_slice(&body) {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(%err, "the push gateway's answer is not {{\"dead_tokens\": [...]}}; ignored");
            return Vec::new();
        }
    };
    let mut dead: Vec<DeadToken> = answer
        .dead_tokens
        .into_iter()
        .filter(|d| {
            pushes.iter().any(|p| {
                p.user_id == d.user_id
                    && p.devices
                        .iter()
                        .any(|t| t.device_id == d.device_id && t.token == d.token)
            })
        })
        .collect();
    dead.sort_unstable_by(|a, b| (a.user_id, &a.device_id).cmp(&(b.user_id, &b.device_id)));
    dead.dedup();
    dead
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
        let stale = Staleness {
            max_age_ms: u64::MAX,
            sessions: crate::sessions::SharedSessions::new(crate::sessions::Sessions::new(
                4,
                Vec::new(),
            )),
        };
        assert_eq!(
            post(&client, &config, &stale, &mut vec![item]).await,
            Sent::GivenUp
        );
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

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

/// What became of one request's pushes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Accepted,
    /// Given up: refused (a 4xx other than 429) or still failing after every retry.
    GivenUp,
}

/// Posts `pushes` as one request, retrying what may succeed later (no connection, a timeout,
/// 5xx, 429) up to `push.retries_max` times, waiting `backoff_ms`, doubled each time.
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

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

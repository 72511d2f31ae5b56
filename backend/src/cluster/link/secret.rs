//! Peers prove they are nodes of this cluster without ever sending `cluster.peer_secret`: the
//! address a node dials comes from a record in Redis, which anyone who can write there can
//! name, and without `[cluster.tls]` a header is read by whoever listens there. So the dialer
//! sends a proof made for the one node it dials: HMAC-SHA256, keyed with the secret, over its
//! own node id, the target's node id, the time and a random nonce. The listener refuses the
//! stream (UNAUTHENTICATED) unless the proof names it, its time is within `PROOF_SKEW_MS` of
//! its own clock, the HMAC matches (compared in constant time) and the proof was not seen
//! before (a replay). A forwarded write names its user, so without this anyone who reaches
//! `grpc_listen` could write as anyone; and a proof caught on the way opens no other node.
//!
//! Nodes of the version before sent the secret itself (`LEGACY_HEADER`): still accepted from
//! them, so that they keep reaching upgraded nodes during a rolling upgrade (counted in
//! `ringchat_cluster_peer_legacy_secret_total`), never sent. Upgraded nodes cannot open links
//! to nodes of that version (they refuse the proof) until those are upgraded too.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Status};

use crate::same_secret::same_secret;

const HEADER: &str = "x-ringchat-peer-proof";
const LEGACY_HEADER: &str = "x-ringchat-peer-secret";
/// What a proof starts with; what its HMAC covers starts with `DOMAIN`.
const VERSION: &str = "v1";
const DOMAIN: &str = "ringchat-link-proof-v1";
/// How far a proof's time may be from the listener's clock, either way, in milliseconds: the
/// nodes' clocks differ by NTP's error, far less. A replay within it is refused by `Seen`.
pub(crate) const PROOF_SKEW_MS: u64 = 60_000;
/// Proofs remembered against replays, at most. Only proofs that checked are kept (a stranger
/// adds none), each for `2 * PROOF_SKEW_MS`: a node's dials, not its traffic, fill it.
const SEEN_MAX: usize = 65_536;

/// The proof `dialer` presents to `target` at `now_ms`: `v1/{dialer}/{ms}/{nonce}/{hmac}` (node
/// ids hold no `/`).
pub(crate) fn proof(secret: &str, dialer: &str, target: &str, now_ms: u64, nonce: u64) -> String {
    let nonce = format!("{nonce:016x}");
    let mac = mac(secret, dialer, target, now_ms, &nonce);
    format!("{VERSION}/{dialer}/{now_ms}/{nonce}/{mac}")
}

fn mac(secret: &str, dialer: &str, target: &str, ms: u64, nonce: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in [DOMAIN, dialer, target, &ms.to_string(), nonce] {
        mac.update(part.as_bytes());
        // A separator no part holds: ("ab", "c") and ("a", "bc") differ.
        mac.update(b"\n");
    }
    crate::admin::auth::credentials::hex(&mac.finalize().into_bytes())
}

/// Adds this node's proof for `target` to an outgoing `Link` request. `check-config`
/// guarantees node ids of visible ASCII.
pub(super) fn attach<T>(request: &mut Request<T>, secret: &str, me: &str, target: &str) {
    let mut nonce = [0u8; 8];
    // Without random bytes the nonce is 0: a second dial in the same millisecond is refused
    // as a replay and retried after the backoff.
    let _ = getrandom::fill(&mut nonce);
    let value = proof(
        secret,
        me,
        target,
        crate::time::now_ms(),
        u64::from_le_bytes(nonce),
    );
    if let Ok(value) = AsciiMetadataValue::try_from(value) {
        request.metadata_mut().insert(HEADER, value);
    }
}

/// The proofs that opened a stream here lately (against replays).
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<HashMap<String, u64>>);

impl Seen {
    /// `false` if `mac` was seen before (or, full, no place is free): the stream is refused.
    fn first(&self, mac: &str, now_ms: u64) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SEEN_MAX {
            seen.retain(|_, until| *until > now_ms);
        }
        if seen.len() >= SEEN_MAX || seen.contains_key(mac) {
            return false;
        }
        seen.insert(mac.to_owned(), now_ms + 2 * PROOF_SKEW_MS);
        true
    }
}

/// Whether an incoming `Link` request to node `me` shows that its dialer holds `secret`, at
/// `now_ms`: `Some(dialer)` for a proof (the node id the stream's batches must carry), `None`
/// for a node of the version before (the secret itself).
pub(super) fn check<T>(
    request: &Request<T>,
    secret: &str,
    me: &str,
    now_ms: u64,
    seen: &Seen,
) -> Result<Option<String>, Status> {
    let refused = |why: &str| {
        metrics::counter!("ringchat_cluster_peer_refused_total").increment(1);
        Err(Status::unauthenticated(format!(
            "not a node of this cluster: {why}"
        )))
    };
    if secret.is_empty() {
        return refused("cluster.peer_secret is not set here");
    }
    let header = |name| request.metadata().get(name).map(|v| v.as_bytes());
    let Some(presented) = header(HEADER) else {
        return match header(LEGACY_HEADER) {
            Some(legacy) if same_secret(legacy, secret.as_bytes()) => {
                metrics::counter!("ringchat_cluster_peer_legacy_secret_total").increment(1);
                Ok(None)
            }
            _ => refused("no proof of cluster.peer_secret"),
        };
    };
    let text = std::str::from_utf8(presented).unwrap_or_default();
    let parts: Vec<&str> = text.split('/').collect();
    let [VERSION, dialer, ms, nonce, mac_presented] = parts[..] else {
        return refused("a malformed proof");
    };
    if dialer.is_empty() || nonce.len() != 16 {
        return refused("a malformed proof");
    }
    let Ok(ms) = ms.parse::<u64>() else {
        return refused("a malformed proof");
    };
    if ms.abs_diff(now_ms) > PROOF_SKEW_MS {
        return refused("the proof's time is too far from this node's clock (check NTP)");
    }
    let expected = mac(secret, dialer, me, ms, nonce);
    if !same_secret(mac_presented.as_bytes(), expected.as_bytes()) {
        return refused("cluster.peer_secret differs, or the proof was made for another node");
    }
    if !seen.first(mac_presented, now_ms) {
        return refused("a proof used before");
    }
    Ok(Some(dialer.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn with(header: &'static str, value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(header, value.parse().expect("ascii"));
        request
    }

    #[test]
    fn a_proof_opens_only_the_node_it_was_made_for_once_and_in_time() {
        let seen = Seen::default();
        let now = 1_000_000_000;
        let ok = |r: &Request<()>| check(r, SECRET, "n2", now, &seen);
        let p = proof(SECRET, "n1", "n2", now - 1_000, 7);
        assert!(!p.contains(SECRET), "the secret itself never travels");
        assert_eq!(ok(&with(HEADER, &p)).expect("opens"), Some("n1".into()));
        assert!(ok(&with(HEADER, &p)).is_err(), "a replay");
        let elsewhere = proof(SECRET, "n1", "n3", now, 8);
        assert!(ok(&with(HEADER, &elsewhere)).is_err(), "made for n3");
        let other_secret = proof(&SECRET.replace('0', "x"), "n1", "n2", now, 9);
        assert!(ok(&with(HEADER, &other_secret)).is_err());
        for ms in [now - PROOF_SKEW_MS - 1, now + PROOF_SKEW_MS + 1] {
            assert!(ok(&with(HEADER, &proof(SECRET, "n1", "n2", ms, 10))).is_err());
        }
        // The dialer named in the proof is what the HMAC covers.
        let forged = proof(SECRET, "n1", "n2", now, 11).replacen("/n1/", "/n9/", 1);
        assert!(ok(&with(HEADER, &forged)).is_err());
        for junk in ["", "v1", "v1/n1/x/0000000000000000/00", "v2/n1/1/2/3"] {
            assert!(ok(&with(HEADER, junk)).is_err(), "{junk:?}");
        }
        assert!(ok(&Request::new(())).is_err(), "no header");
        let fresh = proof(SECRET, "n1", "n2", now, 12);
        assert!(
            check(&with(HEADER, &fresh), "", "n2", now, &seen).is_err(),
            "an empty secret admits nobody"
        );
    }

    #[test]
    fn the_secret_itself_from_an_older_node_still_opens() {
        let seen = Seen::default();
        let legacy = with(LEGACY_HEADER, SECRET);
        assert_eq!(check(&legacy, SECRET, "n2", 1, &seen).expect("opens"), None);
        let wrong = with(LEGACY_HEADER, &SECRET.replace('0', "x"));
        assert!(check(&wrong, SECRET, "n2", 1, &seen).is_err());
    }

    #[test]
    fn attach_sends_a_proof_and_not_the_secret() {
        let mut request = Request::new(());
        attach(&mut request, SECRET, "n1", "n2");
        assert!(request.metadata().get(LEGACY_HEADER).is_none());
        let seen = Seen::default();
        let now = crate::time::now_ms();
        assert_eq!(
            check(&request, SECRET, "n2", now, &seen).expect("opens"),
            Some("n1".into())
        );
    }
}

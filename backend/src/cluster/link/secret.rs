//! Peers prove they are nodes of this cluster without ever sending `cluster.peer_secret`: the
//! address a node dials comes from a record in Redis, which anyone who can write there can
//! name, and without `[cluster.tls]` a header is read by whoever listens there. So the dialer
//! sends a proof made for the one process it dials: HMAC-SHA256, keyed with the secret, over
//! its own node id, the target's node id, the address it dialled and the target's start
//! (`started_at_ms`), both from the view record it dialled by, the time and a random nonce.
//! The listener refuses the stream (UNAUTHENTICATED) unless the proof names it, its own
//! advertise address and its own start, its time is within `PROOF_SKEW_MS` of its clock, the
//! HMAC matches (compared in constant time) and the proof was not seen before (a replay). A
//! forwarded write names its user, so without this anyone who reaches `grpc_listen` could
//! write as anyone. The address is what makes a proof caught on the way useless: whoever
//! points a node's record at their own listener catches a proof for that listener's address,
//! which the real node refuses; the start makes one caught before a restart useless to the
//! new process (`Seen` is in memory only).
//!
//! Rolling upgrades: nodes of the version before sent `v1` proofs (no address, no start), and
//! those of the version before that the secret itself (`LEGACY_HEADER`). Both are still
//! accepted from them, so that they keep reaching upgraded nodes (counted in
//! `ringchat_cluster_peer_older_proof_total` and `ringchat_cluster_peer_legacy_secret_total`;
//! a v1 proof can be relayed as above until every node is upgraded), never sent. Upgraded
//! nodes cannot open links to nodes of those versions (they refuse the `v2` proof) until
//! those are upgraded too.

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
const VERSION: &str = "v2";
const DOMAIN: &str = "ringchat-link-proof-v2";
/// The proofs of the version before (`OLDER_DOMAIN`): bound to the target's node id only.
const OLDER_VERSION: &str = "v1";
const OLDER_DOMAIN: &str = "ringchat-link-proof-v1";
/// How far a proof's time may be from the listener's clock, either way, in milliseconds: the
/// nodes' clocks differ by NTP's error, far less. A replay within it is refused by `Seen`.
pub(crate) const PROOF_SKEW_MS: u64 = 60_000;
/// Proofs remembered against replays, at most. Only proofs that checked are kept (a stranger
/// adds none), each for `2 * PROOF_SKEW_MS`: a node's dials, not its traffic, fill it.
const SEEN_MAX: usize = 65_536;

/// The process a proof is made for: its node id, the address dialled (its advertise address)
/// and its start, as in its node record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) node_id: &'a str,
    pub(crate) addr: &'a str,
    pub(crate) started_at_ms: u64,
}

/// The proof `dialer` presents to `target` at `now_ms`: `v2/{dialer}/{ms}/{nonce}/{hmac}`
/// (node ids hold no `/`).
pub(crate) fn proof(secret: &str, dialer: &str, target: Target, now_ms: u64, nonce: u64) -> String {
    let nonce = format!("{nonce:016x}");
    let started = target.started_at_ms.to_string();
    let ms = now_ms.to_string();
    let parts = [
        DOMAIN,
        dialer,
        target.node_id,
        target.addr,
        &started,
        &ms,
        &nonce,
    ];
    format!(
        "{VERSION}/{dialer}/{now_ms}/{nonce}/{}",
        mac(secret, &parts)
    )
}

fn mac(secret: &str, parts: &[&str]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part.as_bytes());
        // A separator no part holds: ("ab", "c") and ("a", "bc") differ.
        mac.update(b"\n");
    }
    crate::admin::auth::credentials::hex(&mac.finalize().into_bytes())
}

/// Adds this node's proof for `target` to an outgoing `Link` request. `check-config`
/// guarantees node ids of visible ASCII.
pub(super) fn attach<T>(request: &mut Request<T>, secret: &str, me: &str, target: Target) {
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

/// Whether an incoming `Link` request to `me` (this process) shows that its dialer holds
/// `secret`, at `now_ms`: `Some(dialer)` for a proof (the node id the stream's batches must
/// carry), `None` for a node of two versions before (the secret itself).
pub(super) fn check<T>(
    request: &Request<T>,
    secret: &str,
    me: Target,
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
    let [
        version @ (VERSION | OLDER_VERSION),
        dialer,
        ms,
        nonce,
        mac_presented,
    ] = parts[..]
    else {
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
    let ms_text = ms.to_string();
    let expected = if version == VERSION {
        let started = me.started_at_ms.to_string();
        mac(
            secret,
            &[
                DOMAIN, dialer, me.node_id, me.addr, &started, &ms_text, nonce,
            ],
        )
    } else {
        mac(secret, &[OLDER_DOMAIN, dialer, me.node_id, &ms_text, nonce])
    };
    if !same_secret(mac_presented.as_bytes(), expected.as_bytes()) {
        return refused(
            "cluster.peer_secret differs, or the proof was made for another node, address or start of it (the dialer's view may predate this node's restart: it dials again)",
        );
    }
    if !seen.first(mac_presented, now_ms) {
        return refused("a proof used before");
    }
    if version == OLDER_VERSION {
        metrics::counter!("ringchat_cluster_peer_older_proof_total").increment(1);
    }
    Ok(Some(dialer.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const N2: Target = Target {
        node_id: "n2",
        addr: "10.0.0.2:7100",
        started_at_ms: 500,
    };

    fn with(header: &'static str, value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(header, value.parse().expect("ascii"));
        request
    }

    #[test]
    fn a_proof_opens_only_the_process_it_was_made_for_once_and_in_time() {
        let seen = Seen::default();
        let now = 1_000_000_000;
        let ok = |r: &Request<()>| check(r, SECRET, N2, now, &seen);
        let p = proof(SECRET, "n1", N2, now - 1_000, 7);
        assert!(!p.contains(SECRET), "the secret itself never travels");
        assert_eq!(ok(&with(HEADER, &p)).expect("opens"), Some("n1".into()));
        assert!(ok(&with(HEADER, &p)).is_err(), "a replay");
        let elsewhere = proof(
            SECRET,
            "n1",
            Target {
                node_id: "n3",
                ..N2
            },
            now,
            8,
        );
        assert!(ok(&with(HEADER, &elsewhere)).is_err(), "made for n3");
        let other_secret = proof(&SECRET.replace('0', "x"), "n1", N2, now, 9);
        assert!(ok(&with(HEADER, &other_secret)).is_err());
        for ms in [now - PROOF_SKEW_MS - 1, now + PROOF_SKEW_MS + 1] {
            assert!(ok(&with(HEADER, &proof(SECRET, "n1", N2, ms, 10))).is_err());
        }
        // The dialer named in the proof is what the HMAC covers.
        let forged = proof(SECRET, "n1", N2, now, 11).replacen("/n1/", "/n9/", 1);
        assert!(ok(&with(HEADER, &forged)).is_err());
        for junk in ["", "v1", "v2", "v2/n1/x/0000000000000000/00", "v3/n1/1/2/3"] {
            assert!(ok(&with(HEADER, junk)).is_err(), "{junk:?}");
        }
        assert!(ok(&Request::new(())).is_err(), "no header");
        let fresh = proof(SECRET, "n1", N2, now, 12);
        assert!(
            check(&with(HEADER, &fresh), "", N2, now, &seen).is_err(),
            "an empty secret admits nobody"
        );
    }

    /// Whoever points n2's record in Redis at their own listener catches n1's proof for that
    /// address: n2 refuses it. A proof caught before n2 restarted opens not the new process.
    #[test]
    fn a_proof_made_for_another_address_or_start_of_the_target_is_refused() {
        let seen = Seen::default();
        let now = 1_000_000_000;
        let ok = |r: &Request<()>| check(r, SECRET, N2, now, &seen);
        let relayed = proof(
            SECRET,
            "n1",
            Target {
                addr: "203.0.113.9:7100",
                ..N2
            },
            now,
            1,
        );
        assert!(
            ok(&with(HEADER, &relayed)).is_err(),
            "made for another address"
        );
        let before_restart = proof(
            SECRET,
            "n1",
            Target {
                started_at_ms: 499,
                ..N2
            },
            now,
            2,
        );
        assert!(
            ok(&with(HEADER, &before_restart)).is_err(),
            "made for the process before"
        );
        let right = proof(SECRET, "n1", N2, now, 3);
        assert_eq!(ok(&with(HEADER, &right)).expect("opens"), Some("n1".into()));
    }

    /// A node of the version before binds its proof to the target's node id only: still taken
    /// during a rolling upgrade (once, in time, for this node), and counted.
    #[test]
    fn a_proof_of_the_version_before_still_opens() {
        let seen = Seen::default();
        let now = 1_000_000_000;
        let older = |target: &str, nonce: &str| {
            let ms = now.to_string();
            let m = mac(SECRET, &[OLDER_DOMAIN, "n1", target, &ms, nonce]);
            format!("{OLDER_VERSION}/n1/{now}/{nonce}/{m}")
        };
        let p = older("n2", "0000000000000001");
        assert_eq!(
            check(&with(HEADER, &p), SECRET, N2, now, &seen).expect("opens"),
            Some("n1".into())
        );
        assert!(
            check(&with(HEADER, &p), SECRET, N2, now, &seen).is_err(),
            "a replay"
        );
        let elsewhere = older("n3", "0000000000000002");
        assert!(check(&with(HEADER, &elsewhere), SECRET, N2, now, &seen).is_err());
    }

    #[test]
    fn the_secret_itself_from_an_older_node_still_opens() {
        let seen = Seen::default();
        let legacy = with(LEGACY_HEADER, SECRET);
        assert_eq!(check(&legacy, SECRET, N2, 1, &seen).expect("opens"), None);
        let wrong = with(LEGACY_HEADER, &SECRET.replace('0', "x"));
        assert!(check(&wrong, SECRET, N2, 1, &seen).is_err());
    }

    #[test]
    fn attach_sends_a_proof_and_not_the_secret() {
        let mut request = Request::new(());
        attach(&mut request, SECRET, "n1", N2);
        assert!(request.metadata().get(LEGACY_HEADER).is_none());
        let seen = Seen::default();
        let now = crate::time::now_ms();
        assert_eq!(
            check(&request, SECRET, N2, now, &seen).expect("opens"),
            Some("n1".into())
        );
    }
}

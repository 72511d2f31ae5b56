//! Peers prove they are nodes of this cluster: the dialer sends `cluster.peer_secret` in a
//! request header of the `Node/Link` stream, the listener compares it in constant time and
//! refuses the stream (UNAUTHENTICATED) otherwise. A forwarded write names its user, so
//! without this anyone who reaches `grpc_listen` could write as anyone.

use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Status};

use crate::same_secret::same_secret;

const HEADER: &str = "x-ringchat-peer-secret";

/// Adds the secret to an outgoing `Link` request. `check-config` guarantees visible ASCII.
pub(super) fn attach<T>(request: &mut Request<T>, secret: &str) {
    if let Ok(value) = AsciiMetadataValue::try_from(secret) {
        request.metadata_mut().insert(HEADER, value);
    }
}

/// Whether an incoming `Link` request presents `secret`.
pub(super) fn check<T>(request: &Request<T>, secret: &str) -> Result<(), Status> {
    let presented = request
        .metadata()
        .get(HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !secret.is_empty() && same_secret(presented, secret.as_bytes()) {
        Ok(())
    } else {
        metrics::counter!("ringchat_cluster_peer_refused_total").increment(1);
        Err(Status::unauthenticated(
            "not a node of this cluster: cluster.peer_secret differs",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_passes() {
        let secret = "0123456789abcdef0123456789abcdef";
        let mut request = Request::new(());
        assert!(check(&request, secret).is_err(), "no header");
        attach(&mut request, secret);
        assert!(check(&request, secret).is_ok());
        assert!(check(&request, "0123456789abcdef0123456789abcdeX").is_err());
        assert!(
            check(&request, "").is_err(),
            "an empty secret admits nobody"
        );
    }
}

//! `[cluster.tls]`: mutual TLS on `grpc_listen` and the links between nodes. Off by default
//! (the three paths empty). On, every node serves gRPC over TLS with its certificate, dials its
//! peers over TLS checking theirs against `ca_path` (and the host of their `advertise_addr`),
//! and presents its own certificate; a `Node/Link` stream is taken only from a peer whose
//! certificate the CA signed (`link/serve.rs`), and `cluster.peer_secret` is still required.
//! The status service on the same listener takes clients without a certificate (the TLS
//! handshake asks for one but does not insist; one that is presented must be the CA's).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// `[cluster.tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsConfig {
    /// This node's certificate chain (PEM, leaf first), signed by the cluster's CA; its names
    /// must include the host of this node's `advertise_addr` (DNS name or IP address).
    pub cert_path: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// The cluster's CA certificate(s) (PEM): peers' certificates must be signed by it.
    pub ca_path: String,
}

impl ClusterTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() || !self.key_path.is_empty() || !self.ca_path.is_empty()
    }

    pub fn problems(&self) -> Vec<String> {
        let all = [&self.cert_path, &self.key_path, &self.ca_path];
        if self.enabled() && all.iter().any(|p| p.is_empty()) {
            vec!["cluster.tls: set cert_path, key_path and ca_path together (mutual TLS between nodes), or none".into()]
        } else {
            Vec::new()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cluster.tls.{key}: {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cluster.tls: {0}")]
    Invalid(String),
}

/// The node's TLS settings, read once at start.
#[derive(Debug, Clone)]
pub struct NodeTls {
    identity: Identity,
    ca: Certificate,
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

impl NodeTls {
    /// Reads the files; `None` when `[cluster.tls]` is off. The PEM is checked here (a bad
    /// file stops the node at start, not at its first dial).
    pub fn load(config: &ClusterTlsConfig) -> Result<Option<Self>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let tls = Self {
            identity: Identity::from_pem(
                read("cert_path", &config.cert_path)?,
                read("key_path", &config.key_path)?,
            ),
            ca: Certificate::from_pem(read("ca_path", &config.ca_path)?),
        };
        let invalid = |e: tonic::transport::Error| {
            TlsError::Invalid(format!("the certificate, key or CA: {}", error_chain(&e)))
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server())
            .map_err(invalid)?;
        tonic::transport::Endpoint::from_static("https://node.invalid")
            .tls_config(tls.client())
            .map_err(invalid)?;
        Ok(Some(tls))
    }

    /// The listener's: this node's certificate; clients' certificates checked against the CA
    /// when presented (peers must: `link/serve.rs`).
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
    }

    /// The dialer's: peers' certificates checked against the CA, this node's presented.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// An error with its sources (tonic's own message is only "transport error").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_all_three_or_none() {
        let c = ClusterTlsConfig::default();
        assert!(!c.enabled() && c.problems().is_empty());
        assert!(NodeTls::load(&c).unwrap().is_none());
        let half = ClusterTlsConfig {
            cert_path: "node.pem".into(),
            ..ClusterTlsConfig::default()
        };
        assert!(half.problems()[0].starts_with("cluster.tls: set cert_path, key_path and ca_path"));
        let missing = ClusterTlsConfig {
            cert_path: "/nonexistent/node.pem".into(),
            key_path: "/nonexistent/node.key".into(),
            ca_path: "/nonexistent/ca.pem".into(),
        };
        let err = NodeTls::load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("cluster.tls.cert_path: /nonexistent/node.pem"),
            "{err}"
        );
    }
}

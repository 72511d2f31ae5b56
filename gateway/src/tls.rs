//! TLS set-up: loads `[gateway.tls]`'s certificate and key into a rustls server config (ring
//! provider, TLS 1.2 and 1.3), and makes self-signed pairs for trying it out (`ringchat gen-cert`).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("gateway.tls.cert_path {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("gateway.tls.cert_path {path}: no certificate in the file")]
    NoCert { path: String },
    #[error("gateway.tls.key_path {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("gateway.tls: the certificate and key do not make a usable pair: {0}")]
    Config(#[from] rustls::Error),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Reads the PEM files and builds the server config shared by every shard.
pub fn server_config(cert_path: &str, key_path: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert_path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    // Named explicitly: another crate in the build enabling a second provider must not make
    // the process default ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A self-signed certificate (ECDSA P-256) for `names`, and its key, both PEM.
pub fn self_signed(names: Vec<String>) -> Result<(String, String), TlsError> {
    let pair = rcgen::generate_simple_self_signed(names)?;
    Ok((pair.cert.pem(), pair.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c, k) = self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
        server_config(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap();
        let err = server_config("/nonexistent/c.pem", key.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
        let err = server_config(key.to_str().unwrap(), key.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}

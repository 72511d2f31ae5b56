//! TLS set-up: loads `[gateway.tls]`'s (or `[admin.tls]`'s) certificate and key into a rustls
//! server config (ring provider, TLS 1.2 and 1.3), and makes self-signed pairs for trying it out
//! (`ringchat gen-cert`).
//!
//! The pair is read again on SIGHUP (`Certificate::reload`): a renewed certificate (certbot and
//! the like) is served from the next handshake on, without a restart. A new pair that does not
//! load, or whose key does not match, is refused and the one in use stays.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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

/// A TLS listener's configuration, and the certificate it presents (to reload).
#[derive(Debug)]
pub struct TlsServer {
    pub config: Arc<ServerConfig>,
    pub certificate: Arc<Certificate>,
}

/// The certificate and key a server config presents, read from their files at start and again
/// on `reload`. Read once per handshake (a lock taken for reading, an `Arc` cloned), never per
/// message.
#[derive(Debug)]
pub struct Certificate {
    cert_path: String,
    key_path: String,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the files again and, if they make a usable pair, serves it from the next
    /// handshake on. On an error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = load(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// The certificate chain's leaf, as served now (what a test compares).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).cert[0].clone()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// Reads the PEM files and builds the server config shared by every shard (or the admin
/// listener's connections).
pub fn server_config(cert_path: &str, key_path: &str) -> Result<TlsServer, TlsError> {
    // Named explicitly: another crate in the build enabling a second provider must not make
    // the process default ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = Arc::new(Certificate {
        current: RwLock::new(Arc::new(load(cert_path, key_path, &provider)?)),
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
        provider: Arc::clone(&provider),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
    Ok(TlsServer {
        config: Arc::new(config),
        certificate,
    })
}

/// The pair in the PEM files, checked: the key loads and matches the leaf certificate.
fn load(
    cert_path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
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
    Ok(CertifiedKey::from_der(certs, key, provider)?)
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

    #[test]
    fn a_reload_serves_the_new_pair_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let tls = server_config(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap();
        let first = tls.certificate.leaf();
        let (c2, k2) = self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, &c2).unwrap();
        std::fs::write(&key, &k2).unwrap();
        tls.certificate.reload().unwrap();
        let second = tls.certificate.leaf();
        assert_ne!(first, second);
        // The new certificate with the old key: refused, the second pair stays.
        std::fs::write(&key, &k1).unwrap();
        let err = tls.certificate.reload().unwrap_err();
        assert!(err.to_string().contains("usable pair"), "{err}");
        assert_eq!(tls.certificate.leaf(), second);
    }
}

//! The driver's settings and the pool: the URL (or `url_file`), TLS, timeouts, and the
//! durability as each session's `synchronous_commit`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use crate::config::{Durability, PostgresConfig, PostgresSslMode};
use crate::store::StoreError;

fn invalid(why: String) -> StoreError {
    StoreError::Engine(why.into())
}

/// The pool of connections `config` describes, each set up for `durability` and, when
/// given, with `schema` as its search path.
pub(super) fn pool(
    config: &PostgresConfig,
    durability: Durability,
    schema: Option<&str>,
) -> Result<Pool, StoreError> {
    let url = config.resolved_url().map_err(invalid)?;
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| invalid(format!("storage.postgres.url: {e}")))?;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    // "fsync": COMMIT returns once the commit is flushed to the WAL on disk (an ack is then
    // durable); "none": it returns at once, and a crash of the database may lose the last
    // commits (the server's own crash loses nothing).
    let synchronous_commit = match durability {
        Durability::Fsync => "on",
        Durability::None => "off",
    };
    let mut options = pg.get_options().unwrap_or_default().to_owned();
    options.push_str(&format!(
        " -c synchronous_commit={synchronous_commit} -c statement_timeout={}",
        config.statement_timeout_ms
    ));
    if let Some(schema) = schema {
        assert!(
            !schema.is_empty()
                && schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a schema name of [a-z0-9_]"
        );
        options.push_str(&format!(" -c search_path={schema}"));
    }
    // The kernel drops a connection whose sent data goes unacknowledged this long (a database
    // host that vanished): the pool then makes a new one instead of reusing a dead one.
    let unacked = Duration::from_millis(
        config
            .statement_timeout_ms
            .saturating_add(config.connect_timeout_ms),
    );
    pg.options(options.trim())
        .connect_timeout(timeout)
        .tcp_user_timeout(unacked)
        .application_name("ringchat");
    let manager_config = ManagerConfig {
        // A connection the server closed is dropped when it comes back to the pool; one that
        // broke unnoticed fails its next statement (UNAVAILABLE) and is dropped then.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.sslmode {
        PostgresSslMode::Disable => {
            pg.ssl_mode(SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        }
        PostgresSslMode::Require => {
            pg.ssl_mode(SslMode::Require);
            Manager::from_config(pg, tls(config)?, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(config.pool_connections_max)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| invalid(format!("PostgreSQL pool: {e}")))
}

/// Refuses a database whose encoding is not UTF8: ringchat's text is UTF-8, and on any other
/// encoding a name outside it would fail its whole commit group (22P05), found only once someone
/// wrote one.
pub(super) async fn check_encoding(client: &deadpool_postgres::Object) -> Result<(), StoreError> {
    let row = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await?;
    let encoding: String = row.try_get(0).map_err(|e| StoreError::Corrupt(e.into()))?;
    if encoding != "UTF8" {
        return Err(invalid(format!(
            "the PostgreSQL database's encoding is {encoding}; ringchat needs a UTF8 database \
             (CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0)"
        )));
    }
    Ok(())
}

/// rustls with the ring provider, verifying the server's certificate against `ca_file` or
/// the public web roots.
fn tls(config: &PostgresConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let file = &config.ca_file;
    match file.as_os_str().is_empty() {
        true => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        false => {
            let bad = |e: &dyn std::fmt::Display| {
                invalid(format!("storage.postgres.ca_file: {}: {e}", file.display()))
            };
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

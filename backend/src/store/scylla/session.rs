//! Connecting: the session (token-aware, data-centre-local, bounded retries and deadlines),
//! the schema applied when the keyspace lacks tables, and the keyspace set for every statement.

use std::num::NonZeroUsize;
use std::time::Duration;

use scylla::client::PoolSize;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::{Consistency, SerialConsistency};

use super::{config::is_keyspace_name, engine, schema};
use crate::config::ScyllaConfig;
use crate::store::StoreError;

fn refused(why: String) -> StoreError {
    StoreError::Engine(why.into())
}

/// The profile every statement runs with unless it says otherwise (LOCAL_SERIAL reads do).
fn profile(cfg: &ScyllaConfig) -> ExecutionProfile {
    ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        // Replicas of the partition first (token-aware), in the local data centre only:
        // LOCAL_QUORUM is counted there, and a remote one would only add latency.
        .load_balancing_policy(
            DefaultPolicy::builder()
                .prefer_datacenter(cfg.local_datacenter.clone())
                .token_aware(true)
                .permit_dc_failover(false)
                .build(),
        )
        // Bounded: each kind of failure is retried at most once, and a statement not marked
        // idempotent is never resent after a broken connection.
        .retry_policy(std::sync::Arc::new(DefaultRetryPolicy::new()))
        .build()
}

/// What can be refused before connecting, with a clearer word than the driver's (and the
/// blocking name lookups done here, not on the runtime).
pub(super) fn check_before_connecting(
    cfg: &ScyllaConfig,
    keyspace: &str,
) -> Result<(), StoreError> {
    if !is_keyspace_name(keyspace) {
        return Err(refused(format!(
            "storage.scylla.keyspace: {keyspace:?} is not a plain CQL name"
        )));
    }
    let unresolved = cfg.unresolved_hosts();
    if !unresolved.is_empty() {
        return Err(refused(format!(
            "storage.scylla.hosts: cannot resolve {unresolved:?}"
        )));
    }
    Ok(())
}

/// Connects to the cluster, applies the schema to `keyspace` if any table is missing, and
/// makes `keyspace` the session's.
pub(super) async fn connect(cfg: &ScyllaConfig, keyspace: &str) -> Result<Session, StoreError> {
    let connections = NonZeroUsize::new(cfg.connections_per_shard).ok_or_else(|| {
        refused("storage.scylla.connections_per_shard: must be at least 1".into())
    })?;
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.hosts)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .pool_size(PoolSize::PerShard(connections))
        // Write timestamps from this process, increasing: a later write of a row wins even
        // when its coordinator's clock is behind the earlier one's.
        .timestamp_generator(std::sync::Arc::new(MonotonicTimestampGenerator::new()))
        .default_execution_profile_handle(profile(cfg).into_handle());
    if !cfg.username.is_empty() {
        builder = builder.user(cfg.username.clone(), cfg.read_password()?);
    }
    let session = builder.build().await.map_err(engine)?;
    ensure_schema(&session, cfg, keyspace).await?;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(engine)?;
    Ok(session)
}

/// Creates the keyspace and the tables of `schema.cql` if any table is missing. Every
/// statement is `IF NOT EXISTS`; the driver waits for schema agreement after each.
async fn ensure_schema(
    session: &Session,
    cfg: &ScyllaConfig,
    keyspace: &str,
) -> Result<(), StoreError> {
    let tables = schema::tables(keyspace);
    let existing: Vec<String> = super::collect::<(String,)>(
        session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .map_err(engine)?,
    )?
    .into_iter()
    .map(|(t,)| t)
    .collect();
    if tables.iter().all(|(name, _)| existing.contains(name)) {
        return Ok(());
    }
    tracing::info!(
        keyspace,
        "creating the ScyllaDB schema (deploy/scylla/schema.cql)"
    );
    let create = schema::create_keyspace(
        keyspace,
        &cfg.local_datacenter,
        cfg.create_replication_factor,
    );
    session.query_unpaged(create, ()).await.map_err(engine)?;
    for (_, statement) in tables {
        session.query_unpaged(statement, ()).await.map_err(engine)?;
    }
    Ok(())
}

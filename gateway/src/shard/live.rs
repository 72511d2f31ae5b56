//! The gateway's live keys as a shard applies them. The configuration manager publishes a
//! new `ShardLive` and sends every shard `ShardEvent::Reconfigure`; the shard copies it into
//! its own cells there, so a request, an accept or a reaper tick reads plain shard-local
//! values: no lock, no atomic, nothing per message.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::fd_budget::ConnsCap;
use crate::security::IpRules;

/// The values a shard reads per request, accept or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    pub messages_per_s_max: u32,
    pub conns_per_shard_max: usize,
    pub prelogin_conns_per_ip_max: usize,
    pub prelogin_conns_per_network_max: usize,
    pub handshake_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub idle_timeout_ms: u64,
}

/// Everything live for the shards.
#[derive(Debug, Clone)]
pub struct ShardLive {
    pub limits: LiveLimits,
    pub ip_rules: Arc<IpRules>,
}

impl ShardLive {
    /// The live keys of `config`, `gateway.conns_per_shard_max` within what `cap` (the
    /// descriptor limit) holds.
    pub fn of(config: &Config, cap: &ConnsCap) -> Self {
        Self {
            limits: LiveLimits {
                messages_per_s_max: config.limits.messages_per_s_max,
                conns_per_shard_max: cap.apply(config.gateway.conns_per_shard_max),
                prelogin_conns_per_ip_max: config.gateway.prelogin_conns_per_ip_max,
                prelogin_conns_per_network_max: config.gateway.prelogin_conns_per_network_max,
                handshake_timeout_ms: config.gateway.handshake_timeout_ms,
                heartbeat_interval_ms: config.gateway.heartbeat_interval_ms,
                idle_timeout_ms: config.gateway.idle_timeout_ms,
            },
            ip_rules: Arc::new(config.security.rules()),
        }
    }
}

/// The newest `ShardLive`; read by a shard only when told to (`Reconfigure`) and at start.
#[derive(Debug)]
pub struct Published(RwLock<Arc<ShardLive>>);

impl Published {
    pub fn new(live: ShardLive) -> Self {
        Self(RwLock::new(Arc::new(live)))
    }

    pub fn get(&self) -> Arc<ShardLive> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, live: ShardLive) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}

//! File descriptors: one per client connection, and the rest the server needs. The one rule
//! for `serve` (which lowers `gateway.conns_per_shard_max` to what its RLIMIT_NOFILE holds),
//! `tune check` (which compares the limit with the configuration) and `tune plan` (which
//! proposes a fitting `conns_per_shard_max`).
//!
//! Why `serve` lowers the limit: a reconnect storm that takes every descriptor makes the
//! store's flushes, the log files and the admin listener's accepts fail with EMFILE; the
//! health checks fail, the supervisor restarts the node, and the clients storm again. With the
//! limit lowered, the extra clients are told `SERVER_FULL` and everything else keeps its
//! descriptors.

use crate::config::Config;

/// Descriptors the server needs besides the connections it counts and what each shard holds
/// ([`DESCRIPTORS_PER_SHARD`]): the store's files (tens to a few hundred segments and
/// journals), the admin listener, log files, outgoing connections (PostgreSQL, Redis,
/// ScyllaDB, S3, SMTP, the cluster's peers), the blocking pool's files, and the backend's own
/// runtime.
pub const NOFILE_HEADROOM: u64 = 1024;

/// Descriptors one shard holds whatever its clients: up to four client listeners
/// (`shard::Listeners`), an epoll instance watching each (`shard/accept.rs`), its runtime's
/// io_uring ring or epoll instance, and that runtime's eventfd for wake-ups from other threads.
pub const DESCRIPTORS_PER_SHARD: u64 = 4 + 4 + 1 + 1;

/// Descriptors reserved for everything but client connections, for `config` run with
/// `shards` shards.
pub fn reserve(config: &Config, shards: usize) -> u64 {
    // A file connection holds its socket and, for a download from local storage, the file.
    let files = if config.files.enabled {
        2 * config.gateway.files.conns_max as u64
    } else {
        0
    };
    // The cluster's gRPC listener holds up to its own cap.
    let grpc = if config.cluster.enabled {
        config.cluster.grpc_conns_max as u64
    } else {
        0
    };
    NOFILE_HEADROOM
        + shards as u64 * DESCRIPTORS_PER_SHARD
        + files
        + grpc
        + config.admin.conns_max as u64
        // A full shard still holds the sockets it is telling `SERVER_FULL`.
        + (shards * crate::shard::REJECTING_MAX) as u64
}

/// Descriptors the configuration asks for: every shard full, plus the reserve.
pub fn need(config: &Config, shards: usize) -> u64 {
    (config.gateway.conns_per_shard_max as u64)
        .saturating_mul(shards as u64)
        .saturating_add(reserve(config, shards))
}

/// Connections per shard that `nofile` descriptors hold besides the reserve (0 when they do
/// not even hold the reserve).
pub fn conns_per_shard_within(nofile: u64, config: &Config, shards: usize) -> u64 {
    nofile.saturating_sub(reserve(config, shards)) / shards.max(1) as u64
}

/// What `serve` runs with: `gateway.conns_per_shard_max`, or less when the descriptor limit
/// cannot hold that many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnsCap {
    /// The soft RLIMIT_NOFILE the server runs under (after raising it to the hard one).
    pub nofile: u64,
    /// Descriptors kept for everything but client connections.
    pub reserve: u64,
    /// Client connections one shard may hold at most, whatever the configuration says.
    pub conns_per_shard_max: usize,
}

impl ConnsCap {
    /// No cap: tests of a shard without a process limit to respect.
    pub const NONE: ConnsCap = ConnsCap {
        nofile: u64::MAX,
        reserve: 0,
        conns_per_shard_max: usize::MAX,
    };

    /// The cap for `config` with `shards` shards under `nofile` descriptors; an error when
    /// they do not leave even one connection per shard.
    pub fn new(nofile: u64, config: &Config, shards: usize) -> Result<ConnsCap, String> {
        let reserve = reserve(config, shards);
        let per_shard = conns_per_shard_within(nofile, config, shards);
        if per_shard == 0 {
            return Err(format!(
                "the open-file limit (RLIMIT_NOFILE) is {nofile}, but the server keeps {reserve} \
                 descriptors for itself ({NOFILE_HEADROOM} for the store, logs and outgoing \
                 connections, 2 x gateway.files.conns_max, admin.conns_max, \
                 cluster.grpc_conns_max when enabled, {} per shard for listeners and its \
                 runtime, {} per shard for refusals) and has \
                 {shards} shard(s): no room for clients. Raise the limit (LimitNOFILE= in \
                 systemd, `ulimit -Hn`, limits.conf; {} holds gateway.conns_per_shard_max = {} \
                 on every shard), or lower gateway.files.conns_max, admin.conns_max and \
                 cluster.grpc_conns_max",
                DESCRIPTORS_PER_SHARD,
                crate::shard::REJECTING_MAX,
                need(config, shards),
                config.gateway.conns_per_shard_max,
            ));
        }
        Ok(ConnsCap {
            nofile,
            reserve,
            conns_per_shard_max: usize::try_from(per_shard).unwrap_or(usize::MAX),
        })
    }

    /// `gateway.conns_per_shard_max` as the shards apply it.
    pub fn apply(&self, configured: usize) -> usize {
        configured.min(self.conns_per_shard_max)
    }

    /// Whether `configured` is more than the limit holds.
    pub fn lowers(&self, configured: usize) -> bool {
        configured > self.conns_per_shard_max
    }
}

/// Connections a status-only node's HTTP listener (`serve --role status`) may hold under
/// `nofile` descriptors: what the headroom and the gRPC listener's cap leave, and no more than
/// `gateway.status_http.conns_max`. An error when they leave none.
pub fn status_conns_within(nofile: u64, config: &Config) -> Result<usize, String> {
    let reserve = NOFILE_HEADROOM + config.cluster.grpc_conns_max as u64;
    let within = nofile.saturating_sub(reserve);
    if within == 0 {
        return Err(format!(
            "the open-file limit (RLIMIT_NOFILE) is {nofile}, but a status node keeps {reserve} \
             descriptors for itself ({NOFILE_HEADROOM} for logs and outgoing connections, \
             cluster.grpc_conns_max): no room for its HTTP clients. Raise the limit \
             (LimitNOFILE= in systemd, `ulimit -Hn`, limits.conf), or lower \
             cluster.grpc_conns_max"
        ));
    }
    Ok(usize::try_from(within)
        .unwrap_or(usize::MAX)
        .min(config.gateway.status_http.conns_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.gateway.files.conns_max = 100;
        c.admin.conns_max = 50;
        c
    }

    #[test]
    fn the_reserve_counts_file_admin_grpc_and_refusing_connections() {
        let c = config();
        let per_shard_refusals = crate::shard::REJECTING_MAX as u64;
        assert_eq!(
            reserve(&c, 2),
            NOFILE_HEADROOM + 200 + 50 + 2 * (DESCRIPTORS_PER_SHARD + per_shard_refusals)
        );
        let mut off = c.clone();
        off.files.enabled = false;
        assert_eq!(reserve(&off, 2), reserve(&c, 2) - 200);
        let mut cluster = c.clone();
        cluster.cluster.enabled = true;
        cluster.cluster.grpc_conns_max = 300;
        assert_eq!(reserve(&cluster, 2), reserve(&c, 2) + 300);
    }

    /// Each shard's listeners, their epoll instances, its ring (or epoll) and eventfd: ten
    /// descriptors a shard holds before any client, on top of its refusals.
    #[test]
    fn the_reserve_grows_with_the_shards_by_their_own_descriptors() {
        let c = config();
        let refusals = crate::shard::REJECTING_MAX as u64;
        for shards in [1, 2, 8, 64] {
            let more = reserve(&c, shards + 1) - reserve(&c, shards);
            assert!(more >= 10 + refusals, "{shards} -> {}: +{more}", shards + 1);
        }
    }

    #[test]
    fn the_cap_lowers_only_what_the_limit_cannot_hold() {
        let c = config();
        let r = reserve(&c, 4);
        let cap = ConnsCap::new(r + 4 * 1000 + 3, &c, 4).unwrap();
        assert_eq!(cap.conns_per_shard_max, 1000);
        assert_eq!(cap.apply(500_000), 1000);
        assert!(cap.lowers(500_000));
        assert_eq!(cap.apply(10), 10);
        assert!(!cap.lowers(1000));
        // Every shard full, and the reserve, fit the limit.
        let mut fitted = c.clone();
        fitted.gateway.conns_per_shard_max = cap.conns_per_shard_max;
        assert!(need(&fitted, 4) <= cap.nofile);
    }

    #[test]
    fn a_status_node_holds_what_its_limit_leaves_past_its_grpc_listener() {
        let mut c = config();
        c.cluster.grpc_conns_max = 4096;
        c.gateway.status_http.conns_max = 16_384;
        let reserve = NOFILE_HEADROOM + 4096;
        assert_eq!(status_conns_within(reserve + 100, &c), Ok(100));
        assert_eq!(status_conns_within(1 << 20, &c), Ok(16_384));
        let err = status_conns_within(reserve, &c).unwrap_err();
        assert!(err.contains("LimitNOFILE"), "{err}");
    }

    #[test]
    fn a_limit_below_the_reserve_is_an_error_that_says_what_to_raise() {
        let c = config();
        let err = ConnsCap::new(reserve(&c, 2) + 1, &c, 2).unwrap_err();
        assert!(err.contains("LimitNOFILE"), "{err}");
        assert!(ConnsCap::new(reserve(&c, 2) + 2, &c, 2).is_ok());
    }
}

//! Shard-local counters, published into the metrics registry only when `/metrics` is scraped.
//!
//! Each `ShardStats` has exactly one writer (its shard thread), so a bump is a plain load and
//! store with no locked instruction and no contention; readers see values at most a moment old.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ringchat_backend::admin::overview::{Connections, ServerFacts};
use ringchat_proto::v1::{ErrorCode, KickReason};

/// A counter written by one thread and read by any.
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Error codes counted per shard (index = `v1::ErrorCode` value).
pub const ERROR_CODES_MAX: usize = 128;
/// Kick reasons counted per shard (index = `v1::KickReason` value).
pub const KICK_REASONS_MAX: usize = 32;

/// The I/O driver a shard runs on.
pub const DRIVER_IO_URING: u64 = 1;
pub const DRIVER_EPOLL: u64 = 2;

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub connections: LocalCounter,
    pub authenticated: LocalCounter,
    pub accepted: LocalCounter,
    pub rejected_full: LocalCounter,
    /// Connections turned away (`SERVER_FULL`) because their client already had
    /// `gateway.prelogin_conns_per_ip_max` connections not logged in on the shard (or its IPv6
    /// network `gateway.prelogin_conns_per_network_max`).
    pub prelogin_refused: LocalCounter,
    /// Connections handed to the files service (`/files`) being served now.
    pub files_conns: LocalCounter,
    /// `/files` connections answered 503: `[gateway.files]` limits reached (or the shard full).
    pub files_refused_busy: LocalCounter,
    /// Closed at accept by `[security]`: on the deny list, or not on the allow list.
    pub refused_ip_denied: LocalCounter,
    pub refused_ip_not_allowed: LocalCounter,
    /// TLS connections closed at their ClientHello, before any crypto: past
    /// `gateway.tls_handshakes_per_shard_per_s`, past the client's share of it, or past
    /// `tls_handshakes_in_flight_per_shard_max` (`shard/tls_gate.rs`).
    pub refused_tls_rate: LocalCounter,
    pub refused_tls_client_rate: LocalCounter,
    pub refused_tls_in_flight: LocalCounter,
    /// Connections from a `gateway.proxy_protocol_from` peer closed before their PROXY header
    /// was read whole (index: `proxy_protocol::Refused::ALL`).
    pub proxy_refused: Counters<{ crate::proxy_protocol::REFUSED_REASONS }>,
    /// TLS connections accepted and not yet open (handshake under way).
    pub tls_handshakes_in_flight: LocalCounter,
    pub frames_in: LocalCounter,
    pub frames_out: LocalCounter,
    pub bytes_in: LocalCounter,
    pub bytes_out: LocalCounter,
    pub logins: LocalCounter,
    pub login_failures: LocalCounter,
    /// Pre-login requests (logins, registrations, account requests) waiting for the backend.
    pub logins_in_flight: LocalCounter,
    /// Bytes queued for the shard's connections, as of the reaper's last tick.
    pub outbound_bytes: LocalCounter,
    /// Connections kicked because the shard's queued bytes passed
    /// `gateway.outbound_bytes_per_shard_max` (counted when chosen; also in `kicks` once closed).
    pub outbound_budget_kicks: LocalCounter,
    /// Pre-login requests refused at once: `gateway.logins_in_flight_per_shard_max` reached
    /// (SERVER_FULL), the client's share of them reached (SERVER_FULL), or the backend's
    /// request queue full (UNAVAILABLE).
    pub logins_refused_in_flight: LocalCounter,
    pub logins_refused_client_share: LocalCounter,
    pub logins_refused_backend_queue: LocalCounter,
    /// Pre-login requests that waited for the shard's pace (`gateway.logins_per_second_per_shard`).
    pub logins_paced: LocalCounter,
    /// Connections whose client hung up while a pre-login request waited (for the pace or the
    /// backend): closed then, so that a login the client gave up on is not served.
    pub logins_abandoned: LocalCounter,
    /// Connections closed after `PRELOGIN_REFUSALS_PER_CONN_MAX` error answers to their
    /// pre-login requests.
    pub prelogin_refusals_closed: LocalCounter,
    /// `DRIVER_IO_URING` or `DRIVER_EPOLL` once the shard runs.
    pub driver: LocalCounter,
    pub errors: Counters<ERROR_CODES_MAX>,
    pub kicks: Counters<KICK_REASONS_MAX>,
    /// Open connections by transport (index: [`TRANSPORTS`]).
    pub transports: Counters<4>,
    /// 1 while the shard's accept loops run (from start until shutdown begins).
    pub accepting: LocalCounter,
}

/// Transport names, by their index in [`ShardStats::transports`].
pub const TRANSPORTS: [&str; 4] = ["tcp", "ws", "tls", "wss"];

/// Counters indexed by a protocol enum's value (std derives `Default` for arrays up to 32 only).
#[derive(Debug)]
pub struct Counters<const N: usize>([LocalCounter; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| LocalCounter::default()))
    }
}

impl<const N: usize> std::ops::Deref for Counters<N> {
    type Target = [LocalCounter];
    fn deref(&self) -> &[LocalCounter] {
        &self.0
    }
}

impl ShardStats {
    pub fn refused_ip(&self, why: crate::security::Refused) {
        match why {
            crate::security::Refused::Denied => self.refused_ip_denied.add(1),
            crate::security::Refused::NotAllowed => self.refused_ip_not_allowed.add(1),
        }
    }

    pub fn refused_proxy(&self, why: crate::proxy_protocol::Refused) {
        self.proxy_refused[why as usize].add(1);
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(code as usize) {
            c.add(1);
        }
    }

    pub fn kick(&self, reason: KickReason) {
        if let Some(c) = self.kicks.get(reason as usize) {
            c.add(1);
        }
    }
}

/// Copies every shard's counters into the registry; called per scrape, never per frame.
pub fn publish(shards: &[Arc<ShardStats>]) {
    for (index, s) in shards.iter().enumerate() {
        let shard = index.to_string();
        let gauge = |name: &'static str, v: u64| {
            metrics::gauge!(name, "shard" => shard.clone()).set(v as f64);
        };
        gauge("ringchat_connections", s.connections.get());
        gauge("ringchat_authenticated_connections", s.authenticated.get());
        gauge("ringchat_files_connections", s.files_conns.get());
        gauge("ringchat_logins_in_flight", s.logins_in_flight.get());
        gauge("ringchat_outbound_bytes", s.outbound_bytes.get());
        gauge(
            "ringchat_tls_handshakes_in_flight",
            s.tls_handshakes_in_flight.get(),
        );
        for (reason, n) in [
            ("logins_in_flight", s.logins_refused_in_flight.get()),
            ("client_share", s.logins_refused_client_share.get()),
            ("backend_queue_full", s.logins_refused_backend_queue.get()),
        ] {
            metrics::counter!("ringchat_logins_refused_total", "shard" => shard.clone(), "reason" => reason)
                .absolute(n);
        }
        let counter = |name: &'static str, v: u64| {
            metrics::counter!(name, "shard" => shard.clone()).absolute(v);
        };
        counter("ringchat_accepted_total", s.accepted.get());
        counter(
            "ringchat_outbound_budget_kicks_total",
            s.outbound_budget_kicks.get(),
        );
        counter("ringchat_logins_paced_total", s.logins_paced.get());
        counter("ringchat_logins_abandoned_total", s.logins_abandoned.get());
        counter(
            "ringchat_prelogin_refusals_closed_total",
            s.prelogin_refusals_closed.get(),
        );
        counter("ringchat_rejected_full_total", s.rejected_full.get());
        counter("ringchat_prelogin_refused_total", s.prelogin_refused.get());
        counter(
            "ringchat_files_refused_busy_total",
            s.files_refused_busy.get(),
        );
        for (reason, n) in [
            ("ip_denied", s.refused_ip_denied.get()),
            ("ip_not_allowed", s.refused_ip_not_allowed.get()),
            ("tls_handshake_rate", s.refused_tls_rate.get()),
            ("tls_handshake_rate_client", s.refused_tls_client_rate.get()),
            ("tls_handshakes_in_flight", s.refused_tls_in_flight.get()),
        ] {
            metrics::counter!("ringchat_connections_refused_total", "shard" => shard.clone(), "reason" => reason)
                .absolute(n);
        }
        // Every reason, zeros included: an alert on `increase()` then sees the first one.
        for why in crate::proxy_protocol::Refused::ALL {
            metrics::counter!("ringchat_proxy_header_refused_total", "shard" => shard.clone(), "reason" => why.label())
                .absolute(s.proxy_refused[why as usize].get());
        }
        counter("ringchat_frames_in_total", s.frames_in.get());
        counter("ringchat_frames_out_total", s.frames_out.get());
        counter("ringchat_bytes_in_total", s.bytes_in.get());
        counter("ringchat_bytes_out_total", s.bytes_out.get());
        counter("ringchat_shard_logins_total", s.logins.get());
        counter(
            "ringchat_shard_login_failures_total",
            s.login_failures.get(),
        );
        let driver = match s.driver.get() {
            DRIVER_IO_URING => "io_uring",
            DRIVER_EPOLL => "epoll",
            _ => "starting",
        };
        metrics::gauge!("ringchat_shard_driver", "shard" => shard.clone(), "driver" => driver)
            .set(1.0);
        let code_name = |i: i32| ErrorCode::try_from(i).ok().map(|c| c.as_str_name());
        publish_by_enum(
            &s.errors,
            "ringchat_errors_total",
            &shard,
            "code",
            code_name,
        );
        // Every named reason, zeros included: an alert on `increase()` then sees the first kick.
        for (index, c) in s.kicks.iter().enumerate() {
            let name = i32::try_from(index)
                .ok()
                .and_then(|i| KickReason::try_from(i).ok())
                .filter(|r| *r != KickReason::Unspecified)
                .map(|r| r.as_str_name());
            if let Some(name) = name {
                metrics::counter!("ringchat_kicks_total", "shard" => shard.clone(), "reason" => name)
                    .absolute(c.get());
            }
        }
        for (transport, c) in TRANSPORTS.iter().zip(s.transports.iter()) {
            metrics::gauge!("ringchat_transport_connections", "shard" => shard.clone(), "transport" => *transport)
                .set(c.get() as f64);
        }
    }
}

/// Connections one shard takes at most, as the shards apply it (the configured limit, or
/// less when the open-file limit cannot hold it: `fd_budget`).
pub fn publish_conns_per_shard_max(conns: usize) {
    metrics::gauge!("ringchat_conns_per_shard_max").set(conns as f64);
}

/// `# HELP` for every family published here and by `server.rs`; called once at start.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    for (name, help) in [
        (
            "ringchat_connections",
            "Open client connections, per shard.",
        ),
        (
            "ringchat_authenticated_connections",
            "Connections with a logged-in session, per shard.",
        ),
        (
            "ringchat_files_connections",
            "Connections under /files handed to the files service, per shard.",
        ),
        (
            "ringchat_logins_in_flight",
            "Requests of connections not yet logged in (logins, registrations) waiting for the backend, per shard (at most gateway.logins_in_flight_per_shard_max).",
        ),
        (
            "ringchat_outbound_bytes",
            "Bytes of frames queued for clients that have not taken them yet, per shard, as of the reaper's last tick (at most gateway.outbound_bytes_per_shard_max).",
        ),
        (
            "ringchat_tls_handshakes_in_flight",
            "TLS connections accepted whose opening (handshake, WebSocket upgrade) is not done yet, per shard (at most gateway.tls_handshakes_in_flight_per_shard_max).",
        ),
        (
            "ringchat_transport_connections",
            "Open client connections, per shard and transport (tcp, ws, tls, wss).",
        ),
        (
            "ringchat_conns_per_shard_max",
            "Client connections one shard takes at most: gateway.conns_per_shard_max, or less when the open-file limit (RLIMIT_NOFILE) cannot hold that many on every shard.",
        ),
        (
            "ringchat_shard_driver",
            "The I/O driver a shard runs on (value 1, driver in a label).",
        ),
        (
            "ringchat_build_info",
            "The build (value 1): version and git commit in labels.",
        ),
        (
            "ringchat_config_info",
            "Settings that change performance figures (value 1, in labels).",
        ),
    ] {
        describe_gauge!(name, help);
    }
    for (name, help) in [
        (
            "ringchat_accepted_total",
            "Connections accepted, per shard.",
        ),
        (
            "ringchat_rejected_full_total",
            "Connections refused because the shard was at gateway.conns_per_shard_max.",
        ),
        (
            "ringchat_prelogin_refused_total",
            "Connections refused (SERVER_FULL, then closed) because their client (an IPv4 address, an IPv6 /64; behind a gateway.proxy_protocol_from balancer, the PROXY header's) already had gateway.prelogin_conns_per_ip_max connections on the shard that had not logged in (or its IPv6 /48 gateway.prelogin_conns_per_network_max), per shard.",
        ),
        (
            "ringchat_files_refused_busy_total",
            "Connections under /files answered 503 ([gateway.files] limits), per shard.",
        ),
        (
            "ringchat_frames_in_total",
            "Frames received from clients, per shard.",
        ),
        (
            "ringchat_frames_out_total",
            "Frames written to clients, per shard.",
        ),
        (
            "ringchat_bytes_in_total",
            "Bytes read from client sockets, per shard.",
        ),
        (
            "ringchat_bytes_out_total",
            "Bytes written to client sockets, per shard.",
        ),
        (
            "ringchat_shard_logins_total",
            "Logins completed on the shard's connections.",
        ),
        (
            "ringchat_shard_login_failures_total",
            "Logins refused on the shard's connections.",
        ),
        (
            "ringchat_errors_total",
            "Error frames sent to clients, per shard and error code.",
        ),
        (
            "ringchat_logins_paced_total",
            "Logins (and registrations) that waited for their turn in the shard's pace (gateway.logins_per_second_per_shard), per shard.",
        ),
        (
            "ringchat_logins_abandoned_total",
            "Logins (and registrations) whose client hung up while they waited for the shard's pace or the backend, per shard: the connection is closed and a login not yet started is never served.",
        ),
        (
            "ringchat_logins_refused_total",
            "Logins (and registrations) refused at once with a retry_after_ms, per shard and reason: logins_in_flight (SERVER_FULL, gateway.logins_in_flight_per_shard_max reached), client_share (SERVER_FULL, the client's sixteenth of them in flight while only the last quarter is free: an IPv4 address, an IPv6 /48), backend_queue_full (UNAVAILABLE).",
        ),
        (
            "ringchat_prelogin_refusals_closed_total",
            "Connections closed after 8 error answers to their requests before login (logins, registrations, account requests), per shard.",
        ),
        (
            "ringchat_connections_refused_total",
            "Connections closed right after accept, before a byte is read (from a gateway.proxy_protocol_from peer: right after its PROXY header, checked on the header's address), or for the TLS reasons once their whole ClientHello is in, before any crypto, per shard and reason: ip_denied, ip_not_allowed (the IP allow / deny lists), tls_handshake_rate (past gateway.tls_handshakes_per_shard_per_s), tls_handshake_rate_client (past one client's quarter of that rate: an IPv4 address, an IPv6 /48), tls_handshakes_in_flight (gateway.tls_handshakes_in_flight_per_shard_max TLS connections already opening, or a quarter of them from the client).",
        ),
        (
            "ringchat_proxy_header_refused_total",
            "Connections from a gateway.proxy_protocol_from peer (a load balancer) closed before a whole PROXY header, per shard and reason: missing (the first bytes are not one), malformed, too_large (past 536 bytes, or a v1 line past 107), timeout (not whole within gateway.handshake_timeout_ms), closed (the peer left first: a health check that only connects).",
        ),
        (
            "ringchat_kicks_total",
            "Connections closed by the server, per shard and reason (SLOW_CONSUMER: the client did not read its frames).",
        ),
        (
            "ringchat_outbound_budget_kicks_total",
            "Connections kicked as slow consumers because their shard's queued bytes passed gateway.outbound_bytes_per_shard_max (those whose backlogs free the most first), per shard, counted when chosen.",
        ),
    ] {
        describe_counter!(name, help);
    }
}

/// What the admin overview and `/readyz` learn from the shards, handed to the backend as a
/// trait object.
pub struct GatewayFacts {
    shards: Vec<Arc<ShardStats>>,
    commit: &'static str,
}

impl GatewayFacts {
    pub fn new(shards: Vec<Arc<ShardStats>>, commit: &'static str) -> Self {
        Self { shards, commit }
    }
}

impl ServerFacts for GatewayFacts {
    fn connections(&self) -> Connections {
        let mut c = Connections::default();
        for s in &self.shards {
            c.per_shard.push(s.connections.get());
            c.authenticated += s.authenticated.get();
            c.logins_in_flight += s.logins_in_flight.get();
            c.logins_refused += s.logins_refused_in_flight.get()
                + s.logins_refused_client_share.get()
                + s.logins_refused_backend_queue.get();
            c.transports.tcp += s.transports[0].get();
            c.transports.ws += s.transports[1].get();
            c.transports.tls += s.transports[2].get();
            c.transports.wss += s.transports[3].get();
        }
        c
    }

    fn not_ready(&self) -> Option<String> {
        let stopped: Vec<String> = (0..self.shards.len())
            .filter(|&i| self.shards[i].accepting.get() == 0)
            .map(|i| i.to_string())
            .collect();
        (!stopped.is_empty()).then(|| {
            format!(
                "shard {} not accepting connections (starting or shutting down)",
                stopped.join(", ")
            )
        })
    }

    fn commit(&self) -> &str {
        self.commit
    }
}

/// Publishes counters indexed by a protocol enum's value, labelled with the value's name.
fn publish_by_enum(
    counters: &[LocalCounter],
    metric: &'static str,
    shard: &str,
    label: &'static str,
    name_of: impl Fn(i32) -> Option<&'static str>,
) {
    for (index, c) in counters.iter().enumerate() {
        let n = c.get();
        if n == 0 {
            continue;
        }
        let name = i32::try_from(index)
            .ok()
            .and_then(&name_of)
            .unwrap_or("unknown");
        metrics::counter!(metric, "shard" => shard.to_owned(), label => name).absolute(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_sum_the_shards_and_name_the_ones_not_accepting() {
        let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
        shards[0].connections.add(3);
        shards[0].transports[0].add(2);
        shards[0].transports[1].add(1);
        shards[1].connections.add(1);
        shards[1].transports[3].add(1);
        shards[1].authenticated.add(1);
        let facts = GatewayFacts::new(shards.clone(), "abc");
        let c = facts.connections();
        assert_eq!(c.per_shard, [3, 1]);
        assert_eq!(
            (
                c.transports.tcp,
                c.transports.ws,
                c.transports.tls,
                c.transports.wss
            ),
            (2, 1, 0, 1)
        );
        assert_eq!(c.authenticated, 1);
        assert_eq!(
            facts.not_ready().as_deref(),
            Some("shard 0, 1 not accepting connections (starting or shutting down)")
        );
        shards[0].accepting.set(1);
        shards[1].accepting.set(1);
        assert_eq!(facts.not_ready(), None);
        shards[1].accepting.set(0);
        assert!(facts.not_ready().unwrap().starts_with("shard 1 "));
        assert_eq!(facts.commit(), "abc");
    }

    /// The names given to `describe_*`, in order.
    #[derive(Default)]
    struct Descriptions(std::sync::Mutex<Vec<String>>);

    impl Descriptions {
        fn add(&self, name: metrics::KeyName) {
            self.0.lock().unwrap().push(name.as_str().to_owned());
        }
    }

    impl metrics::Recorder for Descriptions {
        fn describe_counter(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn describe_gauge(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn describe_histogram(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// One name, one `# HELP`: two parts describing the same name (the shards' refused
    /// pre-login connections and the backend's refused account requests once did) publish one
    /// family whose help is wrong for half its series, whichever description wins.
    #[test]
    fn every_family_is_described_once_across_the_gateway_and_the_backend() {
        let recorder = Descriptions::default();
        metrics::with_local_recorder(&recorder, || {
            describe();
            ringchat_backend::admin::describe_families();
        });
        let names = recorder.0.into_inner().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let twice: Vec<&String> = names.iter().filter(|n| !seen.insert(*n)).collect();
        assert!(twice.is_empty(), "described more than once: {twice:?}");
        // The push, files and backup families are described there too, not where they record.
        for family in [
            "ringchat_push_sent_total",
            "ringchat_files_bytes_in_total",
            "ringchat_backups_failed_total",
            "ringchat_cluster_claims_total",
        ] {
            assert!(seen.contains(&family.to_owned()), "{family} not described");
        }
    }
}

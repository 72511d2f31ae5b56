//! The backend's Prometheus families: `# HELP` for each (described once, at install), the
//! values read per scrape (process CPU and memory, store size and space, readiness, totals
//! kept by `observe`), and the send-to-ack latency histogram, rendered from the sampler's
//! cumulative histogram (recording through the registry would cost a lock per message).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use metrics::{describe_counter, describe_gauge};

use super::procfs;
use crate::admin::Admin;

/// The latency histogram's family and its buckets (upper bounds, seconds).
pub const SEND_ACK_FAMILY: &str = "ringchat_send_ack_seconds";
const SEND_ACK_BUCKETS_S: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// `# HELP` for every family the backend publishes. Called once, after the recorder is
/// installed; a family added without a line here fails `gateway/tests/observe_overview.rs`
/// (cluster families: `cluster::metrics`).
pub fn describe() {
    for (name, help) in [
        (
            "ringchat_messages_stored_total",
            "Messages stored (direct and group), since start.",
        ),
        (
            "ringchat_commit_groups_total",
            "Commit groups the sequencer took (each at most one store commit and, with durability fsync, one fsync), since start.",
        ),
        (
            "ringchat_commit_writes_total",
            "Writes (sends, cursors, contacts and groups changes) in those commit groups, since start: divided by ringchat_commit_groups_total, the writes each fsync carries (storage.commit_delay_us raises it).",
        ),
        (
            "ringchat_deliveries_total",
            "Frames handed to recipients' connections (pushes, receipts, events), since start.",
        ),
        ("ringchat_logins_total", "Successful logins, since start."),
        (
            "ringchat_token_logins_total",
            "Token logins of a known token: outcome=\"ok\" (logged in) or \"disabled\" (refused, the account being disabled), since start.",
        ),
        (
            "ringchat_token_logins_unaudited_total",
            "Those of ringchat_token_logins_total not written to the audit log (their device's from that address were, less than 10 minutes before; or the table of devices was full), by outcome, since start.",
        ),
        (
            "ringchat_password_rehashes_total",
            "Password hashes made with other argon2 parameters than the configured ones, stored again with these after a password login (a chat user's, or an operator's dashboard login) verified them, since start.",
        ),
        (
            "ringchat_login_failures_total",
            "Refused logins (wrong credentials), since start.",
        ),
        (
            "ringchat_sessions_token_expired_total",
            "Sessions ended because their token expired while they were connected (Kicked{TOKEN_EXPIRED}), since start.",
        ),
        (
            "ringchat_presence_pushes_superseded_total",
            "Presence pushes not sent because a newer one of the same user was decided while they waited (their friends are told the newer), since start.",
        ),
        (
            "ringchat_registrations_total",
            "Accounts registered, since start.",
        ),
        (
            "ringchat_account_requests_refused_total",
            "Registers (kind=\"register\") and RequestEmailCode/ResetPassword requests (kind=\"account\") answered UNAVAILABLE because accounts.registrations_waiting_max of their kind were held already, since start.",
        ),
        (
            "ringchat_email_codes_sent_total",
            "E-mail codes handed to the SMTP relay.",
        ),
        (
            "ringchat_email_send_failures_total",
            "E-mail codes the SMTP relay did not take.",
        ),
        (
            "ringchat_device_seen_dropped_total",
            "Device last-seen updates dropped (their queue was full).",
        ),
        (
            "ringchat_audit_dropped_total",
            "Audit entries dropped (their queue was full).",
        ),
        (
            "ringchat_admin_conns_refused_total",
            "Connections to the admin listener closed at once because admin.conns_max were open.",
        ),
        (
            "ringchat_admin_write_stalls_total",
            "Admin connections closed because their client read nothing of an answer for admin.write_stall_timeout_ms.",
        ),
        (
            "ringchat_typing_dropped_total",
            "Typing notices not relayed: reason=\"blocked\" (either user of a direct conversation blocks the other), \"dm_policy\" (a non-friend's typing to a friends-only user before the conversation has a message), \"muted\" (a group member who may not send) or \"busy\" (the read gate was full).",
        ),
        ("ringchat_room_messages_total", "Chat room messages sent."),
        (
            "ringchat_room_deliveries_total",
            "Chat room messages handed to members' connections.",
        ),
        (
            "ringchat_tail_cache_hits_total",
            "Reads answered by the tail cache.",
        ),
        (
            "ringchat_tail_cache_misses_total",
            "Reads the tail cache could not answer.",
        ),
        (
            "ringchat_tail_cache_evictions_total",
            "Conversations evicted from the tail cache.",
        ),
        (
            "ringchat_backend_logins_refused_total",
            "Logins answered UNAVAILABLE at once because the backend's login queue was full (backend.queue_requests_max).",
        ),
        (
            "ringchat_groups_login_capped_total",
            "Logins whose user had more groups listed than groups.per_user_max (the limit was lowered, or joins on several cluster nodes at once each saw room): the groups past it were not pushed to that session.",
        ),
        (
            "ringchat_groups_login_routed_wait_timeouts_total",
            "Logins refused UNAVAILABLE because the commits their group read saw were not delivered in time (delivery lagging): installed then, the session could be pushed a group's history it may not see.",
        ),
        (
            "ringchat_log_lines_dropped_total",
            "Log lines dropped because log.buffer_lines_max were queued for the sink (or its writer had stopped), per sink (console, file), since start.",
        ),
        (
            "ringchat_log_stream_skipped_total",
            "Log events live tails (GET /api/logs/stream) skipped because their reader fell behind (each told event: skipped), since start.",
        ),
        (
            "ringchat_store_unavailable_total",
            "Store calls that failed because a networked store was away or busy (answered UNAVAILABLE).",
        ),
        (
            "ringchat_ready_checks_total",
            "Checks of whether the store answers, made by the one background task behind /readyz and ringchat_ready (one at a time, 1 s apart, while anyone asked in the last 5 min), since start.",
        ),
    ] {
        describe_counter!(name, help);
    }
    for (name, help) in [
        (
            "ringchat_online_users",
            "Users with at least one logged-in session.",
        ),
        (
            "ringchat_daily_active_users",
            "Distinct users who logged in or sent today (UTC), estimated (HyperLogLog, 0.8 % error).",
        ),
        (
            "ringchat_backend_logins_in_flight",
            "Logins the backend runs now (at most backend.logins_in_flight_max).",
        ),
        (
            "ringchat_backend_logins_waiting",
            "Logins queued in the backend for one of its login slots.",
        ),
        ("ringchat_rooms", "Chat rooms that exist."),
        ("ringchat_room_sessions", "Sessions in chat rooms."),
        (
            "ringchat_group_online_entries",
            "Groups with someone online, in the online index.",
        ),
        (
            "ringchat_tail_cache_budget_bytes",
            "The tail cache's bound (storage.tail_cache_bytes).",
        ),
        ("ringchat_tail_cache_bytes", "Bytes held by the tail cache."),
        (
            "ringchat_tail_cache_conversations",
            "Conversations held by the tail cache.",
        ),
        (
            "ringchat_tail_cache_messages",
            "Messages held by the tail cache.",
        ),
        (
            "ringchat_store_size_bytes",
            "Bytes of every file under the data dir but the local file storage (measured every observe.store_size_interval_s).",
        ),
        (
            "ringchat_files_size_bytes",
            "Bytes of every file under the local file storage's directory (measured every observe.files_size_interval_s).",
        ),
        (
            "ringchat_store_disk_free_bytes",
            "Free bytes of the file system holding the data dir.",
        ),
        (
            "ringchat_store_disk_total_bytes",
            "Size of the file system holding the data dir.",
        ),
        (
            "ringchat_store_writable",
            "1 while the store takes writes, 0 once it refuses them (the server then stops).",
        ),
        (
            "ringchat_store_reachable",
            "PostgreSQL: 0 from a failed connection attempt until a connection is made again.",
        ),
        (
            "ringchat_ready",
            "1 when /readyz answers 200: the store takes writes and answers, the node joined its cluster, and every shard accepts.",
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the process, in bytes.",
        ),
        (
            "process_start_time_seconds",
            "When the process started, in seconds since the epoch.",
        ),
    ] {
        describe_gauge!(name, help);
    }
}

/// Sets the per-scrape values in the registry; `ready` is `/readyz`'s answer (`health::readiness`).
pub fn publish(admin: &Admin, ready: bool) {
    let o = &admin.backend.observe;
    let p = procfs::read_process();
    metrics::gauge!("process_resident_memory_bytes").set(p.rss_bytes as f64);
    metrics::gauge!("process_start_time_seconds").set(o.started_ms as f64 / 1000.0);
    metrics::counter!("ringchat_deliveries_total").absolute(o.deliveries.load(Relaxed));
    metrics::counter!("ringchat_commit_groups_total").absolute(o.commit_groups.load(Relaxed));
    metrics::counter!("ringchat_commit_writes_total").absolute(o.commit_writes.load(Relaxed));
    let store = admin.overview.store();
    metrics::gauge!("ringchat_store_size_bytes").set(store.size_bytes as f64);
    metrics::gauge!("ringchat_files_size_bytes").set(store.files_bytes as f64);
    metrics::gauge!("ringchat_store_disk_free_bytes").set(store.disk_free_bytes as f64);
    metrics::gauge!("ringchat_store_disk_total_bytes").set(store.disk_total_bytes as f64);
    let writable = admin.backend.health.failure().is_none();
    metrics::gauge!("ringchat_store_writable").set(if writable { 1.0 } else { 0.0 });
    metrics::gauge!("ringchat_ready").set(if ready { 1.0 } else { 0.0 });
    let today = o.activity.days(1);
    let dau = today
        .last()
        .filter(|d| u64::from(d.day) == crate::time::now_ms() / crate::observe::activity::DAY_MS)
        .map_or(0, |d| d.users.estimate());
    metrics::gauge!("ringchat_daily_active_users").set(dau as f64);
}

/// `process_cpu_seconds_total` is a float; the registry's counters are integers, so it is
/// written here, with the histogram.
pub fn render_extra(admin: &Admin, out: &mut String) {
    let ticks = procfs::read_process().cpu_ticks;
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total CPU time of the process, user and system, in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n",
        ticks as f64 / procfs::ticks_per_second() as f64
    );
    if let Some(cluster) = &admin.cluster {
        crate::cluster::admin::render_metrics(cluster, out);
    }
    admin.overview.with_cumulative(|h| {
        let _ = writeln!(
            out,
            "# HELP {SEND_ACK_FAMILY} Time from a shard queueing a send to its ack (or refusal) handed back to the shard, after the commit's fsync.\n# TYPE {SEND_ACK_FAMILY} histogram"
        );
        for le in SEND_ACK_BUCKETS_S {
            let us = (le * 1e6).round() as u64;
            let _ = writeln!(
                out,
                "{SEND_ACK_FAMILY}_bucket{{le=\"{le}\"}} {}",
                h.count_at_most(us)
            );
        }
        let _ = writeln!(
            out,
            "{SEND_ACK_FAMILY}_bucket{{le=\"+Inf\"}} {count}\n{SEND_ACK_FAMILY}_sum {}\n{SEND_ACK_FAMILY}_count {count}",
            h.sum_us as f64 / 1e6,
            count = h.count()
        );
    });
}

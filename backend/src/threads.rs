//! The names of the server's threads. Linux keeps the first 15 bytes of a thread's name (its
//! `comm`, what `top -H`, `ps -L` and `/proc/PID/task/TID/comm` show) and drops the rest
//! silently, so every name here fits whole: `ringchat-shard-0` and `-1` used to both read
//! `ringchat-shard-`. One prefix, `rc-`, marks ringchat's own threads.

/// Bytes of a thread name the kernel keeps.
pub const NAME_BYTES_MAX: usize = 15;

/// Gateway shard `i` (monoio event loop, one per pinned core): `rc-shard-<i>`.
pub const SHARD: &str = "rc-shard-";
/// Backend tokio worker `i`: `rc-backend-<i>`.
pub const BACKEND: &str = "rc-backend-";
/// The backend runtime's blocking pool (password hashing, storage reads): threads come and go,
/// so they share one name rather than a counter that would outgrow 15 bytes.
pub const BLOCKING: &str = "rc-blocking";
/// The sequencer: the only writer of messages.
pub const COMMIT: &str = "rc-commit";
/// Syncs the embedded store's journal in the background with `durability = "none"`.
pub const JOURNAL_SYNC: &str = "rc-journal-sync";
/// Fills the embedded store's journal ahead of its writes (`storage.journal_prefill_mib`).
pub const JOURNAL_PREFILL: &str = "rc-journal-fill";
/// Watches that the embedded store's background worker keeps flushing.
pub const FLUSH_WATCH: &str = "rc-flush-watch";
/// Rotates the embedded store's memtables once they hold `storage.memtable_mib`.
pub const MEMTABLES: &str = "rc-memtables";
/// Leases id blocks from the cluster's store (cluster mode).
pub const ID_LEASE: &str = "rc-id-lease";
/// A log writer: `rc-log-<sink>` (`console`, `file`).
pub const LOG: &str = "rc-log-";
/// The PostgreSQL adapter's runtime workers.
pub const POSTGRES: &str = "rc-pg";
/// The ScyllaDB adapter's runtime workers.
pub const SCYLLA: &str = "rc-scylla";

/// Every name without a number: what a thread of the server may be called besides
/// `SHARD`, `BACKEND` and `LOG` followed by their number or sink.
pub const FIXED: [&str; 9] = [
    BLOCKING,
    COMMIT,
    JOURNAL_SYNC,
    JOURNAL_PREFILL,
    FLUSH_WATCH,
    MEMTABLES,
    ID_LEASE,
    POSTGRES,
    SCYLLA,
];

/// Whether a panic on the thread called `name` must end the process. These are ringchat's own
/// `std::thread`s (shards, the sequencer, the store's helpers): nothing catches a panic on them,
/// and the process would go on without the thread: a dead shard keeps its sessions registered
/// (online, in rooms and group audiences) with nobody serving them, a dead sequencer takes no
/// more writes. A restart by the supervisor starts from the store with a clean state. The
/// runtimes' workers (`BACKEND`, `BLOCKING`, the adapters' pools) are not: their runtime catches
/// a task's panic and fails only that task.
pub fn dies_with_process(name: &str) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered(SHARD)
        || [
            COMMIT,
            JOURNAL_SYNC,
            JOURNAL_PREFILL,
            FLUSH_WATCH,
            MEMTABLES,
            ID_LEASE,
        ]
        .contains(&name)
}

/// `prefix` followed by `i`, e.g. `rc-shard-3`.
pub fn numbered(prefix: &str, i: usize) -> String {
    let name = format!("{prefix}{i}");
    debug_assert!(name.len() <= NAME_BYTES_MAX, "thread name {name} too long");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_ends_the_process_on_ringchats_own_threads_only() {
        assert!(dies_with_process(&numbered(SHARD, 0)));
        assert!(dies_with_process(&numbered(SHARD, 17)));
        assert!(dies_with_process(COMMIT));
        assert!(dies_with_process(MEMTABLES));
        assert!(!dies_with_process(SHARD));
        assert!(!dies_with_process("rc-shard-x"));
        assert!(!dies_with_process(&numbered(BACKEND, 0)));
        assert!(!dies_with_process(BLOCKING));
        assert!(!dies_with_process(POSTGRES));
        assert!(!dies_with_process("main"));
    }

    #[test]
    fn every_name_fits_the_kernel() {
        for fixed in FIXED {
            assert!(fixed.len() <= NAME_BYTES_MAX, "{fixed}");
        }
        // Room for the numbers and sink names actually used: a shard per core of a 4096-core
        // host, a backend worker per core, the two log sinks.
        assert!(numbered(SHARD, 4095).len() <= NAME_BYTES_MAX);
        assert!(numbered(BACKEND, 4095).len() <= NAME_BYTES_MAX);
        assert!(format!("{LOG}console").len() <= NAME_BYTES_MAX);
    }
}

//! What Linux says about this process and the machine, read from `/proc`: CPU time per core,
//! per thread (grouped by the thread's name), of the whole process, and its resident memory.
//! Parsing is apart from reading, so it is tested on fixed text.

use std::collections::HashMap;

/// Cumulative CPU ticks of one core: busy and total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreTicks {
    pub busy: u64,
    pub total: u64,
}

/// `/proc/stat`'s per-core lines (`cpuN …`), in core order.
pub fn parse_stat(text: &str) -> Vec<CoreTicks> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let n: Vec<u64> = l
                .split_ascii_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let at = |i: usize| n.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest is inside user).
            let total: u64 = (0..8).map(at).sum();
            let idle = at(3) + at(4);
            CoreTicks {
                busy: total.saturating_sub(idle),
                total,
            }
        })
        .collect()
}

/// A thread's name and CPU ticks (user + system) from its `stat` line. The name sits in
/// parentheses and may hold spaces or parentheses itself: it ends at the last `)`.
pub fn parse_task_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// The store's threads besides fjall's own workers: the embedded store's helpers and the
/// networked adapters' runtimes (whose workers run the drivers' I/O).
const STORAGE_THREADS: [&str; 6] = [
    crate::threads::JOURNAL_SYNC,
    crate::threads::JOURNAL_PREFILL,
    crate::threads::FLUSH_WATCH,
    crate::threads::MEMTABLES,
    crate::threads::POSTGRES,
    crate::threads::SCYLLA,
];

/// The group a thread belongs to, by its name (Linux keeps 15 bytes of it).
pub fn thread_group(name: &str) -> &'static str {
    use crate::threads;
    if name.starts_with(threads::SHARD) {
        "shards"
    } else if name == threads::COMMIT {
        "sequencer"
    } else if name.starts_with(threads::BACKEND) || name == threads::BLOCKING {
        "backend"
    } else if name.starts_with("fjall") || STORAGE_THREADS.contains(&name) {
        "storage"
    } else if name == "ringchat" {
        "main"
    } else {
        "other"
    }
}

/// Thread groups in the order they are shown.
pub const THREAD_GROUPS: [&str; 6] = ["shards", "sequencer", "backend", "storage", "main", "other"];

/// CPU ticks of each of this process's threads, by thread id: `(group, ticks)`.
pub fn read_threads() -> HashMap<u32, (&'static str, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread that ended meanwhile has no file any more: skipped.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((name, ticks)) = parse_task_stat(&text)
        {
            out.insert(tid, (thread_group(&name), ticks));
        }
    }
    out
}

pub fn read_cores() -> Vec<CoreTicks> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_stat(&t))
        .unwrap_or_default()
}

/// The whole process: CPU ticks (user + system) and resident bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
}

pub fn read_process() -> ProcessUsage {
    let cpu_ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_task_stat(&t))
        .map_or(0, |(_, ticks)| ticks);
    let rss_pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_ascii_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    ProcessUsage {
        cpu_ticks,
        rss_bytes: rss_pages * rustix::param::page_size() as u64,
    }
}

/// Clock ticks per second of the counts above.
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's CPU shows as "storage" whatever the engine: the PostgreSQL and ScyllaDB
    /// drivers' runtimes and the embedded store's helpers, not only fjall's workers.
    #[test]
    fn every_store_thread_is_in_the_storage_group() {
        use crate::threads;
        for name in [
            "fjall:worker",
            threads::POSTGRES,
            threads::SCYLLA,
            threads::JOURNAL_SYNC,
            threads::JOURNAL_PREFILL,
            threads::FLUSH_WATCH,
            threads::MEMTABLES,
        ] {
            assert_eq!(thread_group(name), "storage", "{name}");
        }
    }

    #[test]
    fn cores_and_threads_parse() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 2 1 2 30 5 0 0 0 0 0\nintr 1 2\n";
        assert_eq!(
            parse_stat(stat),
            [
                CoreTicks {
                    busy: 10,
                    total: 50
                },
                CoreTicks { busy: 5, total: 40 }
            ]
        );
        let task = "4242 (rc-shard-1) S 1 2 3 4 5 6 7 8 9 10 300 45 0 0 20 0 1 0";
        assert_eq!(parse_task_stat(task), Some(("rc-shard-1".to_owned(), 345)));
        let odd = "7 (a) b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0";
        assert_eq!(parse_task_stat(odd), Some(("a) b) c".to_owned(), 3)));
        assert_eq!(parse_task_stat("garbage"), None);
        assert_eq!(thread_group("rc-shard-12"), "shards");
        assert_eq!(thread_group("rc-backend-0"), "backend");
        assert_eq!(thread_group("rc-blocking"), "backend");
        assert_eq!(thread_group("rc-commit"), "sequencer");
        assert_eq!(thread_group("fjall:worker"), "storage");
        assert_eq!(thread_group("tokio-runtime-w"), "other");
        // This process, for real.
        assert!(read_process().rss_bytes > 0);
        assert!(!read_threads().is_empty());
        assert!(!read_cores().is_empty());
    }
}

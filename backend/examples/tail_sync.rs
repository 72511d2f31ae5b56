//! Times the server's Sync read (`messaging::reads::sync`) on a store of many conversations,
//! with the tail cache (`storage.tail_cache_bytes`) on or off, and checks the cache's byte count
//! against the allocator.
//!
//!     cargo run --release -p ringchat-backend --example tail_sync -- --dir DIR \
//!         [--budget 67108864] [--convs 5000] [--per-conv 40] [--size 64] [--reads 200000] \
//!         [--behind 20] [--seed 1]
//!
//! DIR must not exist; it is removed at the end. `--budget 0` is the cache off.
//!
//! 1. Fills DIR through the ports the server uses (the cache in front when on), as commit
//!    groups of 512 conversations × one message, `--per-conv` rounds, `durability = "none"`,
//!    then flushes. Every message of every conversation is written after the store opened, as
//!    on a server that has been up a while.
//! 2. Runs `--reads` Syncs on one thread, each of a random conversation (uniform) from a random
//!    1..=`--behind` messages before its head (a client coming back after missing a few), page
//!    200 (the default `limits.sync_page_max`), checking each batch's first seq and length.
//!    Prints wall and CPU time per Sync (this thread's, from /proc/thread-self/stat, and the
//!    whole process's), and the cache's hits.
//! 0. With the cache on, first appends the same messages to a cache over a store that keeps
//!    nothing, and compares the bytes the cache says it holds with what the allocator was asked
//!    for (a counting global allocator) and with the process's RSS growth.

// The counting allocator below forwards to the system allocator; it is the only unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ringchat_backend::fill::{
    self, CommitGroup, ConvId, ConversationLog, Durability, MessageRecord, Rng, StoreError,
    TailCached,
};
use ringchat_proto::v1;

/// Live heap bytes, as asked of the allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USER0: u64 = 100_000_000;
const PAGE_MAX: u32 = 200;
const GROUP_CONVS: usize = 512;

struct Options {
    dir: PathBuf,
    budget: usize,
    convs: u64,
    per_conv: u64,
    size: usize,
    reads: u64,
    behind: u64,
    seed: u64,
}

fn options() -> Options {
    let mut o = Options {
        dir: PathBuf::new(),
        budget: 64 << 20,
        convs: 5_000,
        per_conv: 40,
        size: 64,
        reads: 200_000,
        behind: 20,
        seed: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [key, value] = pair else {
            panic!("--key value pairs expected");
        };
        let n = || value.parse::<u64>().expect("a number");
        match key.as_str() {
            "--dir" => o.dir = PathBuf::from(value),
            "--budget" => o.budget = n() as usize,
            "--convs" => o.convs = n(),
            "--per-conv" => o.per_conv = n(),
            "--size" => o.size = n() as usize,
            "--reads" => o.reads = n(),
            "--behind" => o.behind = n(),
            "--seed" => o.seed = n(),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!o.dir.as_os_str().is_empty(), "--dir DIR");
    assert!(!o.dir.exists(), "{} exists", o.dir.display());
    o
}

/// Conversation `i`: between users `2i` and `2i + 1` (from 100000000); the first one syncs.
fn conv(i: u64) -> (ConvId, u64) {
    let a = USER0 + 2 * i;
    (ConvId::direct(a, a + 1).expect("9-digit users"), a)
}

/// The fill's commit groups, in order.
fn groups(o: &Options) -> impl Iterator<Item = CommitGroup> + '_ {
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut msg_id = 0;
    (1..=o.per_conv).flat_map(move |seq| {
        let convs: Vec<u64> = (0..o.convs).collect();
        let chunks: Vec<Vec<u64>> = convs.chunks(GROUP_CONVS).map(<[u64]>::to_vec).collect();
        let mut groups = Vec::new();
        for chunk in chunks {
            let messages = chunk
                .iter()
                .map(|&i| {
                    msg_id += 1;
                    let (conv_id, from) = conv(i);
                    let content: Vec<u8> = (0..o.size).map(|_| rng.next_u64() as u8).collect();
                    MessageRecord {
                        conv_id,
                        seq,
                        msg_id,
                        from,
                        to: from + 1,
                        client_msg_id: format!("{:032x}", rng.next_u64()),
                        content_type: 1,
                        content: Bytes::from(content),
                        server_time_ms: 1_700_000_000_000 + msg_id,
                        recalled: false,
                        recall_of_seq: 0,
                        recall_event_seq: 0,
                        mentions: None,
                    }
                })
                .collect();
            groups.push(CommitGroup {
                messages,
                next_msg_id: Some(msg_id + 1),
                ..CommitGroup::default()
            });
        }
        groups
    })
}

/// CPU seconds (user + system) of this thread (`thread-self`) or process (`self`).
fn cpu_s(of: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{of}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// Resident bytes of this process (/proc/self/statm, 4 KiB pages).
fn rss_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
    let pages: isize = statm
        .split(' ')
        .nth(1)
        .expect("rss")
        .parse()
        .expect("pages");
    pages * 4096
}

/// A conversation log that keeps nothing: the cache over it holds all the memory there is.
struct Nothing;

impl ConversationLog for Nothing {
    fn append(&self, _: &CommitGroup) -> Result<(), StoreError> {
        Ok(())
    }
    fn next_msg_id(&self) -> Result<u64, StoreError> {
        Ok(1)
    }
    fn last_message(&self, _: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        Ok(None)
    }
    fn message(&self, _: ConvId, _: u64) -> Result<Option<MessageRecord>, StoreError> {
        Ok(None)
    }
    fn messages_after(
        &self,
        _: ConvId,
        _: u64,
        _: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn messages_before(
        &self,
        _: ConvId,
        _: u64,
        _: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(Vec::new())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options();
    if o.budget > 0 {
        let (live0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
        let cache = TailCached::new(Arc::new(Nothing), o.budget);
        for group in groups(&o) {
            cache.append(&group)?;
        }
        let live = LIVE.load(Ordering::Relaxed) - live0;
        let rss = rss_bytes() - rss0;
        let stats = cache.stats();
        println!(
            "counted per message: content + client_msg_id + {} bytes",
            fill::MESSAGE_OVERHEAD_BYTES
        );
        println!(
            "accounting: the cache counts {} bytes for {} messages in {} conversations; the allocator was asked for {live} bytes ({:.2}× counted, {:.0} per message); RSS grew {rss} bytes ({:.2}× counted)",
            stats.bytes,
            stats.messages,
            stats.conversations,
            live as f64 / stats.bytes as f64,
            live as f64 / stats.messages.max(1) as f64,
            rss as f64 / stats.bytes as f64,
        );
        drop(cache);
    }
    let t = Instant::now();
    let (ports, cached) = if o.budget == 0 {
        (fill::open(&o.dir, Durability::None)?, None)
    } else {
        let (ports, cached) = fill::open_tail_cached(&o.dir, Durability::None, o.budget)?;
        (ports, Some(cached))
    };
    let mut messages = 0u64;
    for group in groups(&o) {
        messages += group.messages.len() as u64;
        ports.log.append(&group)?;
    }
    ports.engine.flush()?;
    println!(
        "fill: {messages} messages in {} conversations, {:.1} s",
        o.convs,
        t.elapsed().as_secs_f64()
    );
    if let Some(c) = &cached {
        println!("cache: {:?}", c.stats());
    }
    // Let the store's flush and compaction settle before timing.
    std::thread::sleep(std::time::Duration::from_secs(2));

    let mut rng = Rng(o.seed ^ 0x5555);
    let (cpu0, proc0, t0) = (cpu_s("thread-self"), cpu_s("self"), Instant::now());
    let mut returned = 0u64;
    for _ in 0..o.reads {
        let (conv_id, user) = conv(rng.below(o.convs));
        let behind = 1 + rng.below(o.behind.min(o.per_conv));
        let after_seq = o.per_conv - behind;
        let req = v1::Sync {
            conversation_id: conv_id.to_wire(),
            after_seq,
            limit: 0,
        };
        let batch = fill::sync(&ports, user, &req, PAGE_MAX)?;
        assert_eq!(batch.messages.len() as u64, behind, "the batch");
        assert_eq!(batch.messages[0].seq, after_seq + 1);
        returned += batch.messages.len() as u64;
    }
    let (cpu, proc_cpu, wall) = (
        cpu_s("thread-self") - cpu0,
        cpu_s("self") - proc0,
        t0.elapsed().as_secs_f64(),
    );
    let per = |s: f64| s * 1e6 / o.reads as f64;
    println!(
        "sync: {} reads ({returned} messages), budget {}: wall {:.2} µs/read, thread CPU {:.2} µs/read, process CPU {:.2} µs/read",
        o.reads,
        o.budget,
        per(wall),
        per(cpu),
        per(proc_cpu),
    );
    if let Some(c) = &cached {
        let held = c.stats();
        println!("cache after: {held:?}");
    }
    drop(ports);
    drop(cached);
    std::fs::remove_dir_all(&o.dir)?;

    Ok(())
}

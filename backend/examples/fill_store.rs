//! Fills a data dir with messages through the real embedded store and its ports (the adapter
//! the server opens), shaped like the sequencer's commit groups: each group touches a few
//! hundred conversations picked at random, a few consecutive messages each (one run record per
//! conversation), with the rows the sequencer writes (the sender's dedup window and own read
//! cursor, the receiver's delivered cursor and device cursor) and the conversation-list entries
//! of a conversation's first message. Users are registered through the accounts port first.
//! Writes with `durability = "none"`. The store is settled before the clock starts and before
//! it stops (every memtable flushed, no compaction running), so that a run pays for the
//! flushes and compactions of its own writes: not for what an earlier run left in memory, and
//! not with a tail left for the next run.
//!
//!     cargo run --release -p ringchat-backend --example fill_store -- --dir DIR \
//!         [--messages 50000000] [--users 200000] [--convs 100000] [--group 1024] \
//!         [--per-conv-max 6] [--size 64] [--dedup-window 64] [--max-seconds 1500] \
//!         [--max-gib 30] [--seed 1] [--continue 0] [--background-threads 1] [--memtable-mib 64]
//!
//! DIR must hold no messages yet, unless `--continue 1`: then it goes on writing into the
//! conversations of a store it filled before with the same `--seed`, `--users` and `--convs`
//! (their heads and rows are read back first), `--messages` more of them. Every 5 s it prints the messages so far, the rate and this
//! process's CPU time per message over the interval (its own thread and the store's flush and
//! compaction threads), and the data dir's size; it stops at `--messages`, `--max-seconds` or
//! `--max-gib`, whichever comes first, and prints a summary (`fill:` lines).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringchat_backend::fill::{
    self, CommitGroup, ConvId, CursorRow, Durability, MessageRecord, RecencyMove, Rng,
    recency_bucket,
};

/// Clock ticks per second of /proc's times (USER_HZ, fixed at 100 on Linux).
const TICKS_PER_S: f64 = 100.0;
/// `ContentType::Text` on the wire.
const CONTENT_TYPE_TEXT: i32 = 1;
/// The device whose delivery cursor receivers move (the bench's receivers use one device each).
const DEVICE: &str = "phone";
/// Device cursors expire after 90 days by default; the filler's never do.
const DEVICE_TTL_MS: u64 = 90 * 24 * 3600 * 1000;
/// Any PHC string: nobody logs in as a filler's user.
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=256,t=1,p=1$ZmlsbGVyc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

struct Options {
    dir: PathBuf,
    messages: u64,
    users: usize,
    convs: usize,
    group: usize,
    per_conv_max: u64,
    size: usize,
    dedup_window: usize,
    max_seconds: u64,
    max_gib: f64,
    seed: u64,
    /// Goes on writing into a store this filler filled with the same `--seed`, `--users` and
    /// `--convs`: its users and conversations are found again and their heads and rows read
    /// back, so the new groups write into the stored conversations.
    resume: bool,
    /// The store's flush and compaction threads (`storage.background_threads`).
    background_threads: usize,
    memtable_mib: u64,
}

fn options() -> Options {
    let mut o = Options {
        dir: PathBuf::new(),
        messages: 50_000_000,
        users: 200_000,
        convs: 100_000,
        group: 1024,
        per_conv_max: 6,
        size: 64,
        dedup_window: 64,
        max_seconds: 1500,
        max_gib: 30.0,
        seed: 1,
        resume: false,
        background_threads: fill::EngineOptions::default().background_threads,
        memtable_mib: fill::EngineOptions::default().memtable_bytes >> 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fill_store --dir DIR [--messages N] [--users U] [--convs C] [--group G] \
                 [--per-conv-max M] [--size S] [--dedup-window W] [--max-seconds T] \
                 [--max-gib B] [--seed X] [--continue 1] [--background-threads N] [--memtable-mib M]";
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            panic!("{usage}");
        };
        let n = || -> u64 { value.replace('_', "").parse().expect(usage) };
        match flag.as_str() {
            "--dir" => o.dir = PathBuf::from(value),
            "--messages" => o.messages = n(),
            "--users" => o.users = n() as usize,
            "--convs" => o.convs = n() as usize,
            "--group" => o.group = n() as usize,
            "--per-conv-max" => o.per_conv_max = n(),
            "--size" => o.size = n() as usize,
            "--dedup-window" => o.dedup_window = n() as usize,
            "--max-seconds" => o.max_seconds = n(),
            "--max-gib" => o.max_gib = value.parse().expect(usage),
            "--seed" => o.seed = n(),
            "--continue" => o.resume = n() != 0,
            "--background-threads" => o.background_threads = n() as usize,
            "--memtable-mib" => o.memtable_mib = n(),
            _ => panic!("{usage}"),
        }
    }
    assert!(!o.dir.as_os_str().is_empty(), "{usage}");
    assert!(o.users >= 2 && o.convs >= 1 && o.group >= 1 && o.per_conv_max >= 1);
    assert!(
        (o.convs as u128) < (o.users as u128) * (o.users as u128 - 1) / 2,
        "more conversations than pairs of users"
    );
    o
}

/// User and system CPU seconds of this process so far (all its threads).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / TICKS_PER_S
}

/// Bytes of the files under `dir`: (apparent length, allocated on disk).
fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue; // removed by a compaction meanwhile
        };
        if meta.is_dir() {
            let (len, alloc) = dir_bytes(&entry.path());
            total.0 += len;
            total.1 += alloc;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

const GIB: f64 = (1u64 << 30) as f64;

/// One conversation's state in the filler (what the sequencer keeps in its overlay and caches).
struct Conv {
    id: ConvId,
    members: [u64; 2],
    max_seq: u64,
    last_time_ms: u64,
    /// The members' rows, in `members` order.
    rows: [CursorRow; 2],
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options();
    let started = Instant::now();
    let engine = fill::EngineOptions {
        background_threads: o.background_threads,
        memtable_bytes: o.memtable_mib << 20,
        ..fill::EngineOptions::default()
    };
    let (ports, settler) = fill::open_with(&o.dir, Durability::None, &engine)?;
    let first_msg_id = ports.log.next_msg_id()?;
    assert!(
        o.resume || first_msg_id == 1,
        "{} already holds messages: fill an empty data dir",
        o.dir.display()
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ o.seed.wrapping_mul(0xff51_afd7_ed55_8ccd) | 1);

    // Users, through the accounts port (one durable batch each, as a registration is).
    let t = Instant::now();
    let mut users = Vec::with_capacity(o.users);
    for i in 0..o.users {
        let name = format!("fill_{}_{i}", o.seed);
        let user = if o.resume {
            ports
                .accounts
                .user_id_by_name(&name)?
                .unwrap_or_else(|| panic!("--continue: no user {name}"))
        } else {
            ports
                .accounts
                .create_user(&name, PASSWORD_HASH, "", now_ms())?
                .user_id
        };
        users.push(user);
    }
    println!(
        "fill: {} users {} in {:.1} s",
        o.users,
        if o.resume { "found" } else { "registered" },
        t.elapsed().as_secs_f64()
    );

    // Conversations: distinct random pairs.
    let mut seen = HashSet::with_capacity(o.convs);
    let mut convs = Vec::with_capacity(o.convs);
    while convs.len() < o.convs {
        let a = users[rng.below(o.users as u64) as usize];
        let b = users[rng.below(o.users as u64) as usize];
        let Some(id) = ConvId::direct(a, b) else {
            continue;
        };
        if seen.insert(id) {
            convs.push(Conv {
                id,
                members: [a, b],
                max_seq: 0,
                last_time_ms: 0,
                rows: Default::default(),
            });
        }
    }
    drop(seen);
    if o.resume {
        let t = Instant::now();
        let mut heads_s = 0.0;
        for chunk in convs.chunks_mut(1024) {
            let ids: Vec<ConvId> = chunk.iter().map(|c| c.id).collect();
            let keys: Vec<(ConvId, u64)> = chunk
                .iter()
                .flat_map(|c| [(c.id, c.members[0]), (c.id, c.members[1])])
                .collect();
            let th = Instant::now();
            let heads = ports.log.last_messages(&ids)?;
            heads_s += th.elapsed().as_secs_f64();
            let mut rows = ports.cursors.cursor_rows(&keys)?.into_iter();
            for (conv, head) in chunk.iter_mut().zip(heads) {
                if let Some(m) = head {
                    (conv.max_seq, conv.last_time_ms) = (m.seq, m.server_time_ms);
                }
                for row in &mut conv.rows {
                    *row = rows.next().flatten().unwrap_or_default();
                }
            }
        }
        println!(
            "fill: continuing: {} conversations' heads and rows read in {:.1} s (heads {:.1} s), \
             next msg id {}",
            convs.iter().filter(|c| c.max_seq > 0).count(),
            t.elapsed().as_secs_f64(),
            heads_s,
            first_msg_id
        );
    }

    // Content: printable and varied, like text (a constant would compress to nothing).
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?";
    let pool: Vec<u8> = (0..(1 << 20) + o.size)
        .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
        .collect();
    let pool = Bytes::from(pool);

    let run_id = rng.next_u64() >> 40;
    // What an earlier run left in memtables (replayed from the journal at open) flushed and
    // compacted now, off this run's clock; this run's own tail is settled on it, at the end.
    let settle_before_s = settler.settle()?.as_secs_f64();
    let cpu0 = cpu_s();
    let fill_started = Instant::now();
    let deadline = fill_started + Duration::from_secs(o.max_seconds);
    let mut next_msg_id = first_msg_id;
    let mut stored: u64 = 0;
    let mut groups: u64 = 0;
    let mut runs: u64 = 0;
    let mut group = CommitGroup::default();
    let mut in_group: Vec<usize> = Vec::new();
    let mut picked = vec![false; o.convs];
    let (mut last_report, mut last_stored, mut last_cpu) = (Instant::now(), 0u64, cpu0);
    let mut stop_reason = "messages reached";
    let size_max = (o.max_gib * GIB) as u64;
    // The new messages are counted from here; their ids go on from the store's.
    while stored < o.messages {
        // One commit group: conversations picked at random, a few consecutive messages each.
        let now = now_ms();
        let want = (o.group as u64).min(o.messages - stored);
        let mut in_this: u64 = 0;
        while in_this < want {
            let c = rng.below(o.convs as u64) as usize;
            if picked[c] {
                continue;
            }
            picked[c] = true;
            in_group.push(c);
            let conv = &mut convs[c];
            let n = (1 + rng.below(o.per_conv_max)).min(want - in_this);
            if conv.max_seq == 0 {
                // The conversation enters both members' lists (the sequencer also moves the
                // entry when an hour passes; a fill of a few minutes rarely crosses one).
                for user in conv.members {
                    group.recency.push(RecencyMove {
                        user,
                        conv: conv.id,
                        from: None,
                        to: recency_bucket(now),
                    });
                }
            }
            let mut side = rng.below(2) as usize;
            for _ in 0..n {
                let (from, to) = (conv.members[side], conv.members[1 - side]);
                let seq = conv.max_seq + 1;
                let at = (rng.below(1 << 20)) as usize;
                let message = MessageRecord {
                    conv_id: conv.id,
                    seq,
                    msg_id: next_msg_id,
                    from,
                    to,
                    client_msg_id: format!("{run_id:x}-{next_msg_id}"),
                    content_type: CONTENT_TYPE_TEXT,
                    content: pool.slice(at..at + o.size),
                    server_time_ms: now.max(conv.last_time_ms),
                    recalled: false,
                    recall_of_seq: 0,
                    recall_event_seq: 0,
                    mentions: None,
                };
                next_msg_id += 1;
                conv.max_seq = seq;
                conv.last_time_ms = message.server_time_ms;
                // The sender: its dedup window, and it has read up to its own message.
                let row = &mut conv.rows[side];
                row.remember_send(&message.client_msg_id, seq, o.dedup_window);
                row.cursor.read_seq = seq;
                row.cursor.delivered_seq = seq;
                // The receiver acknowledges delivery on its device.
                let row = &mut conv.rows[1 - side];
                row.cursor.delivered_seq = seq;
                row.move_device(DEVICE, seq, now, now.saturating_sub(DEVICE_TTL_MS));
                group.messages.push(message);
                // Mostly a reply, sometimes a second message from the same side.
                if rng.below(4) != 0 {
                    side = 1 - side;
                }
            }
            in_this += n;
        }
        // Rows move into the group and back after the append, as the sequencer's do.
        for &c in &in_group {
            let conv = &mut convs[c];
            for side in 0..2 {
                group.cursor_rows.push((
                    conv.id,
                    conv.members[side],
                    std::mem::take(&mut conv.rows[side]),
                ));
            }
        }
        runs += in_group.len() as u64;
        group.next_msg_id = Some(next_msg_id);
        ports.log.append(&group)?;
        for (i, (_, _, row)) in group.cursor_rows.drain(..).enumerate() {
            let c = in_group[i / 2];
            convs[c].rows[i % 2] = row;
        }
        for c in in_group.drain(..) {
            picked[c] = false;
        }
        stored += group.messages.len() as u64;
        groups += 1;
        group.clear();

        if last_report.elapsed() >= Duration::from_secs(5) {
            let cpu = cpu_s();
            let secs = last_report.elapsed().as_secs_f64();
            let (len, _) = dir_bytes(&o.dir);
            println!(
                "fill: {:>6.0} s {:>11} msgs  {:>7.0} msgs/s  cpu {:>5.2} us/msg  dir {:.2} GiB",
                fill_started.elapsed().as_secs_f64(),
                stored,
                (stored - last_stored) as f64 / secs,
                (cpu - last_cpu) * 1e6 / (stored - last_stored).max(1) as f64,
                len as f64 / GIB,
            );
            (last_report, last_stored, last_cpu) = (Instant::now(), stored, cpu);
            if len > size_max {
                stop_reason = "size limit reached";
                break;
            }
            if Instant::now() > deadline {
                stop_reason = "time limit reached";
                break;
            }
        }
    }
    let fill_s = fill_started.elapsed().as_secs_f64();
    let settle_s = settler.settle()?.as_secs_f64();
    let cpu_fill = cpu_s() - cpu0;
    let t = Instant::now();
    ports.engine.flush()?;
    let flush_s = t.elapsed().as_secs_f64();
    drop(ports);
    let active = convs.iter().filter(|c| c.max_seq > 0).count();
    let (len, alloc) = dir_bytes(&o.dir);
    println!("fill: stopped: {stop_reason}");
    println!(
        "fill: {stored} messages of {} B in {groups} commit groups ({:.0} messages per group), \
         {runs} runs ({:.2} messages per run), {active} of {} conversations written, between {} \
         users",
        o.size,
        stored as f64 / groups.max(1) as f64,
        stored as f64 / runs.max(1) as f64,
        o.convs,
        o.users,
    );
    println!(
        "fill: {:.0} msgs/s over {fill_s:.1} s, {:.2} us of CPU per message (all threads); \
         settled {settle_before_s:.1} s before, {settle_s:.1} s after (counted); final flush \
         {flush_s:.1} s; total {:.1} s",
        stored as f64 / fill_s,
        cpu_fill * 1e6 / stored.max(1) as f64,
        started.elapsed().as_secs_f64(),
    );
    println!(
        "fill: data dir {} holds {:.2} GiB ({:.2} GiB allocated), {:.0} B per message",
        o.dir.display(),
        len as f64 / GIB,
        alloc as f64 / GIB,
        // Every message the store holds, the ones of earlier fills too.
        len as f64 / (first_msg_id - 1 + stored).max(1) as f64,
    );
    Ok(())
}

//! Appends N messages of S bytes to the segment log the way the commit thread will: one record
//! per commit group of G messages, with or without an fdatasync per record. Prints this process's
//! CPU time (user + system, from /proc/self/stat) per message and the payload rate in MB/s. The
//! kernel's writeback of the page cache runs outside the process and is not counted.
//!
//!     cargo run --release -p ringchat-backend --example log_append -- N S G sync|nosync [DIR]
//!
//! DIR (default ./log_append-data-PID) must not exist; it is removed at the end.
//!
//! Measured on the project's 2-vCPU machine (ext4 on a virtual disk), release build, while another
//! developer's builds kept the load average near 5 (so the figures vary from run to run):
//!
//! | N | S | G | sync | CPU µs / message | MB/s | wall |
//! |---|---|---|---|---|---|---|
//! | 3,000,000 | 120 | 64 | none | median 0.155 (user 0.01, system 0.145); 0.12-0.20 in 11 of 12 runs, one 0.43 | 330-510 | 0.7-1.1 s |
//! | 100,000 | 120 | 64 | per record | 2.0-2.1 in 3 of 6 runs, 1.4 once, 2.8 twice; all system | median 6 (2.4-18) | median 2.0 s (0.7-5.0) |
//!
//! Without sync nearly all of it is the kernel's buffered write: `dd` writing the same 46,875
//! blocks of 7,680 bytes meanwhile took 0.11-0.24 µs of system CPU per message. (The
//! store-layouts experiment measured 0.04 µs for a raw append; under this load not even `dd`
//! comes near that, so compare runs made side by side.) With a sync per 64-message record, each
//! fdatasync costs ~130 µs of CPU and ~1.3 ms of wall time (0.4-3 ms).

// The log is crate-private in the backend; the example compiles the same source.
#[path = "../src/store/log/mod.rs"]
mod log;

use std::path::PathBuf;
use std::time::Instant;

use log::{LogOptions, SegmentLog};

/// Clock ticks per second of /proc's times (USER_HZ, fixed at 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User and system CPU seconds of this process so far.
fn cpu_s() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which ends with the last ')'): state is field 3, so utime
    // (field 14) and stime (field 15) are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    let seconds = |i: usize| fields[i].parse::<u64>().expect("a tick count") as f64 / TICKS_PER_S;
    (seconds(11), seconds(12))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("usage: log_append N S G sync|nosync [DIR] ({name})"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let messages: usize = arg(&args, 1, "N");
    let message_bytes: usize = arg(&args, 2, "S");
    let group: usize = arg(&args, 3, "G");
    let sync = match args.get(4).map(String::as_str) {
        Some("sync") => true,
        Some("nosync") => false,
        _ => return Err("usage: log_append N S G sync|nosync [DIR]".into()),
    };
    let dir = args
        .get(5)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("log_append-data-{}", std::process::id())));
    if dir.exists() {
        return Err(format!("{} exists", dir.display()).into());
    }
    if message_bytes < 8 {
        return Err("S must be at least 8 (each message starts with its number)".into());
    }
    let group_bytes = u32::try_from(group * message_bytes)?;
    let options = LogOptions {
        segment_bytes_max: 64 << 20,
        record_bytes_max: group_bytes.max(1 << 20),
    };
    let (mut log, _) = SegmentLog::open(&dir, options)?;

    // Each message differs a little, as the commit thread's encoded messages would.
    let message: Vec<u8> = (0..message_bytes).map(|i| i as u8).collect();
    let mut payload = Vec::with_capacity(group_bytes as usize);
    let (cpu0, t0) = (cpu_s(), Instant::now());
    let mut records = 0u64;
    for first in (0..messages).step_by(group) {
        payload.clear();
        for m in first..messages.min(first + group) {
            payload.extend_from_slice(&(m as u64).to_le_bytes());
            payload.extend_from_slice(&message[8..]);
        }
        log.append(&payload)?;
        if sync {
            log.sync()?;
        }
        records += 1;
    }
    let ((user1, sys1), wall) = (cpu_s(), t0.elapsed().as_secs_f64());
    let (user, sys) = (user1 - cpu0.0, sys1 - cpu0.1);
    let t_final = Instant::now();
    log.sync()?;
    let final_sync = t_final.elapsed().as_secs_f64();
    drop(log);
    std::fs::remove_dir_all(&dir)?;

    let mb = (messages * message_bytes) as f64 / 1e6;
    let per_message_us = |s: f64| s * 1e6 / messages as f64;
    println!(
        "{messages} messages of {message_bytes} B in {records} records of {group} ({}): \
         {:.3} us CPU/message (user {:.3}, system {:.3}), {:.1} MB/s, wall {wall:.2} s \
         (then a final sync took {final_sync:.2} s)",
        if sync { "sync per record" } else { "no sync" },
        per_message_us(user + sys),
        per_message_us(user),
        per_message_us(sys),
        mb / wall,
    );
    Ok(())
}

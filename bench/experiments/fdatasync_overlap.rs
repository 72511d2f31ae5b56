//! Does a second fdatasync in flight shorten the tail of group commit? (docs/BENCHMARKS.md,
//! "Overlapping fdatasyncs, tried outside the server".) Paced appends of 128 B at RATE a second
//! into a preallocated file; a record counts as acknowledged when an fdatasync begun after its
//! write returns. SYNCERS threads sync at once: 1 is today's group commit.
//!
//!     rustc -O --edition 2021 -o /tmp/fdatasync_overlap bench/experiments/fdatasync_overlap.rs
//!     /tmp/fdatasync_overlap SYNCERS RATE SECONDS FILE    # e.g. 2 10000 4 /var/tmp/overlap.dat
//!
//! Bounded: RATE x SECONDS records; the file is removed at the end.
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct State {
    written: u64,
    times: Vec<Instant>,
    synced_upto: u64,
    lat: Vec<u64>,
    done: bool,
    inflight: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let syncers: usize = args[1].parse().unwrap();
    let rate: u64 = args[2].parse().unwrap();
    let secs: u64 = args[3].parse().unwrap();
    let path = args[4].as_str();
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let total = rate * secs;
    let size = 128u64;
    // preallocate with real blocks
    {
        let mut w = &f;
        let buf = vec![1u8; 1 << 20];
        let mut n = 0;
        while n < total * size + (1 << 20) {
            w.write_all(&buf).unwrap();
            n += 1 << 20;
        }
        f.sync_all().unwrap();
    }
    let f = Arc::new(f);
    let st = Arc::new((
        Mutex::new(State {
            written: 0,
            times: Vec::with_capacity(total as usize),
            synced_upto: 0,
            lat: Vec::new(),
            done: false,
            inflight: 0,
        }),
        Condvar::new(),
    ));
    let mut hs = vec![];
    for _ in 0..syncers {
        let (f, st) = (f.clone(), st.clone());
        hs.push(std::thread::spawn(move || loop {
            let upto;
            {
                let (m, c) = &*st;
                let mut s = m.lock().unwrap();
                // wait for something not yet covered by a sync in flight or done
                loop {
                    if s.done && s.synced_upto >= s.written {
                        return;
                    }
                    // start a sync if there are writes newer than what's being synced
                    if s.written > s.synced_upto && s.inflight < syncers {
                        break;
                    }
                    s = c.wait_timeout(s, Duration::from_millis(5)).unwrap().0;
                }
                upto = s.written;
                s.inflight += 1;
            }
            f.sync_data().unwrap();
            let now = Instant::now();
            let (m, c) = &*st;
            let mut s = m.lock().unwrap();
            s.inflight -= 1;
            if upto > s.synced_upto {
                for i in s.synced_upto..upto {
                    let t = s.times[i as usize];
                    s.lat.push(now.duration_since(t).as_micros() as u64);
                }
                s.synced_upto = upto;
            }
            c.notify_all();
        }));
    }
    let start = Instant::now();
    let buf = vec![7u8; size as usize];
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        while Instant::now() < due {
            std::hint::spin_loop();
            if due.saturating_duration_since(Instant::now()) > Duration::from_micros(60) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        f.write_at(&buf, i * size).unwrap();
        let (m, c) = &*st;
        let mut s = m.lock().unwrap();
        s.times.push(due);
        s.written += 1;
        c.notify_one();
    }
    {
        let (m, c) = &*st;
        m.lock().unwrap().done = true;
        c.notify_all();
    }
    for h in hs {
        h.join().unwrap();
    }
    let (m, _) = &*st;
    let mut s = m.lock().unwrap();
    s.lat.sort();
    let p = |q: f64| s.lat[((s.lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "syncers={syncers} n={} p50={}us p99={}us p999={}us max={}us",
        s.lat.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0)
    );
    let _ = std::fs::remove_file(path);
}
